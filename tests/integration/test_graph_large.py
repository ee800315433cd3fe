"""Messages too large for a MIME draft, sent through the Graph transport against the fake
Graph: a JSON draft, attachments added one by one or through upload sessions, then send,
with the same reconciliation as small messages."""

from __future__ import annotations

import os
from datetime import timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy

import httpx
import pytest

from serversync.adapters.transports.graph import (
    MESSAGE_ID_PROPERTY,
    MIME_DRAFT_LIMIT,
    GraphTransport,
)
from serversync.errors import ConfigurationError, ServerBusyError, TransientError
from serversync.model import (
    CredentialKind,
    Credentials,
    EmailServerProfile,
    Mailbox,
    MessageId,
    OutgoingMessage,
    Secret,
    ServerEndpoint,
    ServerType,
    TlsMode,
)
from serversync.testing import a_mailbox, a_profile
from serversync.testing.graph import FAKE_GRAPH_URL, FakeGraph, GraphFault

pytestmark = pytest.mark.integration

ALICE = "alice@contoso.example"
JANE = "jane@fabrikam.example"
BIG = 9 * 1024 * 1024 + 12_345
SMALL = 150_000


def setup(fake: FakeGraph) -> tuple[Mailbox, EmailServerProfile, Credentials]:
    profile = a_profile(
        server_type=ServerType.MICROSOFT_GRAPH, incoming=ServerEndpoint(host=FAKE_GRAPH_URL)
    )
    credentials = Credentials(
        username=ALICE,
        secret=Secret(fake.issue_token(user=ALICE)),
        kind=CredentialKind.OAUTH2_ACCESS_TOKEN,
    )
    return a_mailbox(ALICE), profile, credentials


def large(n: int, *, big: bytes, small: bytes) -> OutgoingMessage:
    mid = MessageId(f"<large-{n}@contoso.example>")
    msg = EmailMessage()
    msg["From"] = ALICE
    msg["To"] = JANE
    msg["Subject"] = f"Drawings {n}"
    msg["Message-ID"] = mid
    msg["In-Reply-To"] = "<question@fabrikam.example>"
    msg["X-ServerSync-Case"] = "CAS-1001"
    msg.set_content("The drawings, as promised.")
    msg.add_alternative("<p>The drawings, as promised.</p>", subtype="html")
    msg.add_attachment(big, maintype="application", subtype="pdf", filename="drawings.pdf")
    msg.add_attachment(small, maintype="image", subtype="png", filename="logo.png")
    data = msg.as_bytes()
    assert len(data) > MIME_DRAFT_LIMIT
    return OutgoingMessage(
        message_id=mid, sender=ALICE, recipients=(JANE, "audit@contoso.example"), data=data
    )


def attachments_of(mime: bytes) -> dict[str, bytes]:
    parsed = BytesParser(policy=default_policy).parsebytes(mime)
    assert isinstance(parsed, EmailMessage)
    out = {}
    for part in parsed.iter_attachments():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        out[str(part.get_filename())] = payload
    return out


@pytest.fixture(scope="module")
def payloads() -> tuple[bytes, bytes]:
    return os.urandom(BIG), os.urandom(SMALL)


async def test_a_large_message_goes_over_real_http_on_loopback(
    payloads: tuple[bytes, bytes],
) -> None:
    big, small = payloads
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    _, _, credentials = setup(fake)
    graph = GraphTransport()
    async with fake.serve() as url:
        profile = a_profile(
            server_type=ServerType.MICROSOFT_GRAPH,
            incoming=ServerEndpoint(host=url, tls=TlsMode.NONE),
        )
        async with graph.outgoing.open(a_mailbox(ALICE), profile, credentials) as session:
            await session.send(large(7, big=big, small=small))

    (sent,) = fake.sent
    assert attachments_of(sent.mime) == {"drawings.pdf": big, "logo.png": small}
    puts = [r for r in fake.requests if r.method == "PUT"]
    assert puts
    assert all(r.host.startswith("127.0.0.1:") and not r.authorized for r in puts)


async def test_a_ten_megabyte_message_is_sent_once_and_arrives_whole(
    payloads: tuple[bytes, bytes],
) -> None:
    big, small = payloads
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    mailbox, profile, credentials = setup(fake)
    graph = GraphTransport(http_transport=fake.transport())
    message = large(1, big=big, small=small)

    async with graph.outgoing.open(mailbox, profile, credentials) as session:
        receipt = await session.send(message)

    (sent,) = fake.sent
    assert sent.message_id == message.message_id
    assert set(sent.recipients) == {JANE, "audit@contoso.example"}
    (copy,) = fake.messages(ALICE, "sentitems")
    assert receipt.remote_id == copy.id
    assert attachments_of(copy.mime) == {"drawings.pdf": big, "logo.png": small}
    parsed = BytesParser(policy=default_policy).parsebytes(copy.mime, headersonly=True)
    assert parsed["x-serversync-case"] == "CAS-1001"
    assert parsed["in-reply-to"] == "<question@fabrikam.example>"
    assert b"audit@" not in copy.mime, "the Bcc stays off the message"
    assert copy.extended[MESSAGE_ID_PROPERTY] == message.message_id
    puts = [r for r in fake.requests if r.method == "PUT"]
    assert len(puts) >= 3, "the large attachment went in several ranges"
    assert not any(r.authorized for r in puts), "no Authorization header on upload ranges"
    assert all(r.status < 300 for r in fake.requests), "no 413, nothing refused"
    assert graph.stats.large_drafts == 1
    assert graph.stats.bytes_uploaded == BIG
    assert len([r for r in fake.requests if r.path.endswith("/send")]) == 1
    assert not fake.messages(ALICE, "drafts")


