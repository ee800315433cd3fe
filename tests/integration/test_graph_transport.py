"""The Graph transports one call at a time against the fake Graph: folders, headers without
transport headers, the Undeliverable folder, drafts left by an earlier attempt, a send that
timed out after Graph took it, and mailboxes Graph cannot serve."""

from __future__ import annotations

import ssl
from datetime import timedelta
from pathlib import Path

import pytest

from serversync.adapters.transports.graph import (
    MARK_PROPERTY,
    MESSAGE_ID_PROPERTY,
    TRACKED_CATEGORY,
    UNDELIVERABLE_CATEGORY,
    GraphTransport,
)
from serversync.errors import (
    ConfigurationError,
    ConnectionFailedError,
    OperationTimeoutError,
    ServerBusyError,
)
from serversync.mime import parse_headers
from serversync.model import (
    INBOX,
    CredentialKind,
    Credentials,
    EmailServerProfile,
    Mailbox,
    MessageId,
    OutgoingMessage,
    RemoteMark,
    Secret,
    ServerEndpoint,
    ServerType,
    TlsMode,
)
from serversync.settings import Timeouts
from serversync.testing import a_mailbox, a_profile, an_email
from serversync.testing.graph import FAKE_GRAPH_URL, FakeGraph, GraphFault
from tests.integration.pki import make_pki

pytestmark = pytest.mark.integration

ALICE = "alice@contoso.example"
JANE = "jane@fabrikam.example"


def setup(
    fake: FakeGraph, *, move: bool = False, address: str = ALICE
) -> tuple[Mailbox, EmailServerProfile, Credentials]:
    profile = a_profile(
        server_type=ServerType.MICROSOFT_GRAPH,
        incoming=ServerEndpoint(host=FAKE_GRAPH_URL),
        move_undelivered_emails=move,
    )
    credentials = Credentials(
        username=address,
        secret=Secret(fake.issue_token(user=address)),
        kind=CredentialKind.OAUTH2_ACCESS_TOKEN,
    )
    return a_mailbox(address), profile, credentials


def outgoing(n: int, *, bcc: tuple[str, ...] = ()) -> OutgoingMessage:
    mid = MessageId(f"<out-{n}@contoso.example>")
    data = an_email(sender=ALICE, to=[JANE], subject=f"out {n}", message_id=mid)
    return OutgoingMessage(message_id=mid, sender=ALICE, recipients=(JANE, *bcc), data=data)


async def test_folders_are_a_tree_with_the_inbox_as_inbox_and_special_uses() -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    projects = fake.add_folder(ALICE, "Projects")
    nested = fake.add_folder(ALICE, "Contoso", parent=projects)
    mailbox, profile, credentials = setup(fake)

    async with GraphTransport(http_transport=fake.transport()).incoming.open(
        mailbox, profile, credentials
    ) as session:
        folders = {f.id: f for f in await session.list_folders()}

    assert folders[INBOX].name == "Inbox"
    assert folders[INBOX].parent_id is None
    assert folders[projects].parent_id == INBOX
    assert folders[nested].parent_id == projects
    uses = {f.special_use for f in folders.values() if f.special_use}
    assert uses == {"\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive"}


async def test_a_message_without_transport_headers_gets_threading_headers_from_mapi() -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    reply = an_email(
        sender=JANE,
        to=[ALICE],
        subject="Re: Order",
        message_id="<reply-1@fabrikam.example>",
        in_reply_to="<order-1@contoso.example>",
    )
    fake.deliver(ALICE, reply, transport_headers=False)
    mailbox, profile, credentials = setup(fake)

    async with GraphTransport(http_transport=fake.transport()).incoming.open(
        mailbox, profile, credentials
    ) as session:
        batch = await session.list_new(INBOX, None, limit=10)
        (headers,) = await session.fetch_headers(batch.refs)

    parsed = parse_headers(headers.data)
    assert parsed.message_id == MessageId("<reply-1@fabrikam.example>")
    assert parsed.in_reply_to == (MessageId("<order-1@contoso.example>"),)
    assert parsed.sender is not None
    assert parsed.sender.address == JANE
    expanded = [r for r in fake.requests if "singleValueExtendedProperties" in r.query]
    assert len(expanded) == 1, "one read of the MAPI properties for the message without headers"


