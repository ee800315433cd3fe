"""What the IMAP transport does beyond the contract: XOAUTH2, TLS verification, folders,
cursor edge cases, vanished messages, batching and failures mapped to serversync errors."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta

import attrs
import pytest

from serversync.adapters.transports import ImapTransport
from serversync.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionFailedError,
    MessageRejectedError,
    OperationTimeoutError,
    ServerBusyError,
)
from serversync.model import (
    INBOX,
    CredentialKind,
    Credentials,
    EmailServerProfile,
    ImapCheckpoint,
    Pop3Checkpoint,
    RawMessage,
    RemoteMark,
    Secret,
    ServerEndpoint,
    ServerType,
    TlsMode,
)
from serversync.ports import BatchMessageSession
from serversync.settings import Timeouts
from serversync.testing import a_mailbox, a_profile, an_email
from tests.integration.dovecot import Dovecot, DovecotUser, TokenEndpoint
from tests.integration.imap_fake import SELECTED, fake_imap

pytestmark = pytest.mark.integration

FAST = Timeouts(
    connect=timedelta(seconds=2),
    command=timedelta(seconds=0.5),
    fetch=timedelta(seconds=2),
    close=timedelta(seconds=1),
)


def profile(endpoint: ServerEndpoint) -> EmailServerProfile:
    return a_profile(server_type=ServerType.IMAP_SMTP, incoming=endpoint)


def password(user: DovecotUser) -> Credentials:
    return Credentials(username=user.address, secret=Secret(user.password))


def mail(n: int, tag: str = "t") -> bytes:
    return an_email(subject=f"{tag} {n}", message_id=f"<{tag}-{n}@fabrikam.example>")


async def test_an_oauth2_access_token_logs_in_with_xoauth2(
    dovecot: Dovecot, oauth_tokens: TokenEndpoint
) -> None:
    user = dovecot.add_user()
    dovecot.append(user, mail(1))
    token = oauth_tokens.issue(user.address)
    credentials = Credentials(
        username=user.address, secret=Secret(token), kind=CredentialKind.OAUTH2_ACCESS_TOKEN
    )
    transport = ImapTransport()
    endpoint = dovecot.endpoint("imap", TlsMode.IMPLICIT)
    async with transport.open(a_mailbox(user.address), profile(endpoint), credentials) as s:
        batch = await s.list_new(INBOX, None, limit=10)
    assert len(batch.refs) == 1
    assert transport.stats.commands["AUTHENTICATE"] == 1

    oauth_tokens.revoke(token)
    started = time.monotonic()
    with pytest.raises(AuthenticationError) as refused:
        async with transport.open(a_mailbox(user.address), profile(endpoint), credentials):
            pass
    # aioimaplib alone would hang on the server's error challenge until its own timeout.
    assert time.monotonic() - started < 3
    assert refused.value.server_code == "NO [AUTHENTICATIONFAILED]"
    assert token not in str(refused.value)


@pytest.mark.parametrize("tls", [TlsMode.IMPLICIT, TlsMode.STARTTLS])
async def test_certificate_checks_can_be_switched_off_only_explicitly(
    dovecot: Dovecot, tls: TlsMode
) -> None:
    user = dovecot.add_user()
    transport = ImapTransport(timeouts=FAST)
    untrusted = dovecot.endpoint("imap", tls, ca_file=dovecot.pki.other_ca_file)
    with pytest.raises(ConfigurationError, match="certificate is not trusted"):
        async with transport.open(a_mailbox(user.address), profile(untrusted), password(user)):
            pass
    unchecked = dovecot.endpoint(
        "imap", tls, ca_file=dovecot.pki.other_ca_file, verify_certificate=False
    )
    async with transport.open(a_mailbox(user.address), profile(unchecked), password(user)) as s:
        assert (await s.list_new(INBOX, None, limit=1)).refs == ()


async def test_folders_are_listed_by_wire_name_with_readable_names(dovecot: Dovecot) -> None:
    user = dovecot.add_user()
    with dovecot.imap(user) as client:
        assert client.create('"Caf&AOk- cr&AOg-me"')[0] == "OK"
        assert client.create("Projects/2026")[0] == "OK"
    transport = ImapTransport()
    endpoint = dovecot.endpoint("imap", TlsMode.STARTTLS)
    async with transport.open(a_mailbox(user.address), profile(endpoint), password(user)) as s:
        folders = {f.id: f for f in await s.list_folders()}
    assert {INBOX, "Sent", "Trash", "Caf&AOk- cr&AOg-me", "Projects/2026"} <= set(folders)
    assert folders["Caf&AOk- cr&AOg-me"].name == "Café crème"
    assert "Projects" not in folders, "a \\Noselect hierarchy node cannot be synchronized"
    assert folders["Projects/2026"].parent_id is None
    assert folders["Sent"].special_use == "\\Sent", "RFC 6154 special use is reported"
    assert folders["Caf&AOk- cr&AOg-me"].special_use is None


async def test_a_recreated_folder_resets_the_cursor(dovecot: Dovecot) -> None:
    user = dovecot.add_user()
    with dovecot.imap(user) as client:
        client.create("Archive")
    dovecot.append(user, mail(1, "archive"), mail(2, "archive"), folder="Archive")
    transport = ImapTransport()
    endpoint = dovecot.endpoint("imap", TlsMode.STARTTLS)
    box = a_mailbox(user.address)
    async with transport.open(box, profile(endpoint), password(user)) as s:
        first = await s.list_new("Archive", None, limit=10)
    assert isinstance(first.end, ImapCheckpoint)
    assert first.end.highest_modseq is not None, "Dovecot offers CONDSTORE"

    with dovecot.imap(user) as client:
        assert client.delete("Archive")[0] == "OK"
        assert client.create("Archive")[0] == "OK"
    dovecot.append(user, mail(3, "archive"), folder="Archive")
    async with transport.open(box, profile(endpoint), password(user)) as s:
        again = await s.list_new("Archive", first.end, limit=10)
        with pytest.raises(ConfigurationError, match="IMAP cursor"):
            await s.list_new("Archive", Pop3Checkpoint(), limit=10)
        with pytest.raises(ConfigurationError, match="Nope"):
            await s.list_new("Nope", None, limit=10)
        # the session survives a refused SELECT
        assert (await s.list_new("Archive", again.end, limit=10)).refs == ()
    assert again.reset
    assert [r.remote_id for r in again.refs] == ["1"], "listed again from the start"
    assert isinstance(again.end, ImapCheckpoint)
    assert again.end.uidvalidity != first.end.uidvalidity


async def test_uid_range_to_star_never_lists_an_older_message(dovecot: Dovecot) -> None:
    user = dovecot.add_user()
    dovecot.append(user, mail(1, "star"), mail(2, "star"), mail(3, "star"))
    with dovecot.imap(user) as client:
        client.select(INBOX)
        client.uid("STORE", "2:3", "+FLAGS.SILENT", r"(\Deleted)")
        client.expunge()
    transport = ImapTransport()
    endpoint = dovecot.endpoint("imap", TlsMode.STARTTLS)
    async with transport.open(a_mailbox(user.address), profile(endpoint), password(user)) as s:
        first = await s.list_new(INBOX, None, limit=10)
        assert isinstance(first.end, ImapCheckpoint)
        cursor = ImapCheckpoint(uidvalidity=first.end.uidvalidity, last_uid=1)
        batch = await s.list_new(INBOX, cursor, limit=10)
    # UIDNEXT (4) is past the cursor, so the adapter searches "UID 2:*", which matches UID 1.
    assert transport.stats.commands["UID SEARCH"] == 2
    assert batch.refs == ()
    assert not batch.more
    assert not batch.reset


async def test_vanished_messages_and_marks(dovecot: Dovecot) -> None:
    user = dovecot.add_user()
    dovecot.append(user, mail(1, "gone"), mail(2, "gone"))
    transport = ImapTransport()
    endpoint = dovecot.endpoint("imap", TlsMode.STARTTLS)
    async with transport.open(a_mailbox(user.address), profile(endpoint), password(user)) as s:
        batch = await s.list_new(INBOX, None, limit=10)
        await s.mark(batch.refs, RemoteMark.UNDELIVERABLE)
        with dovecot.imap(user) as client:
            client.select(INBOX)
            client.uid("STORE", "1", "+FLAGS.SILENT", r"(\Deleted)")
            client.expunge()
        listed = await s.fetch_headers(batch.refs)
        assert b"gone 1" in listed[0].data, "the listing read its headers before it vanished"
        # Asked again, the headers come from the server, where the message is gone.
        headers = await s.fetch_headers(batch.refs)
        assert headers[0].data == b"", "a vanished message comes back empty"
        assert b"gone 1" not in headers[1].data
        assert b"gone-1" not in headers[1].data
        with pytest.raises(MessageRejectedError, match="no longer"):
            await s.fetch_message(batch.refs[0])
        whole = await s.fetch_message(batch.refs[1])
        assert b"Hello there." in whole.data
    flags = dovecot.flags(user)
    assert flags == {2: {"$ServerSyncUndeliverable"}}, "a keyword, and never \\Seen"


async def test_big_batches_are_split_into_bounded_commands(dovecot: Dovecot) -> None:
    user = dovecot.add_user()
    dovecot.append(user, *(mail(n, "bulk") for n in range(300)))
    transport = ImapTransport(header_batch_bytes=200 * 1024)
    endpoint = dovecot.endpoint("imap", TlsMode.IMPLICIT)
    async with transport.open(a_mailbox(user.address), profile(endpoint), password(user)) as s:
        batch = await s.list_new(INBOX, None, limit=280)
        assert len(batch.refs) == 280
        assert batch.more
        assert all(r.size for r in batch.refs)
        fetches = transport.stats.commands["UID FETCH"]
        # 200 KiB at the 4 KiB a header block is estimated at: 50 UIDs a command
        assert fetches == 6, "metadata and headers of 280 UIDs in commands of 50"
        headers = await s.fetch_headers(batch.refs)
        assert transport.stats.commands["UID FETCH"] == fetches, "the listing fetched them"
        assert [h.ref for h in headers] == list(batch.refs)
        assert all(f"bulk {n}".encode() in h.data for n, h in enumerate(headers))
        rest = await s.list_new(INBOX, batch.checkpoints[-1], limit=280)
        assert len(rest.refs) == 20
        assert not rest.more


async def test_batches_between_other_commands_list_each_message_once_in_order(
    dovecot: Dovecot,
) -> None:
    user = dovecot.add_user()
    dovecot.append(user, *(mail(n, "ahead") for n in range(250)))
    transport = ImapTransport()
    endpoint = dovecot.endpoint("imap", TlsMode.NONE)
    subjects: list[bytes] = []
    async with transport.open(a_mailbox(user.address), profile(endpoint), password(user)) as s:
        first = await s.list_new(INBOX, None, limit=100)
        assert first.more
        whole = await s.fetch_message(first.refs[5])
        assert b"Subject: ahead 5\r\n" in whole.data
        await s.mark(first.refs[:2], RemoteMark.TRACKED)
        cursor, batch = first.end, first
        while True:
            headers = await s.fetch_headers(batch.refs)
            subjects += [h.data.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0] for h in headers]
            if not batch.more:
                break
            batch = await s.list_new(INBOX, cursor, limit=100)
            cursor = batch.end
    assert subjects == [f"ahead {n}".encode() for n in range(250)], "each once, in order"
    # One header download a batch (the listing's), and the body.
    assert transport.stats.commands["UID FETCH"] == 4
    flagged = {uid: flags for uid, flags in dovecot.flags(user).items() if flags}
    assert flagged == {1: {"$ServerSyncTracked"}, 2: {"$ServerSyncTracked"}}, "never \\Seen"


async def test_the_header_budget_splits_downloads(dovecot: Dovecot) -> None:
    user = dovecot.add_user()
    dovecot.append(user, mail(1, "budget"), mail(2, "budget"), mail(3, "budget"))
    transport = ImapTransport(header_batch_bytes=1)
    endpoint = dovecot.endpoint("imap", TlsMode.STARTTLS)
    async with transport.open(a_mailbox(user.address), profile(endpoint), password(user)) as s:
        batch = await s.list_new(INBOX, None, limit=10)
        listed = transport.stats.commands["UID FETCH"]
        headers = await s.fetch_headers(batch.refs)
        again = await s.fetch_headers(batch.refs)
    assert listed == 3, "one message a command: the budget is below one header block"
    assert [h.data for h in again] == [h.data for h in headers]
    # The listing's headers are handed out once; asked again, they are fetched, by budget.
    assert transport.stats.commands["UID FETCH"] - listed == 3


# --- failures, against a scripted server -------------------------------------------------


def fake_profile(port: int) -> EmailServerProfile:
    return profile(ServerEndpoint(host="127.0.0.1", port=port, tls=TlsMode.NONE))


CREDENTIALS = Credentials(username="someone", secret=Secret("pw"))
BOX = a_mailbox("someone@serversync.test")


async def test_a_closed_port_is_a_transient_connection_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionFailedError):
        async with ImapTransport(timeouts=FAST).open(BOX, fake_profile(port), CREDENTIALS):
            pass


async def test_a_server_that_never_greets_times_out() -> None:
    impatient = Timeouts(connect=timedelta(seconds=0.3))
    async with fake_imap({}, greeting="") as port:
        started = time.monotonic()
        with pytest.raises(OperationTimeoutError, match=r"0\.3 s"):
            async with ImapTransport(timeouts=impatient).open(BOX, fake_profile(port), CREDENTIALS):
                pass
        assert time.monotonic() - started < 1


async def test_a_bye_greeting_means_busy() -> None:
    async with fake_imap({}, greeting="* BYE Too many connections\r\n") as port:
        with pytest.raises(ServerBusyError, match="Too many connections"):
            async with ImapTransport(timeouts=FAST).open(BOX, fake_profile(port), CREDENTIALS):
                pass


async def test_a_temporary_login_failure_means_busy() -> None:
    unavailable = ["{tag} NO [UNAVAILABLE] Temporary authentication failure.\r\n"]
    async with fake_imap({"AUTHENTICATE": unavailable}) as port:
        with pytest.raises(ServerBusyError) as busy:
            async with ImapTransport(timeouts=FAST).open(BOX, fake_profile(port), CREDENTIALS):
                pass
    assert busy.value.transient
    assert busy.value.server_code == "NO [UNAVAILABLE]"


async def test_a_dropped_connection_fails_at_once() -> None:
    async with fake_imap({"AUTHENTICATE": "drop"}) as port:
        started = time.monotonic()
        with pytest.raises(ConnectionFailedError):
            async with ImapTransport(timeouts=FAST).open(BOX, fake_profile(port), CREDENTIALS):
                pass
        assert time.monotonic() - started < 1, "pending commands fail when the socket closes"


async def test_a_stalled_command_times_out_and_the_session_is_dropped() -> None:
    transport = ImapTransport(timeouts=FAST)
    async with (
        fake_imap({"SELECT": SELECTED, "UID": "stall"}) as port,
        transport.open(BOX, fake_profile(port), CREDENTIALS) as session,
    ):
        with pytest.raises(OperationTimeoutError, match="UID SEARCH"):
            await session.list_new(INBOX, None, limit=10)
        with pytest.raises(ConnectionFailedError, match="earlier failure"):
            await session.list_folders()
    assert transport.stats.commands["LOGOUT"] == 0, "a stalled session is not logged out"


async def test_arrival_times_come_with_whole_messages_unless_process_email_from_needs_them(
    dovecot: Dovecot,
) -> None:
    user = dovecot.add_user()
    arrived = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    dovecot.append(user, mail(1, "arrival"), mail(2, "arrival"), arrived=arrived)
    transport = ImapTransport()
    endpoint = dovecot.endpoint("imap", TlsMode.IMPLICIT)
    mailbox = a_mailbox(user.address)

    async with transport.open(mailbox, profile(endpoint), password(user)) as s:
        batch = await s.list_new(INBOX, None, limit=10)
        assert [r.received_at for r in batch.refs] == [None, None], "not asked in the listing"
        assert all(r.size for r in batch.refs)
        one = await s.fetch_message(batch.refs[0])
        assert one.ref.received_at == arrived
        assert one.ref.remote_id == batch.refs[0].remote_id
        assert isinstance(s, BatchMessageSession)
        both = await s.fetch_messages(batch.refs)
        assert [m.ref.received_at for m in both if isinstance(m, RawMessage)] == [arrived] * 2

    cutoff = arrived - timedelta(days=1)
    for mailbox_date, profile_date in ((cutoff, None), (None, cutoff)):
        with_cutoff = attrs.evolve(mailbox, process_email_received_after=mailbox_date)
        with_profile = attrs.evolve(profile(endpoint), process_emails_received_after=profile_date)
        async with transport.open(with_cutoff, with_profile, password(user)) as s:
            batch = await s.list_new(INBOX, None, limit=10)
            assert [r.received_at for r in batch.refs] == [arrived] * 2, "the cutoff needs them"
