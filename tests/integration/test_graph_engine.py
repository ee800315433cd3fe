"""The engine over the Graph transports against the fake Graph: delta rounds cut off and
lost, sends that may have happened, throttling, revoked consent, and where the token goes.

Storage, the record directory and credentials are the in-memory ones; the fake Graph serves
in process through its httpx transport (the loopback wiring runs in the contract tests).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from serversync import (
    BaseSyncObserver,
    EmailDirection,
    EmailStatus,
    ExpiredClaimPolicy,
    IncomingFilteringMethod,
    ItemOutcome,
    Limits,
    MailboxRunReport,
    MappingCredentials,
    OutcomeKind,
    RetryPolicy,
    RunStatus,
    SyncEngine,
    SyncSettings,
    Transports,
    Workload,
)
from serversync.adapters.transports.graph import (
    GRAPH_SERVER_TYPES,
    TRACKED_CATEGORY,
    GraphTokenSource,
    GraphTransport,
    MsalClientCredentials,
    TokenCallback,
)
from serversync.model import (
    INBOX,
    Alert,
    AlertKind,
    CredentialKind,
    Credentials,
    GraphCheckpoint,
    Mailbox,
    MailboxId,
    Secret,
    ServerEndpoint,
    ServerType,
    TlsMode,
)
from serversync.testing import (
    FakeClock,
    InMemoryDirectory,
    InMemoryStorage,
    a_mailbox,
    a_pending_email,
    a_profile,
    a_user,
    an_email,
)
from serversync.testing.graph import FAKE_GRAPH_URL, FakeGraph, GraphFault, format_http_date

pytestmark = pytest.mark.integration

ALICE = "alice@contoso.example"
JANE = "jane@fabrikam.example"
APP_ID = "6e1c6c1a-0000-4000-8000-00000000c0de"
APP_SECRET = "the-client-secret"


@attrs.define
class GraphWorld:
    """CRM storage in memory, mail on the fake Graph, wired as a host wires serversync."""

    fake: FakeGraph = attrs.Factory(FakeGraph)
    clock: FakeClock = attrs.Factory(FakeClock)
    storage: InMemoryStorage = attrs.Factory(InMemoryStorage)
    directory: InMemoryDirectory = attrs.Factory(InMemoryDirectory)
    credentials: dict[MailboxId, Credentials] = attrs.Factory(dict)
    page_size: int = 100
    tokens: GraphTokenSource | None = None
    url: str | None = None  # the fake on loopback; in process when None
    graph: GraphTransport = attrs.field()

    @graph.default
    def _graph(self) -> GraphTransport:
        return self.transport()

    def transport(self) -> GraphTransport:
        return GraphTransport(
            http_transport=self.fake.transport() if self.url is None else None,
            clock=self.clock,
            page_size=self.page_size,
            tokens=self.tokens,
            restart_jitter=timedelta(seconds=0.2),
        )

    def use_msal(self) -> None:
        self.fake.add_app(APP_ID, APP_SECRET)
        self.tokens = MsalClientCredentials(
            authority=self.fake.authority, http_client=self.fake.msal_http_client()
        )
        self.graph = self.transport()

    def add_mailbox(self, address: str = ALICE) -> Mailbox:
        self.fake.add_mailbox(address)
        record = a_user(address, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
        self.directory.add(record)
        profile = a_profile(
            server_type=ServerType.MICROSOFT_GRAPH,
            name="Exchange Online",
            incoming=(
                ServerEndpoint(host=FAKE_GRAPH_URL)
                if self.url is None
                else ServerEndpoint(host=self.url, tls=TlsMode.NONE)
            ),
        )
        self.storage.add_profile(profile)
        mailbox = a_mailbox(address, owner=record.ref, profile_id=profile.id)
        self.storage.add_mailbox(mailbox)
        if self.tokens is not None:
            self.credentials[mailbox.id] = Credentials(
                username=APP_ID,
                secret=Secret(APP_SECRET),
                kind=CredentialKind.OAUTH2_CLIENT_SECRET,
            )
        else:
            self.credentials[mailbox.id] = Credentials(
                username=address,
                secret=Secret(self.fake.issue_token(user=address)),
                kind=CredentialKind.OAUTH2_ACCESS_TOKEN,
            )
        return mailbox

    def engine(self, **overrides: object) -> SyncEngine:
        parts: dict[str, object] = {
            "repositories": self.storage,
            "directory": self.directory,
            "transports": Transports.by_server_type(
                incoming=dict.fromkeys(GRAPH_SERVER_TYPES, self.graph.incoming),
                outgoing=dict.fromkeys(GRAPH_SERVER_TYPES, self.graph.outgoing),
            ),
            "credentials": MappingCredentials(by_mailbox=self.credentials),
            "clock": self.clock,
        }
        parts.update(overrides)
        return SyncEngine(**parts)  # type: ignore[arg-type]

    async def sync(
        self, mailbox: Mailbox, workload: Workload = Workload.INCOMING, **overrides: object
    ) -> MailboxRunReport:
        async with self.engine(**overrides) as engine:
            (report,) = await engine.sync_mailbox(mailbox.id, workloads=[workload])
        return report

    def deliver(self, count: int, tag: str, *, reply_at: int | None = None) -> list[str]:
        """Deliver ``count`` messages; the one at ``reply_at`` answers the one before it, so
        the engine stores the messages before it (a group) before judging it."""
        mids: list[str] = []
        for n in range(count):
            mid = f"<{tag}-{n}@fabrikam.example>"
            answers = mids[-1] if n == reply_at else None
            data = an_email(
                sender=JANE, to=[ALICE], subject=f"{tag} {n}", message_id=mid, in_reply_to=answers
            )
            self.fake.deliver(ALICE, data)
            mids.append(mid)
        return mids

    def incoming(self) -> list[str]:
        """The Message-IDs of the incoming emails stored, in storage order."""
        return [
            str(a.message_id)
            for a in self.storage.activities()
            if a.direction is EmailDirection.INCOMING
        ]


def kinds(items: Sequence[ItemOutcome]) -> list[OutcomeKind]:
    return [i.kind for i in items]


class AfterItems(BaseSyncObserver):
    """Runs ``action`` once ``count`` messages were decided."""

    def __init__(self, count: int, action: object) -> None:
        self.count = count
        self.action = action
        self.decided = 0

    def item_processed(self, outcome: ItemOutcome) -> None:
        self.decided += 1
        if self.decided == self.count:
            assert callable(self.action)
            self.action()


async def test_a_delta_round_interrupted_mid_page_resumes_without_loss_or_duplicate() -> None:
    world = GraphWorld(page_size=3)
    mailbox = world.add_mailbox()
    sent = world.deliver(5, "paged", reply_at=2)
    profile = await world.storage.get_profile(mailbox.profile_id)  # type: ignore[arg-type]
    assert profile is not None

    # Every cursor of a listing that crosses a page boundary resumes exactly after its message.
    async with world.graph.incoming.open(mailbox, profile, world.credentials[mailbox.id]) as s:
        batch = await s.list_new(INBOX, None, limit=4)
        assert len(batch.refs) == 4
        assert batch.more
        ids = [r.remote_id for r in batch.refs]
        assert all(isinstance(c, GraphCheckpoint) for c in batch.checkpoints)
        for n, cursor in enumerate(batch.checkpoints):
            rest = await s.list_new(INBOX, cursor, limit=10)
            listed = [r.remote_id for r in rest.refs]
            assert listed[: 3 - n] == ids[n + 1 :], f"cursor {n} loses or repeats a message"
            assert len(listed) == 4 - n, f"cursor {n} must reach the fifth message"
            assert not rest.more

    # Through the engine: a failure after two messages of the first page.
    failed = await world.sync(
        mailbox,
        observer=AfterItems(2, lambda: world.fake.add_fault(GraphFault.error(500, "UnknownError"))),
    )
    assert failed.status is RunStatus.FAILED
    assert failed.error is not None
    assert failed.error.error_type == "ServerBusyError"
    assert kinds(failed.items) == [OutcomeKind.TRACKED] * 2
    saved = await world.storage.load_checkpoint(mailbox.id, INBOX)
    assert isinstance(saved, GraphCheckpoint)
    assert saved.done, "the cursor stands mid-page"

    report = await world.sync(mailbox)

    assert report.status is RunStatus.SUCCEEDED
    assert kinds(report.items) == [OutcomeKind.TRACKED] * 3, "no duplicates to dedupe"
    assert world.incoming() == sent
    categories = [m.categories for m in world.fake.messages(ALICE, "inbox")]
    assert categories == [[TRACKED_CATEGORY]] * 5, "tagged once each"
    again = await world.sync(mailbox)
    assert again.items == (), "the delta link is past every message"


@attrs.frozen
class Served:
    """A fake Graph, and its loopback URL when the test runs over real HTTP."""

    fake: FakeGraph
    url: str | None

    def world(self, **fields: Any) -> GraphWorld:
        return GraphWorld(fake=self.fake, url=self.url, **fields)


@pytest.fixture(params=["in-process", "loopback"])
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    fake = FakeGraph()
    if request.param == "in-process":
        yield Served(fake, None)
        return
    async with fake.serve() as url:
        yield Served(fake, url)


async def test_a_410_mid_sync_starts_a_new_round_with_no_duplicate_activity(
    served: Served,
) -> None:
    world = served.world(page_size=2)
    mailbox = world.add_mailbox()
    sent = world.deliver(5, "lost")
    settings = SyncSettings(limits=Limits(incoming_batch_size=2))

    # Graph forgets the round after three messages: the stored nextLink answers 410.
    report = await world.sync(
        mailbox, observer=AfterItems(3, world.fake.expire_delta_tokens), settings=settings
    )

    assert report.status is RunStatus.SUCCEEDED
    assert world.incoming() == sent, "every message exactly once"
    outcomes = kinds(report.items)
    assert outcomes.count(OutcomeKind.TRACKED) == 5
    assert outcomes.count(OutcomeKind.DUPLICATE) >= 3, "the new round replays the first three"
    gone = [r for r in world.fake.requests if r.status == 410]
    assert len(gone) == 1, "one lost link, then a new round"
    assert world.graph.stats.rounds_restarted == 1

    late = world.deliver(1, "after")
    again = await world.sync(mailbox, settings=settings)
    assert kinds(again.items) == [OutcomeKind.TRACKED]
    assert world.incoming() == sent + late


async def test_a_send_answered_504_after_graph_accepted_it_is_not_sent_twice(
    served: Served,
) -> None:
    world = served.world()
    mailbox = world.add_mailbox()
    email = a_pending_email(sender_mailbox=mailbox, to=[JANE], subject="Order")
    world.storage.put_activity(email)
    # Exchange sends the message and the gateway answers 504 all the same.
    world.fake.add_fault(
        GraphFault.error(504, "GatewayTimeout", method="POST", path="/send$", after=True)
    )

    report = await world.sync(mailbox, Workload.OUTGOING)

    assert report.status is RunStatus.SUCCEEDED
    stored = next(a for a in world.storage.activities() if a.id == email.id)
    assert stored.status is EmailStatus.SENT, "reconciled in Sent Items at once"
    assert len(world.fake.sent) == 1, "sent once"
    assert stored.message_id == world.fake.sent[0].message_id
    sends = [r for r in world.fake.requests if r.path.endswith("/send")]
    assert len(sends) == 1, "the send request is never repeated"
    assert world.graph.stats.sends_reconciled == 1
    assert world.graph.stats.messages_sent == 0, "Graph never said 202"
    (copy,) = world.fake.messages(ALICE, "sentitems")
    assert copy.internet_message_id == stored.message_id
    assert not world.fake.messages(ALICE, "drafts")


async def test_a_send_whose_copy_is_not_filed_yet_is_uncertain_then_found_not_resent() -> None:
    world = GraphWorld()
    mailbox = world.add_mailbox()
    email = a_pending_email(sender_mailbox=mailbox, to=[JANE], subject="Invoice")
    world.storage.put_activity(email)
    world.fake.hold_in_outbox = True  # Exchange is slow to file the copy
    world.fake.add_fault(
        GraphFault.error(503, "ServiceUnavailable", method="POST", path="/send$", after=True)
    )
    resend = SyncSettings(retry=RetryPolicy(expired_claim_policy=ExpiredClaimPolicy.RESEND))

    async with world.engine(settings=resend) as engine:
        (first,) = await engine.sync_mailbox(mailbox.id, workloads=[Workload.OUTGOING])
        (result,) = first.sends
        assert result.error is not None
        assert result.error.error_type == "DeliveryUncertainError"
        world.clock.advance(timedelta(minutes=10))
        await engine.sync_mailbox(mailbox.id, workloads=[Workload.OUTGOING])
        assert len(world.fake.sent) == 1, "still in the Outbox: not sent again"
        world.fake.file_outbox(ALICE)
        world.clock.advance(timedelta(minutes=10))
        (done,) = await engine.sync_mailbox(mailbox.id, workloads=[Workload.OUTGOING])

    assert done.status is RunStatus.SUCCEEDED
    stored = next(a for a in world.storage.activities() if a.id == email.id)
    assert stored.status is EmailStatus.SENT
    assert len(world.fake.sent) == 1, "sent once"
    assert len([r for r in world.fake.requests if r.path.endswith("/send")]) == 1


async def test_a_429_with_retry_after_is_honoured_and_the_sync_completes() -> None:
    world = GraphWorld()
    mailbox = world.add_mailbox()
    sent = world.deliver(3, "throttled")

    # A short wait is waited out in place, as Graph asks.
    world.fake.add_fault(GraphFault.throttled("1", method="GET", path="/messages/delta$"))
    short = await world.sync(mailbox)
    assert short.status is RunStatus.SUCCEEDED
    deltas = [r for r in world.fake.requests if r.path.endswith("/messages/delta")]
    assert [r.status for r in deltas[:2]] == [429, 200]
    assert deltas[1].at - deltas[0].at >= 1.0, "the retry waited Retry-After"
    assert world.graph.stats.throttled == 1
    assert world.graph.stats.waited == 1
    assert world.incoming() == sent

    # A long one (an HTTP date 20 minutes ahead) postpones the mailbox for that long.
    later = world.deliver(2, "later")
    until = format_http_date(datetime.now(UTC) + timedelta(minutes=20))
    world.fake.add_fault(GraphFault.throttled(until, method="GET", path="/messages/delta$"))
    world.clock.advance(timedelta(minutes=6))  # the mailbox is due again
    async with world.engine() as engine:
        busy = await engine.run_once(workloads=[Workload.INCOMING])
        (failed,) = busy.mailboxes
        assert failed.status is RunStatus.FAILED
        assert failed.error is not None
        assert failed.error.error_type == "ServerBusyError"
        assert failed.error.retry_after is not None
        assert failed.error.retry_after >= timedelta(minutes=19)
        state = await world.storage.get_workload_state(mailbox.id, Workload.INCOMING)
        assert state is not None
        assert state.next_run_at is not None
        assert state.next_run_at >= failed.finished_at + timedelta(minutes=19), (
            "Graph's Retry-After, longer than the 5-minute back-off, wins"
        )
        asked = len(world.fake.requests)
        world.clock.advance(timedelta(minutes=10))
        await engine.run_once(workloads=[Workload.INCOMING])
        assert len(world.fake.requests) == asked, "nothing is asked of a throttling Graph"
        world.clock.advance(timedelta(minutes=11))
        done = await engine.run_once(workloads=[Workload.INCOMING])

    (completed,) = done.mailboxes
    assert completed.status is RunStatus.SUCCEEDED
    assert world.incoming() == sent + later


async def test_an_expired_token_is_renewed_through_msal_once() -> None:
    world = GraphWorld()
    world.use_msal()
    mailbox = world.add_mailbox()
    sent = world.deliver(1, "first")
    assert (await world.sync(mailbox)).status is RunStatus.SUCCEEDED
    assert world.fake.token_requests == 1

    world.fake.expire_tokens()  # Graph now answers 401 to the cached token
    later = world.deliver(1, "second")
    report = await world.sync(mailbox)

    assert report.status is RunStatus.SUCCEEDED
    assert world.fake.token_requests == 2, "one new token after the 401"
    assert world.incoming() == sent + later


@pytest.mark.parametrize("cached", [True, False], ids=["token-in-cache", "token-endpoint"])
async def test_a_revoked_consent_disables_the_workload_with_the_reason(cached: bool) -> None:
    world = GraphWorld()
    world.use_msal()
    mailbox = world.add_mailbox()
    world.deliver(1, "before")
    if cached:
        assert (await world.sync(mailbox)).status is RunStatus.SUCCEEDED
    world.fake.revoke_consent(APP_ID)
    world.deliver(1, "after")
    alerts = AlertsSeen()

    report = await world.sync(mailbox, observer=alerts)

    assert report.status is RunStatus.FAILED
    assert report.error is not None
    assert not report.error.transient
    if cached:
        # Graph refuses the token it still has: 403 ErrorAccessDenied.
        assert report.error.error_type == "ConfigurationError"
        assert report.error.server_code == "erroraccessdenied"
        assert "consent" in report.error.message
    else:
        # Entra ID refuses a new token: invalid_grant, AADSTS65001.
        assert report.error.error_type == "AuthenticationError"
        assert report.error.server_code == "invalid_grant"
        assert "AADSTS65001" in report.error.message
    assert APP_SECRET not in report.error.message
    stored = await world.storage.get_mailbox(mailbox.id)
    assert stored is not None
    assert not stored.enabled_for_incoming, "a permanent failure disables the workload"
    state = await world.storage.get_workload_state(mailbox.id, Workload.INCOMING)
    assert state is not None
    assert state.last_error is not None
    assert state.last_error.message == report.error.message
    (alert,) = alerts.seen
    assert alert.kind is AlertKind.WORKLOAD_DISABLED
    assert alert.error == report.error
    # The credential-expired event: a refused token grant asks for new credentials; a
    # 403 for a token Graph still knows is a configuration matter (consent, RBAC scope).
    assert alert.credentials_rejected is (not cached)


class AlertsSeen(BaseSyncObserver):
    def __init__(self) -> None:
        self.seen: list[Alert] = []

    def alert_raised(self, alert: Alert) -> None:
        self.seen.append(alert)


@pytest.mark.parametrize("how", ["next-link", "redirect"])
async def test_the_authorization_header_never_goes_to_another_host(how: str) -> None:
    world = GraphWorld(page_size=2)
    mailbox = world.add_mailbox()
    world.deliver(3, "links")
    token = world.credentials[mailbox.id].secret.reveal()
    if how == "next-link":
        world.fake.links_to("graph.attacker.example")
    else:
        world.fake.add_fault(
            attrs.evolve(
                GraphFault.error(302, "Found", method="GET", path="/messages/delta$"),
                headers={"Location": "https://graph.attacker.example/v1.0/steal"},
            )
        )

    report = await world.sync(mailbox)

    assert report.status is RunStatus.FAILED
    assert report.error is not None
    assert report.error.error_type == "ConfigurationError"
    assert token not in report.error.message
    assert "skiptoken" not in report.error.message, "link tokens stay out of messages"
    foreign = [r for r in world.fake.requests if r.host != "graph.microsoft.com"]
    assert foreign == [], "no request, and so no token, went to another host"
    assert all(r.authorized for r in world.fake.requests)


async def test_time_waited_in_place_is_bounded() -> None:
    # A Retry-After above the inline limit is not slept through.
    world = GraphWorld()
    mailbox = world.add_mailbox()
    world.deliver(1, "bounded")
    world.fake.add_fault(GraphFault.throttled("3600", method="GET", path="/messages/delta$"))
    started = time.monotonic()
    report = await world.sync(mailbox)
    assert time.monotonic() - started < 5
    assert report.error is not None
    assert report.error.retry_after == timedelta(hours=1)


async def test_no_token_or_secret_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    world = GraphWorld(page_size=1)
    world.use_msal()
    mailbox = world.add_mailbox()
    world.deliver(2, "logged")
    world.fake.add_fault(GraphFault.throttled("0", method="GET", path="/messages/delta$"))
    caplog.set_level(logging.DEBUG)

    report = await world.sync(mailbox)
    world.fake.expire_tokens()
    world.fake.revoke_consent(APP_ID)
    refused = await world.sync(mailbox)

    assert report.status is RunStatus.SUCCEEDED
    assert refused.status is RunStatus.FAILED
    issued = [r for r in world.fake.requests if r.authorized]
    assert issued, "requests were made with a token"
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert APP_SECRET not in text
    assert "fake." not in text, "no access token (the fake's start with 'fake.')"


async def test_a_throttling_storm_is_waited_out_and_the_sync_completes() -> None:
    world = GraphWorld(page_size=4)
    mailbox = world.add_mailbox()
    sent = world.deliver(8, "storm")
    world.fake.limit_requests(8, per=1.0)

    report = await world.sync(mailbox)

    assert report.status is RunStatus.SUCCEEDED
    assert world.incoming() == sent
    statuses = [r.status for r in world.fake.requests]
    assert 429 in statuses, "the budget was exceeded"
    busy = [r for r in world.fake.requests if r.status == 429]
    assert all(r.method in ("GET", "PATCH") for r in busy), (
        "reads and tagging, which are waited out and repeated"
    )


def certificate_pem(common_name: str) -> tuple[str, str]:
    """A throw-away RSA key and its self-signed certificate, as PEM text."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