async def test_undeliverable_messages_move_under_the_inbox_when_the_profile_asks() -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    for n in range(2):
        fake.deliver(ALICE, an_email(sender=JANE, to=[ALICE], message_id=f"<u-{n}@f.example>"))
    mailbox, profile, credentials = setup(fake, move=True)

    async with GraphTransport(http_transport=fake.transport()).incoming.open(
        mailbox, profile, credentials
    ) as session:
        batch = await session.list_new(INBOX, None, limit=10)
        await session.mark(batch.refs[:1], RemoteMark.TRACKED)
        await session.mark(batch.refs[1:], RemoteMark.UNDELIVERABLE)
        await session.mark(batch.refs[:1], RemoteMark.TRACKED)  # again: nothing changes

    (kept,) = fake.messages(ALICE, "inbox")
    assert kept.categories == [TRACKED_CATEGORY]
    assert kept.extended == {MARK_PROPERTY: "tracked"}
    undeliverable = fake.folder_id(ALICE, "Undeliverable")
    (moved,) = fake.messages(ALICE, undeliverable)
    assert moved.categories == [UNDELIVERABLE_CATEGORY]
    assert moved.extended == {MARK_PROPERTY: "undeliverable"}
    patches = [r for r in fake.requests if r.method == "PATCH"]
    assert len(patches) == 2, "a message already tagged is not written again"


async def test_a_draft_left_by_an_earlier_attempt_is_sent_instead_of_a_new_one() -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    mailbox, profile, credentials = setup(fake)
    graph = GraphTransport(http_transport=fake.transport())
    # The send is refused before Exchange takes it: the draft stays in Drafts.
    fake.add_fault(GraphFault.error(503, "ServiceUnavailable", method="POST", path="/send$"))
    message = outgoing(1, bcc=("audit@contoso.example",))

    async with graph.outgoing.open(mailbox, profile, credentials) as session:
        with pytest.raises(ServerBusyError):
            await session.send(message)
        (draft,) = fake.messages(ALICE, "drafts")
        assert draft.extended == {MESSAGE_ID_PROPERTY: "<out-1@contoso.example>"}
        receipt = await session.send(message)

    assert receipt.message_id == message.message_id
    assert receipt.remote_id == draft.id, "the same draft was sent"
    assert graph.stats.drafts_reused == 1
    (sent,) = fake.sent
    assert set(sent.recipients) == {JANE, "audit@contoso.example"}
    assert b"audit@" not in sent.mime, "the Bcc stays off the message"
    creates = [r for r in fake.requests if r.method == "POST" and r.path.endswith("/messages")]
    assert len(creates) == 1, "one draft for both attempts"
    assert not fake.messages(ALICE, "drafts")


async def test_a_send_that_timed_out_after_graph_took_it_is_reconciled_at_once() -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    mailbox, profile, credentials = setup(fake)
    graph = GraphTransport(
        http_transport=fake.transport(), timeouts=Timeouts(send=timedelta(seconds=2))
    )
    # Exchange sends the message; its answer comes after the client's deadline.
    fake.add_fault(GraphFault(status=202, method="POST", path="/send$", after=True, delay=3))

    async with graph.outgoing.open(mailbox, profile, credentials) as session:
        receipt = await session.send(outgoing(2))

    assert receipt.server_reply is not None
    assert "not sent again" in receipt.server_reply
    assert len(fake.sent) == 1
    (copy,) = fake.messages(ALICE, "sentitems")
    assert receipt.remote_id == copy.id


