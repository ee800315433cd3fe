"""The EWS transports against the EWS test server, unmodified exchangelib in between:
connection and TLS settings, authentication and impersonation, cursors, headers first,
categories and the Undeliverable folder, sending with the Sent Items reconcile, and how
exchangelib's errors reach the engine."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from typing import Any

import attrs
import pytest
import requests.adapters
from exchangelib.protocol import BaseProtocol, Protocol  # type: ignore[import-untyped]

from serversync.adapters.transports import (
    TRACKED_CATEGORY,
    UNDELIVERABLE_CATEGORY,
    EwsIncomingTransport,
    EwsOutgoingTransport,
    EwsTransport,
)
from serversync.adapters.transports._ews_connection import READ_CHUNK, ews_url
from serversync.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionFailedError,
    DeliveryUncertainError,
    ErrorScope,
    MessageRejectedError,
    OperationTimeoutError,
    ServerBusyError,
    TransientError,
)
from serversync.mime import parse_headers
from serversync.model import (
    INBOX,
    SENT,
    AuthenticationProtocol,
    CredentialKind,
    Credentials,
    EmailServerProfile,
    EwsCheckpoint,
    ImapCheckpoint,
    Mailbox,
    MessageId,
    OutgoingMessage,
    RemoteMark,
    Secret,
    ServerEndpoint,
    ServerType,
    TlsMode,
)
from serversync.ports import (
    IncomingMailSession,
    IncomingMailTransport,
    OutgoingMailSession,
    OutgoingMailTransport,
)
from serversync.settings import Timeouts
from serversync.testing import a_mailbox, a_profile, an_email
from serversync.testing.ews import (
    Delay,
    DropConnection,
    EwsFault,
    EwsTestServer,
    HttpError,
    ServerBusy,
)
from tests.integration.pki import Pki, make_pki

pytestmark = pytest.mark.integration

ALICE = "alice@contoso.example"
BOB = "bob@contoso.example"
SERVICE = "svc-crm@contoso.example"
PASSWORD = "correct horse"
CUSTOMER = "customer@fabrikam.example"
FAST = Timeouts(
    connect=timedelta(seconds=5),
    command=timedelta(seconds=5),
    fetch=timedelta(seconds=5),
    send=timedelta(seconds=5),
    close=timedelta(seconds=2),
)


def _incoming_is_the_port(transport: EwsIncomingTransport) -> IncomingMailTransport:
    return transport  # mypy compares the adapter with its port structurally


def _outgoing_is_the_port(transport: EwsOutgoingTransport) -> OutgoingMailTransport:
    return transport


@pytest.fixture
async def ews() -> AsyncIterator[EwsTestServer]:
    async with EwsTestServer() as server:
        server.add_mailbox(ALICE, password=PASSWORD, display_name="Alice Contoso")
        server.add_mailbox(BOB, password=PASSWORD)
        yield server


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("ews-transport-pki"))


@pytest.fixture
async def https(pki: Pki) -> AsyncIterator[EwsTestServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    async with EwsTestServer(tls=context) as server:
        server.add_mailbox(ALICE, password=PASSWORD)
        yield server


def profile_for(server: EwsTestServer, **overrides: Any) -> EmailServerProfile:
    endpoint = overrides.pop("endpoint", ServerEndpoint(host=server.url, tls=TlsMode.NONE))
    return a_profile(server_type=ServerType.EXCHANGE_SERVER, incoming=endpoint, **overrides)


def password(user: str = ALICE, secret: str = PASSWORD) -> Credentials:
    return Credentials(username=user, secret=Secret(secret))


def token(value: str, user: str = ALICE) -> Credentials:
    return Credentials(username=user, secret=Secret(value), kind=CredentialKind.OAUTH2_ACCESS_TOKEN)


@attrs.define
class Reader:
    """Opens incoming sessions on one server with one transport."""

    server: EwsTestServer
    transport: EwsTransport = attrs.Factory(lambda: EwsTransport(timeouts=FAST))

    def open(
        self,
        mailbox: Mailbox | None = None,
        credentials: Credentials | None = None,
        **profile: Any,
    ) -> AbstractAsyncContextManager[IncomingMailSession]:
        return self.transport.incoming.open(
            mailbox or a_mailbox(ALICE),
            profile_for(self.server, **profile),
            credentials or password(),
        )

    @asynccontextmanager
    async def sender(
        self, credentials: Credentials | None = None, **profile: Any
    ) -> AsyncIterator[OutgoingMailSession]:
        opener = self.transport.outgoing.open(
            a_mailbox(ALICE), profile_for(self.server, **profile), credentials or password()
        )
        async with opener as session:
            yield session


@pytest.fixture
def reader(ews: EwsTestServer) -> Reader:
    return Reader(ews)


def deliver(server: EwsTestServer, n: int, *, folder: str = "inbox", size: int = 0) -> str:
    """Deliver message n; returns its Message-ID."""
    mid = f"<ews-{n}@fabrikam.example>"
    body = f"body {n}\n" + "x" * size
    server.deliver(
        ALICE,
        an_email(sender=CUSTOMER, to=[ALICE], subject=f"message {n}", body=body, message_id=mid),
        folder=folder,
    )
    return mid


def outgoing(
    n: int, *, to: tuple[str, ...] = ("jane@fabrikam.example",), **kw: Any
) -> OutgoingMessage:
    mid = MessageId(f"<out-{n}@contoso.example>")
    data = an_email(sender=ALICE, to=to, subject=f"out {n}", message_id=mid, **kw)
    return OutgoingMessage(message_id=mid, sender=ALICE, recipients=to, data=data)


# -- the endpoint ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        (ServerEndpoint(host="mail.contoso.com"), "https://mail.contoso.com/EWS/Exchange.asmx"),
        (
            ServerEndpoint(host="mail.contoso.com", port=8443),
            "https://mail.contoso.com:8443/EWS/Exchange.asmx",
        ),
        (
            ServerEndpoint(host="https://mail.contoso.com/ews/exchange.asmx"),
            "https://mail.contoso.com/ews/exchange.asmx",
        ),
        (
            ServerEndpoint(host="https://mail.contoso.com"),
            "https://mail.contoso.com/EWS/Exchange.asmx",
        ),
        (
            ServerEndpoint(host="10.0.0.5/EWS/Exchange.asmx", tls=TlsMode.NONE),
            "http://10.0.0.5/EWS/Exchange.asmx",
        ),
    ],
)
def test_the_endpoint_host_is_the_ews_url_or_a_host_serving_it(
    endpoint: ServerEndpoint, url: str
) -> None:
    assert ews_url(endpoint) == url


def test_plain_http_is_refused_unless_the_profile_asks_for_it() -> None:
    with pytest.raises(ConfigurationError, match="plain HTTP"):
        ews_url(ServerEndpoint(host="http://mail.contoso.com/EWS/Exchange.asmx"))


# -- connecting, TLS and authentication -------------------------------------------------------


async def test_the_profiles_ca_file_is_trusted_for_this_connection_only(
    https: EwsTestServer, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What requests would trust on its own points elsewhere: only the profile's file counts.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.other_ca_file))
    reader = Reader(https)
    trusted = ServerEndpoint(host=https.url, ca_file=str(pki.ca_file))
    async with reader.open(endpoint=trusted) as session:
        assert next(f.id for f in await session.list_folders()) == INBOX

    untrusted = ServerEndpoint(host=https.url, ca_file=str(pki.other_ca_file))
    with pytest.raises(ConfigurationError, match="certificate"):
        async with reader.open(endpoint=untrusted):
            pass
    # Nothing global changed: exchangelib's adapter class and protocol cache are untouched.
    assert BaseProtocol.HTTP_ADAPTER_CLS is requests.adapters.HTTPAdapter
    assert not [key for key in Protocol._protocol_cache if key[0] == https.url]


async def test_a_missing_ca_file_is_a_configuration_error(reader: Reader) -> None:
    endpoint = ServerEndpoint(host=reader.server.url.replace("http:", "https:"), ca_file="/nope")
    with pytest.raises(ConfigurationError, match="CA file"):
        async with reader.open(endpoint=endpoint):
            pass


async def test_a_wrong_password_is_an_authentication_error(reader: Reader) -> None:
    with pytest.raises(AuthenticationError) as caught:
        async with reader.open(credentials=password(secret="wrong")):
            pass
    assert caught.value.server_code == "HTTP 401"
    assert "wrong" not in str(caught.value)


async def test_an_oauth_token_is_a_bearer_token_and_a_revoked_one_is_refused(
    https: EwsTestServer, pki: Pki
) -> None:
    reader = Reader(https)
    endpoint = ServerEndpoint(host=https.url, ca_file=str(pki.ca_file))
    issued = https.issue_token(ALICE)
    async with reader.open(credentials=token(issued), endpoint=endpoint) as session:
        await session.list_new(INBOX, None, limit=10)
    assert {r.login for r in https.requests} == {ALICE}

    https.revoke_token(issued)
    with pytest.raises(AuthenticationError):
        async with reader.open(credentials=token(issued), endpoint=endpoint):
            pass


async def test_an_oauth_token_is_never_sent_over_plain_http(reader: Reader) -> None:
    with pytest.raises(ConfigurationError, match="HTTPS"):
        async with reader.open(credentials=token(reader.server.issue_token(ALICE))):
            pass


async def test_a_password_for_an_oauth_profile_is_a_configuration_error(reader: Reader) -> None:
    with pytest.raises(ConfigurationError, match="access token"):
        async with reader.open(incoming_authentication=AuthenticationProtocol.OAUTH):
            pass


async def test_impersonation_reads_each_mailbox_as_its_owner(reader: Reader) -> None:
    server = reader.server
    server.add_user(SERVICE, password=PASSWORD, can_impersonate=True)
    deliver(server, 1)

    async with reader.open(
        credentials=password(SERVICE), incoming_use_impersonation=True
    ) as session:
        batch = await session.list_new(INBOX, None, limit=10)
    assert len(batch.refs) == 1
    assert {(r.login, r.impersonated) for r in server.requests} == {(SERVICE, ALICE)}


async def test_impersonation_without_the_right_is_a_configuration_error(reader: Reader) -> None:
    reader.server.add_user(SERVICE, password=PASSWORD, can_impersonate=False)
    with pytest.raises(ConfigurationError) as caught:
        async with reader.open(credentials=password(SERVICE), incoming_use_impersonation=True):
            pass
    assert caught.value.server_code == "ErrorImpersonateUserDenied"
    assert not caught.value.transient


async def test_a_delegate_without_access_is_a_configuration_error(reader: Reader) -> None:
    with pytest.raises(ConfigurationError) as caught:
        async with reader.open(mailbox=a_mailbox(BOB)):  # alice's password, bob's mailbox
            pass
    assert caught.value.server_code == "ErrorAccessDenied"


async def test_nothing_listening_is_a_transient_connection_failure(reader: Reader) -> None:
    closed = ServerEndpoint(host="http://127.0.0.1:9/EWS/Exchange.asmx", tls=TlsMode.NONE)
    with pytest.raises(ConnectionFailedError):
        async with reader.open(endpoint=closed):
            pass


async def test_a_wrong_path_is_a_configuration_error(reader: Reader) -> None:
    wrong = ServerEndpoint(host=reader.server.base_url + "/owa/", tls=TlsMode.NONE)
    with pytest.raises(ConfigurationError, match="HTTP 404"):
        async with reader.open(endpoint=wrong):
            pass


# -- throttling, drops and deadlines ----------------------------------------------------------


async def test_server_busy_is_retried_by_the_engine_not_by_exchangelib(reader: Reader) -> None:
    server = reader.server
    deliver(server, 1)
    async with reader.open() as session:
        server.inject(ServerBusy(back_off_ms=2500), operation="SyncFolderItems")
        with pytest.raises(ServerBusyError) as caught:
            await session.list_new(INBOX, None, limit=10)
        busy = caught.value
        assert busy.retry_after == timedelta(milliseconds=2500), "Exchange's BackOffMilliseconds"
        assert busy.server_code == "ErrorServerBusy"
        refused = [r for r in server.requests if r.error == "ErrorServerBusy"]
        assert len(refused) == 1, "exchangelib must not wait and retry on its own"
        # The session is still good: the engine may go on with it.
        assert len((await session.list_new(INBOX, None, limit=10)).refs) == 1


async def test_http_503_from_a_front_end_is_server_busy(reader: Reader) -> None:
    async with reader.open() as session:
        reader.server.inject(HttpError(503), operation="SyncFolderItems")
        with pytest.raises(ServerBusyError):
            await session.list_new(INBOX, None, limit=10)


async def test_a_dropped_connection_is_transient(reader: Reader) -> None:
    async with reader.open() as session:
        reader.server.inject(DropConnection(), operation="SyncFolderItems")
        with pytest.raises(ConnectionFailedError):
            await session.list_new(INBOX, None, limit=10)


async def test_an_unknown_server_error_is_transient(reader: Reader) -> None:
    async with reader.open() as session:
        reader.server.inject(EwsFault("ErrorSomethingNew"), operation="FindFolder")
        with pytest.raises(TransientError) as caught:
            await session.list_folders()
    assert caught.value.server_code == "ErrorSomethingNew"


def ews_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("serversync-ews")]


async def test_a_session_runs_its_calls_in_one_thread_that_ends_with_it(reader: Reader) -> None:
    deliver(reader.server, 1)
    async with reader.open() as one, reader.open() as two:
        await one.list_new(INBOX, None, limit=10)
        await two.list_new(INBOX, None, limit=10)
        assert len(ews_threads()) == 2
    for thread in ews_threads():
        thread.join(timeout=5)
    assert ews_threads() == []


async def test_a_call_past_its_deadline_times_out_and_ends_the_session(ews: EwsTestServer) -> None:
    quick = attrs.evolve(FAST, command=timedelta(seconds=0.5))
    reader = Reader(ews, EwsTransport(timeouts=quick))
    async with reader.open() as session:
        ews.inject(Delay(2), operation="SyncFolderItems")
        started = time.monotonic()
        with pytest.raises(OperationTimeoutError):
            await session.list_new(INBOX, None, limit=10)
        assert time.monotonic() - started < 1.5, "the deadline, not the server, ends the wait"
        with pytest.raises(ConnectionFailedError, match="interrupted"):
            await session.list_folders()
    # The stray call ends with its socket timeout (a second past the deadline), the thread with it.
    for thread in ews_threads():
        thread.join(timeout=5)
    assert ews_threads() == []


# -- listing and cursors ------------------------------------------------------------------------


async def test_folders_are_listed_by_id_with_the_inbox_as_inbox(reader: Reader) -> None:
    server = reader.server
    projects = server.create_folder(ALICE, "Projects")
    nested = server.create_folder(ALICE, "Contoso", parent=projects.id)
    server.create_folder(ALICE, "Archive", parent="msgfolderroot")
    server.create_folder(ALICE, "Birthdays", parent="calendar", folder_class="IPF.Appointment")

    async with reader.open() as session:
        folders = {f.id: f for f in await session.list_folders()}
        server.rename_folder(projects.id, "Projects 2026")
        renamed = {f.id: f for f in await session.list_folders()}

    assert folders[INBOX].parent_id is None
    assert folders[projects.id].parent_id == INBOX
    assert folders[nested.id].parent_id == projects.id
    assert [f.name for f in folders.values() if f.special_use == SENT] == ["Sent Items"]
    assert "Birthdays" not in {f.name for f in folders.values()}, "mail folders only"
    assert "Archive" in {f.name for f in folders.values()}
    assert renamed[projects.id].name == "Projects 2026", "a renamed folder keeps its id"


async def test_a_tracked_folder_is_read_by_its_id(reader: Reader) -> None:
    server = reader.server
    projects = server.create_folder(ALICE, "Projects")
    deliver(server, 1)
    mid = deliver(server, 2, folder=projects.id)
    async with reader.open() as session:
        batch = await session.list_new(projects.id, None, limit=10)
        headers = await session.fetch_headers(batch.refs)
    assert [r.folder for r in batch.refs] == [projects.id]
    assert parse_headers(headers[0].data).message_id == mid


async def test_a_lost_sync_state_lists_the_folder_again_with_reset(reader: Reader) -> None:
    server = reader.server
    deliver(server, 1)
    async with reader.open() as session:
        first = await session.list_new(INBOX, None, limit=10)
        server.reset_sync_states(ALICE)
        deliver(server, 2)
        again = await session.list_new(INBOX, first.end, limit=10)
    assert not first.reset
    assert again.reset
    assert len(again.refs) == 2, "listed from the start; dedupe keeps it free of duplicates"


async def test_a_cursor_from_another_transport_is_refused(reader: Reader) -> None:
    async with reader.open() as session:
        with pytest.raises(ConfigurationError, match="EWS cursor"):
            await session.list_new(INBOX, ImapCheckpoint(uidvalidity=1, last_uid=1), limit=1)


async def test_a_cursor_in_mid_answer_skips_what_was_done_even_among_other_changes(
    reader: Reader,
) -> None:
    server = reader.server
    for n in range(4):
        deliver(server, n)
    async with reader.open() as session:
        batch = await session.list_new(INBOX, None, limit=10)
        server.set_properties(batch.refs[0].remote_id, IsRead="true")
        server.delete_item(batch.refs[3].remote_id)
        deliver(server, 4)
        resumed = await session.list_new(INBOX, batch.checkpoints[1], limit=10)
    mid_answer = batch.checkpoints[1]
    assert isinstance(mid_answer, EwsCheckpoint)
    assert mid_answer != batch.end
    assert len(resumed.refs) == 2, "message 2 and the new message 4; 3 was deleted"
    assert resumed.refs[0].remote_id == batch.refs[2].remote_id


async def test_changes_that_are_no_new_mail_are_read_past(reader: Reader) -> None:
    server = reader.server
    for n in range(5):
        deliver(server, n)
    async with reader.open() as session:
        first = await session.list_new(INBOX, None, limit=10)
        for ref in first.refs:
            server.set_properties(ref.remote_id, IsRead="true", Subject="edited")
        mid = deliver(server, 5)
        server.clear_requests()
        batch = await session.list_new(INBOX, first.end, limit=1)
        (raw,) = await session.fetch_headers(batch.refs)
    assert parse_headers(raw.data).message_id == mid
    # One change per answer (limit 1): five updates, then the new message.
    assert server.operations().count("SyncFolderItems") == 6
    assert not batch.more


# -- headers first ----------------------------------------------------------------------------


async def test_headers_come_from_item_properties_and_mime_only_when_asked(reader: Reader) -> None:
    server = reader.server
    mids = [deliver(server, n, size=50_000) for n in range(3)]
    async with reader.open() as session:
        batch = await session.list_new(INBOX, None, limit=10)
        server.clear_requests()
        headers = await session.fetch_headers(batch.refs)
        header_requests = list(server.requests)
        whole = await session.fetch_message(batch.refs[2])

    assert [parse_headers(h.data).message_id for h in headers] == mids
    assert all(b"xxxx" not in h.data for h in headers), "no body in a header block"
    assert [r.operation for r in header_requests] == ["GetItem"], "one request for the batch"
    assert "item:MimeContent" not in header_requests[0].field_uris
    assert b"body 2" in whole.data, "the whole message, body included"
    assert len(whole.data) > 50_000
    assert batch.refs[0].size is not None
    assert batch.refs[0].received_at is not None


async def test_a_message_without_internet_headers_gets_them_from_its_properties(
    reader: Reader,
) -> None:
    server = reader.server
    mid = deliver(server, 1)
    item = server.items(ALICE)[0]
    # Like a copy in Sent Items: properties only, no transport headers.
    server.set_properties(item.id, InternetMessageHeaders=None)
    async with reader.open() as session:
        batch = await session.list_new(INBOX, None, limit=10)
        (raw,) = await session.fetch_headers(batch.refs)
    parsed = parse_headers(raw.data)
    assert parsed.message_id == mid
    assert parsed.subject == "message 1"
    assert parsed.sender is not None
    assert parsed.sender.address == CUSTOMER
    assert [a.address for a in parsed.to] == [ALICE]
    assert parsed.date is not None


async def test_a_message_gone_since_it_was_listed(reader: Reader) -> None:
    server = reader.server
    deliver(server, 1)
    deliver(server, 2)
    async with reader.open() as session:
        batch = await session.list_new(INBOX, None, limit=10)
        server.delete_item(batch.refs[0].remote_id)
        headers = await session.fetch_headers(batch.refs)
        with pytest.raises(MessageRejectedError) as caught:
            await session.fetch_message(batch.refs[0])
        await session.mark(batch.refs, RemoteMark.TRACKED)  # the gone one is skipped
    assert headers[0].data == b"", "the engine records the gone one as unreadable"
    assert headers[1].data
    assert caught.value.scope is ErrorScope.ITEM
    assert caught.value.server_code == "ErrorItemNotFound"
    assert server.items(ALICE)[0].categories == (TRACKED_CATEGORY,)


# -- marking ----------------------------------------------------------------------------------


async def test_marking_adds_a_category_and_keeps_the_others(reader: Reader) -> None:
    server = reader.server
    deliver(server, 1)
    item = server.items(ALICE)[0]
    server.set_properties(item.id, Categories=None)
    async with reader.open() as session:
        batch = await session.list_new(INBOX, None, limit=10)
        await session.mark(batch.refs, RemoteMark.TRACKED)
        await session.mark(batch.refs, RemoteMark.TRACKED)
        server.clear_requests()
    assert server.items(ALICE)[0].categories == (TRACKED_CATEGORY,)


async def test_marking_keeps_a_users_own_categories(reader: Reader) -> None:
    server = reader.server
    deliver(server, 1)
    async with reader.open() as session:
        batch = await session.list_new(INBOX, None, limit=10)
        await session.mark(batch.refs, RemoteMark.UNDELIVERABLE)
        await session.mark(batch.refs, RemoteMark.TRACKED)
    item = server.items(ALICE)[0]
    assert item.categories == (UNDELIVERABLE_CATEGORY, TRACKED_CATEGORY)
    assert item.is_read is False, "marking does not read a message"


async def test_a_message_deleted_while_it_is_tagged_does_not_stop_the_others(
    reader: Reader,
) -> None:
    server = reader.server
    deliver(server, 1)
    deliver(server, 2)
    async with reader.open() as session:
        batch = await session.list_new(INBOX, None, limit=10)
        # Between reading the categories and writing them, the user deletes message 1.
        server.inject(Delay(0.3), operation="UpdateItem")
        tagging = asyncio.create_task(session.mark(batch.refs, RemoteMark.TRACKED))
        for _ in range(100):
            if "UpdateItem" in server.operations() or server.pending_faults == 0:
                break
            await asyncio.sleep(0.01)
        server.delete_item(batch.refs[0].remote_id)
        await tagging
    assert [(i.subject, i.categories) for i in server.items(ALICE)] == [
        ("message 2", (TRACKED_CATEGORY,))
    ]


async def test_undeliverable_mail_moves_to_the_undeliverable_folder_when_asked(
    reader: Reader,
) -> None:
    server = reader.server
    for n in range(3):
        deliver(server, n)
    async with reader.open(move_undelivered_emails=True) as session:
        batch = await session.list_new(INBOX, None, limit=10)
        await session.mark(batch.refs[:1], RemoteMark.UNDELIVERABLE)
        await session.mark(batch.refs[1:2], RemoteMark.UNDELIVERABLE)
        await session.mark(batch.refs[2:], RemoteMark.TRACKED)
    undeliverable = [f for f in server.folders(ALICE) if f.name == "Undeliverable"]
    assert len(undeliverable) == 1, "created once, under the Inbox"
    assert undeliverable[0].parent_id == server.folder(ALICE, "inbox").id
    moved = server.items(ALICE, undeliverable[0].id)
    assert [m.subject for m in moved] == ["message 0", "message 1"]
    assert all(m.categories == (UNDELIVERABLE_CATEGORY,) for m in moved)
    assert [m.subject for m in server.items(ALICE)] == ["message 2"], "tracked mail stays"


async def test_undeliverable_mail_goes_to_the_mailboxs_own_folder_when_it_names_one(
    reader: Reader,
) -> None:
    server = reader.server
    own = server.create_folder(ALICE, "Could not track", parent="msgfolderroot")
    deliver(server, 1)
    mailbox = a_mailbox(ALICE, undeliverable_folder=own.id)
    async with reader.open(mailbox=mailbox, move_undelivered_emails=True) as session:
        batch = await session.list_new(INBOX, None, limit=10)
        await session.mark(batch.refs, RemoteMark.UNDELIVERABLE)
    assert [m.subject for m in server.items(ALICE, own.id)] == ["message 1"]


async def test_undeliverable_mail_stays_put_unless_the_profile_asks(reader: Reader) -> None:
    deliver(reader.server, 1)
    async with reader.open() as session:
        batch = await session.list_new(INBOX, None, limit=10)
        await session.mark(batch.refs, RemoteMark.UNDELIVERABLE)
    assert [m.categories for m in reader.server.items(ALICE)] == [(UNDELIVERABLE_CATEGORY,)]


# -- exchangelib's read chunk size --------------------------------------------------------------


async def test_responses_are_read_in_large_chunks_not_byte_by_byte(reader: Reader) -> None:
    server = reader.server
    deliver(server, 1, size=2_000_000)
    stats = reader.transport.stats
    async with reader.open() as session:
        batch = await session.list_new(INBOX, None, limit=10)
        before_bytes, before_chunks = stats.bytes_received, stats.read_chunks
        whole = await session.fetch_message(batch.refs[0])
    response_bytes = stats.bytes_received - before_bytes
    chunks = stats.read_chunks - before_chunks
    assert len(whole.data) > 2_000_000
    assert response_bytes > len(whole.data), "the base64 MIME inside its SOAP answer"
    # requests' default chunk size is 1 byte: about 2.7 million chunks for this answer.
    assert chunks <= response_bytes // READ_CHUNK + 1, (response_bytes, chunks)


# -- sending ----------------------------------------------------------------------------------


async def test_a_message_is_sent_with_its_mime_and_a_copy_kept_in_sent_items(
    reader: Reader,
) -> None:
    server = reader.server
    message = outgoing(1, headers=[("Importance", "high")])
    async with reader.sender() as session:
        receipt = await session.send(message)
    (sent,) = server.outbox
    assert sent.disposition == "SendAndSaveCopy"
    assert sent.message_id == message.message_id
    assert parse_headers(sent.mime).message_id == message.message_id
    (copy,) = server.items(ALICE, "sentitems")
    assert copy.message_id == message.message_id
    assert copy.properties["Importance"] == "High", "the MIME's importance is kept"
    assert receipt.message_id == message.message_id
    assert receipt.refused == ()


async def test_envelope_recipients_missing_from_the_mime_go_as_bcc(reader: Reader) -> None:
    server = reader.server
    message = attrs.evolve(
        outgoing(1), recipients=("jane@fabrikam.example", "audit@contoso.example")
    )
    async with reader.sender() as session:
        await session.send(message)
    (sent,) = server.outbox
    assert set(sent.recipients) == {"jane@fabrikam.example", "audit@contoso.example"}
    assert b"audit@contoso.example" not in sent.mime.split(b"\n\n")[0], "Bcc stays hidden"


async def test_a_message_already_in_sent_items_is_not_sent_again(reader: Reader) -> None:
    server = reader.server
    message = outgoing(1)
    async with reader.sender() as session:
        first = await session.send(message)
    # A crash before the engine recorded the send: the next attempt finds the copy.
    async with reader.sender() as session:
        server.clear_requests()
        second = await session.send(message)
    assert len(server.outbox) == 1, "sent once"
    assert "CreateItem" not in server.operations()
    (copy,) = server.items(ALICE, "sentitems")
    assert second.remote_id == copy.id
    assert second.message_id == first.message_id
    assert reader.transport.stats.sends_reconciled == 1


async def test_without_the_reconcile_a_message_is_sent_again(ews: EwsTestServer) -> None:
    reader = Reader(ews, EwsTransport(timeouts=FAST, reconcile_sent_items=False))
    async with reader.sender() as session:
        await session.send(outgoing(1))
        await session.send(outgoing(1))
    assert len(ews.outbox) == 2
    assert "FindItem" not in ews.operations()


async def test_a_send_cut_off_is_retryable_with_the_reconcile_and_uncertain_without(
    ews: EwsTestServer,
) -> None:
    quick = attrs.evolve(FAST, send=timedelta(seconds=0.5))
    for reconcile, expected in ((True, OperationTimeoutError), (False, DeliveryUncertainError)):
        reader = Reader(ews, EwsTransport(timeouts=quick, reconcile_sent_items=reconcile))
        async with reader.sender() as session:
            ews.inject(Delay(1), operation="CreateItem")
            with pytest.raises(TransientError) as caught:
                await session.send(outgoing(1 if reconcile else 2))
        assert type(caught.value) is expected, reconcile


async def test_a_refused_message_fails_alone(reader: Reader) -> None:
    server = reader.server
    async with reader.sender() as session:
        server.inject(EwsFault("ErrorMessageSizeExceeded"), operation="CreateItem")
        with pytest.raises(MessageRejectedError) as caught:
            await session.send(outgoing(1))
        await session.send(outgoing(2))
    assert caught.value.scope is ErrorScope.ITEM
    assert caught.value.server_code == "ErrorMessageSizeExceeded"
    assert [m.message_id for m in server.outbox] == ["<out-2@contoso.example>"]


async def test_sending_is_impersonated_when_the_profile_says_so(reader: Reader) -> None:
    server = reader.server
    server.add_user(SERVICE, password=PASSWORD, can_impersonate=True)
    async with reader.sender(password(SERVICE), outgoing_use_impersonation=True) as session:
        await session.send(outgoing(1))
    assert [m.mailbox for m in server.outbox] == [ALICE]
    assert {r.impersonated for r in server.requests} == {ALICE}