async def test_an_application_certificate_gets_tokens_and_a_wrong_one_is_refused() -> None:
    world = GraphWorld()
    key, cert = certificate_pem("serversync test app")
    other_key, other_cert = certificate_pem("someone else")
    world.fake.add_app(APP_ID, certificate=cert)
    world.tokens = MsalClientCredentials(
        authority=world.fake.authority, http_client=world.fake.msal_http_client()
    )
    world.graph = world.transport()
    mailbox = world.add_mailbox()
    world.credentials[mailbox.id] = Credentials(
        username=APP_ID,
        secret=Secret(key + cert),
        kind=CredentialKind.OAUTH2_CLIENT_CERTIFICATE,
    )
    sent = world.deliver(1, "certified")

    report = await world.sync(mailbox)

    assert report.status is RunStatus.SUCCEEDED
    assert world.incoming() == sent
    world.credentials[mailbox.id] = Credentials(
        username=APP_ID,
        secret=Secret(other_key + other_cert),
        kind=CredentialKind.OAUTH2_CLIENT_CERTIFICATE,
    )
    world.graph = world.transport()
    refused = await world.sync(mailbox)
    assert refused.error is not None
    assert refused.error.error_type == "AuthenticationError"
    assert refused.error.server_code == "invalid_client"
    assert "PRIVATE KEY" not in refused.error.message


async def test_delegated_tokens_come_from_the_hosts_callback_and_are_renewed_there() -> None:
    world = GraphWorld()
    asked: list[tuple[str, bool]] = []
    held: dict[str, str] = {}

    async def delegated(mailbox: Mailbox, refresh: bool) -> str:
        # The host's own store of users' grants (an authorization-code flow) answers: the
        # token it holds, or a new one from the user's refresh token when asked to.
        asked.append((mailbox.email_address, refresh))
        if refresh or mailbox.email_address not in held:
            held[mailbox.email_address] = world.fake.issue_token(user=mailbox.email_address)
        return held[mailbox.email_address]

    world.tokens = TokenCallback(delegated)
    world.graph = world.transport()
    mailbox = world.add_mailbox()
    sent = world.deliver(1, "delegated")
    assert (await world.sync(mailbox)).status is RunStatus.SUCCEEDED
    world.fake.expire_tokens()
    later = world.deliver(1, "renewed")

    report = await world.sync(mailbox)

    assert report.status is RunStatus.SUCCEEDED
    assert world.incoming() == sent + later
    assert asked == [(ALICE, False), (ALICE, False), (ALICE, True)]