async def test_a_504_after_graph_took_a_large_message_is_not_resent(
    payloads: tuple[bytes, bytes],
) -> None:
    big, small = payloads
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    mailbox, profile, credentials = setup(fake)
    graph = GraphTransport(http_transport=fake.transport())
    fake.add_fault(
        GraphFault.error(504, "GatewayTimeout", method="POST", path="/send$", after=True)
    )
    message = large(2, big=big, small=small)

    async with graph.outgoing.open(mailbox, profile, credentials) as session:
        receipt = await session.send(message)
        again = await session.send(message)  # the engine's retry of an unsure send

    assert receipt.server_reply is not None
    assert "not sent again" in receipt.server_reply
    assert again.remote_id == receipt.remote_id
    assert len(fake.sent) == 1, "sent once"
    assert len([r for r in fake.requests if r.path.endswith("/send")]) == 1
    assert len([r for r in fake.requests if r.path.endswith("createUploadSession")]) == 1
    (copy,) = fake.messages(ALICE, "sentitems")
    assert attachments_of(copy.mime)["drawings.pdf"] == big


async def test_a_half_built_draft_is_replaced_never_sent(payloads: tuple[bytes, bytes]) -> None:
    big, small = payloads
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    mailbox, profile, credentials = setup(fake)
    graph = GraphTransport(http_transport=fake.transport())
    # The second range fails, and so does deleting the half-built draft afterwards.
    fake.add_fault(GraphFault(status=500, method="PUT", path="AttachmentSessions", after=False))
    fake.add_fault(GraphFault.error(500, "InternalServerError", method="DELETE"))
    message = large(3, big=big, small=small)

    async with graph.outgoing.open(mailbox, profile, credentials) as session:
        with pytest.raises(ServerBusyError):
            await session.send(message)
        (half,) = fake.messages(ALICE, "drafts")
        assert MESSAGE_ID_PROPERTY not in half.extended, "not marked whole"
        assert fake.sent == []
        receipt = await session.send(message)

    (sent,) = fake.sent
    assert receipt.remote_id != half.id, "a new draft was built"
    assert attachments_of(sent.mime) == {"drawings.pdf": big, "logo.png": small}
    assert not fake.messages(ALICE, "drafts")
    (deleted,) = fake.messages(ALICE, "deleteditems")
    assert deleted.id == half.id, "the half-built draft was deleted, not sent"
    assert graph.stats.drafts_replaced == 1


async def test_a_failed_upload_deletes_its_draft_at_once(payloads: tuple[bytes, bytes]) -> None:
    big, small = payloads
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    mailbox, profile, credentials = setup(fake)
    graph = GraphTransport(http_transport=fake.transport())
    message = large(4, big=big, small=small)
    fake.upload_links_to("uploads.evil.example")

    async with graph.outgoing.open(mailbox, profile, credentials) as session:
        with pytest.raises(ConfigurationError, match="upload URL on another host"):
            await session.send(message)

    assert not any(r.host == "uploads.evil.example" for r in fake.requests)
    assert not fake.messages(ALICE, "drafts"), "the half-built draft went at once"
    assert fake.sent == []


async def test_upload_sessions_on_outlooks_host_are_followed(
    payloads: tuple[bytes, bytes],
) -> None:
    big, small = payloads
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    mailbox, profile, credentials = setup(fake)
    graph = GraphTransport(http_transport=fake.transport())
    fake.upload_links_to("outlook.office.com")

    async with graph.outgoing.open(mailbox, profile, credentials) as session:
        await session.send(large(5, big=big, small=small))

    puts = [r for r in fake.requests if r.method == "PUT"]
    assert puts
    assert all(r.host == "outlook.office.com" and not r.authorized for r in puts)
    (sent,) = fake.sent
    assert attachments_of(sent.mime)["drawings.pdf"] == big


async def test_the_fake_refuses_a_mime_draft_over_four_megabytes() -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    token = fake.issue_token(user=ALICE)
    async with httpx.AsyncClient(transport=fake.transport()) as http:
        answer = await http.post(
            f"{FAKE_GRAPH_URL}/users/{ALICE}/messages",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
            content=b"A" * (4 * 1024 * 1024 + 4),
        )
    assert answer.status_code == 413
    assert not fake.messages(ALICE, "drafts")


async def test_an_expired_upload_session_fails_the_attempt_for_a_retry_and_loses_nothing(
    payloads: tuple[bytes, bytes],
) -> None:
    big, small = payloads
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    mailbox, profile, credentials = setup(fake)
    graph = GraphTransport(http_transport=fake.transport())
    message = large(6, big=big, small=small)
    fake.set_upload_session_lifetime(timedelta(0))  # expired before the first range

    async with graph.outgoing.open(mailbox, profile, credentials) as session:
        with pytest.raises(TransientError, match="upload session"):
            await session.send(message)
        assert not fake.messages(ALICE, "drafts")
        fake.set_upload_session_lifetime(timedelta(minutes=15))
        await session.send(message)

    (sent,) = fake.sent
    assert attachments_of(sent.mime)["drawings.pdf"] == big