async def test_a_mailbox_graph_cannot_serve_is_a_configuration_error_naming_ews() -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE, on_premises=True)
    mailbox, profile, credentials = setup(fake)

    with pytest.raises(ConfigurationError) as refused:
        async with GraphTransport(http_transport=fake.transport()).incoming.open(
            mailbox, profile, credentials
        ):
            pass
    assert "EWS" in str(refused.value)
    assert refused.value.server_code == "mailboxnotenabledforrestapi"


async def test_a_token_for_another_mailbox_is_refused_and_plain_http_needs_tls_none() -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    fake.add_mailbox(JANE)
    mailbox, profile, _ = setup(fake)
    _, _, janes = setup(fake, address=JANE)
    graph = GraphTransport(http_transport=fake.transport())

    with pytest.raises(ConfigurationError):
        async with graph.incoming.open(mailbox, profile, janes):
            pass
    plain = a_profile(
        server_type=ServerType.MICROSOFT_GRAPH,
        incoming=ServerEndpoint(host="http://127.0.0.1:9/v1.0"),
    )
    with pytest.raises(ConfigurationError, match="plain HTTP"):
        async with graph.incoming.open(mailbox, plain, janes):
            pass


async def test_an_unreachable_or_silent_graph_is_a_transient_network_error() -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    mailbox, _, credentials = setup(fake)
    async with fake.serve() as url:
        pass  # the port is closed again
    closed = a_profile(
        server_type=ServerType.MICROSOFT_GRAPH,
        incoming=ServerEndpoint(host=url, tls=TlsMode.NONE),
    )
    with pytest.raises(ConnectionFailedError):
        async with GraphTransport().incoming.open(mailbox, closed, credentials):
            pass

    fake.add_fault(GraphFault(status=200, method="GET", path="/mailFolders/inbox$", delay=2))
    graph = GraphTransport(
        http_transport=fake.transport(), timeouts=Timeouts(command=timedelta(seconds=0.5))
    )
    _, profile, _ = setup(fake)
    with pytest.raises(OperationTimeoutError):
        async with graph.incoming.open(mailbox, profile, credentials):
            pass


async def test_tls_trusts_the_profiles_ca_file_alone(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    mailbox, _, credentials = setup(fake)
    graph = GraphTransport()

    async with fake.serve(tls=context) as url:

        def profile(ca_file: Path | None) -> EmailServerProfile:
            endpoint = ServerEndpoint(host=url, ca_file=str(ca_file) if ca_file else None)
            return a_profile(server_type=ServerType.MICROSOFT_GRAPH, incoming=endpoint)

        async with graph.incoming.open(mailbox, profile(pki.ca_file), credentials) as session:
            assert await session.list_new(INBOX, None, limit=1) is not None
        for untrusted in (None, pki.other_ca_file):
            with pytest.raises(ConfigurationError, match="ca_file"):
                async with graph.incoming.open(mailbox, profile(untrusted), credentials):
                    pass
    secure = [r for r in fake.requests if r.authorized]
    assert len(secure) == 2, "no request, so no token, went over an untrusted connection"


async def test_a_draft_left_untagged_by_a_stop_gets_its_property_and_bcc_before_sending() -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    mailbox, profile, credentials = setup(fake)
    graph = GraphTransport(http_transport=fake.transport())
    message = outgoing(3, bcc=("audit@contoso.example",))
    # The first attempt stops right after creating the draft (its PATCH never arrives; a
    # 500 is not repeated in place, unlike a 503).
    fake.add_fault(GraphFault.error(500, "InternalServerError", method="PATCH"))

    async with graph.outgoing.open(mailbox, profile, credentials) as session:
        with pytest.raises(ServerBusyError):
            await session.send(message)
        (untagged,) = fake.messages(ALICE, "drafts")
        assert untagged.extended == {}
        await session.send(message)

    (sent,) = fake.sent
    assert set(sent.recipients) == {JANE, "audit@contoso.example"}, "the Bcc is not lost"
    (copy,) = fake.messages(ALICE, "sentitems")
    assert copy.id == untagged.id
    assert copy.extended == {MESSAGE_ID_PROPERTY: "<out-3@contoso.example>"}
