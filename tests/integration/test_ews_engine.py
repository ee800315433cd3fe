"""The engine over the EWS transports against the EWS test server.

Storage, the record directory and credentials are the in-memory ones; mail is delivered with
the test server's own API, and what reached Exchange is read back from it (items, categories,
the outbox, the requests it answered).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

import attrs
import pytest

from serversync import (
    BaseSyncObserver,
    DecisionReason,
    EmailDirection,
    EmailStatus,
    ExpiredClaimPolicy,
    IncomingFilteringMethod,
    ItemOutcome,
    MailboxRunReport,
    MappingCredentials,
    OutcomeKind,
    RetryPolicy,
    RunStatus,
    SkipReason,
    SyncEngine,
    SyncSettings,
    Timeouts,
    Transports,
    Workload,
)
from serversync.adapters._faults import SimulatedCrash
from serversync.adapters.transports import EXCHANGE_SERVER_TYPES, TRACKED_CATEGORY, EwsTransport
from serversync.model import (
    Credentials,
    EntityName,
    Mailbox,
    MailboxId,
    MailboxTrackingFolder,
    RecordRef,
    Secret,
    ServerEndpoint,
    ServerType,
    TlsMode,
    TrackingFolderId,
)
from serversync.testing import (
    FakeClock,
    InMemoryDirectory,
    InMemoryStorage,
    a_mailbox,
    a_pending_email,
    a_profile,
    a_sent_email,
    a_user,
    an_email,
)
from serversync.testing.ews import Delay, DropConnection, EwsTestServer, ServerBusy

pytestmark = pytest.mark.integration

ALICE = "alice@contoso.example"
PASSWORD = "correct horse"
JANE = "jane@fabrikam.example"
ACCOUNT = RecordRef(EntityName.ACCOUNT.value, "account-1")


@attrs.define
class ExchangeWorld:
    """CRM storage in memory, mail on the EWS test server, wired as a host wires serversync."""

    server: EwsTestServer
    clock: FakeClock = attrs.Factory(FakeClock)
    storage: InMemoryStorage = attrs.Factory(InMemoryStorage)
    directory: InMemoryDirectory = attrs.Factory(InMemoryDirectory)
    credentials: dict[MailboxId, Credentials] = attrs.Factory(dict)
    ews: EwsTransport = attrs.field()

    @ews.default
    def _ews(self) -> EwsTransport:
        return EwsTransport(clock=self.clock)

    def add_mailbox(
        self,
        address: str = ALICE,
        *,
        filtering: IncomingFilteringMethod = IncomingFilteringMethod.ALL_EMAIL_MESSAGES,
        password: str = PASSWORD,
    ) -> Mailbox:
        self.server.add_mailbox(address, password=PASSWORD)
        record = a_user(address, filtering=filtering)
        self.directory.add(record)
        profile = a_profile(
            server_type=ServerType.EXCHANGE_SERVER,
            name="Exchange on premises",
            incoming=ServerEndpoint(host=self.server.url, tls=TlsMode.NONE),
        )
        self.storage.add_profile(profile)
        mailbox = a_mailbox(address, owner=record.ref, profile_id=profile.id)
        self.storage.add_mailbox(mailbox)
        self.credentials[mailbox.id] = Credentials(username=address, secret=Secret(password))
        return mailbox

    def engine(self, **overrides: object) -> SyncEngine:
        parts: dict[str, object] = {
            "repositories": self.storage,
            "directory": self.directory,
            "transports": Transports.by_server_type(
                incoming=dict.fromkeys(EXCHANGE_SERVER_TYPES, self.ews.incoming),
                outgoing=dict.fromkeys(EXCHANGE_SERVER_TYPES, self.ews.outgoing),
            ),
            "credentials": MappingCredentials(by_mailbox=self.credentials),
            "clock": self.clock,
        }
        parts.update(overrides)
        return SyncEngine(**parts)  # type: ignore[arg-type]

    async def sync(self, mailbox: Mailbox, **overrides: object) -> MailboxRunReport:
        async with self.engine(**overrides) as engine:
            (report,) = await engine.sync_mailbox(mailbox.id, workloads=[Workload.INCOMING])
        return report

    def deliver(
        self, count: int, tag: str, *, folder: str = "inbox", reply_at: int | None = None
    ) -> list[str]:
        """Deliver ``count`` messages; the one at ``reply_at`` answers the one before it, so
        the engine stores the messages before it (a group) before judging it."""
        mids: list[str] = []
        for n in range(count):
            mid = f"<{tag}-{n}@fabrikam.example>"
            answers = mids[-1] if n == reply_at else None
            data = an_email(
                sender=JANE, to=[ALICE], subject=f"{tag} {n}", message_id=mid, in_reply_to=answers
            )
            self.server.deliver(ALICE, data, folder=folder)
            mids.append(mid)
        return mids

    def incoming(self) -> list[str]:
        """The Message-IDs of the incoming emails stored, in storage order."""
        return [
            str(a.message_id)
            for a in self.storage.activities()
            if a.direction is EmailDirection.INCOMING
        ]


@pytest.fixture
async def world() -> AsyncIterator[ExchangeWorld]:
    async with EwsTestServer() as server:
        yield ExchangeWorld(server)


def kinds(items: Sequence[ItemOutcome]) -> list[OutcomeKind]:
    return [i.kind for i in items]


class CancelAfter(BaseSyncObserver):
    """Cancels the run once ``count`` messages were decided, like a shutdown in mid-batch."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.decided = 0
        self.task: asyncio.Task[object] | None = None

    def item_processed(self, outcome: ItemOutcome) -> None:
        self.decided += 1
        if self.decided == self.count and self.task is not None:
            self.task.cancel()


async def test_exchange_mail_is_tracked_exactly_once_across_an_interrupted_run(
    world: ExchangeWorld,
) -> None:
    mailbox = world.add_mailbox()
    sent = world.deliver(5, "interrupted", reply_at=2)

    observer = CancelAfter(2)
    async with world.engine(observer=observer) as engine:
        task: asyncio.Task[object] = asyncio.ensure_future(
            engine.sync_mailbox(mailbox.id, workloads=[Workload.INCOMING])
        )
        observer.task = task
        with pytest.raises(asyncio.CancelledError):
            await task
    assert world.incoming() == sent[:2], "two were stored before the cancel"

    report = await world.sync(mailbox)

    assert report.status is RunStatus.SUCCEEDED
    assert kinds(report.items) == [OutcomeKind.DUPLICATE] * 2 + [OutcomeKind.TRACKED] * 3
    assert world.incoming() == sent, "every message exactly once"
    items = world.server.items(ALICE)
    assert all(i.categories == (TRACKED_CATEGORY,) for i in items), "tagged once each"
    assert not any(i.is_read for i in items), "nothing is marked read"
    again = await world.sync(mailbox)
    assert again.items == (), "the cursor is past every message"


class DropAfter(BaseSyncObserver):
    """Drops the server's next connection once ``count`` messages were decided."""

    def __init__(self, server: EwsTestServer, count: int) -> None:
        self.server = server
        self.count = count
        self.decided = 0

    def item_processed(self, outcome: ItemOutcome) -> None:
        self.decided += 1
        if self.decided == self.count:
            self.server.inject(DropConnection())


async def test_a_failure_in_mid_answer_resumes_after_the_last_message_stored(
    world: ExchangeWorld,
) -> None:
    mailbox = world.add_mailbox()
    sent = world.deliver(5, "resumed", reply_at=2)

    failed = await world.sync(mailbox, observer=DropAfter(world.server, 2))

    assert failed.status is RunStatus.FAILED
    assert failed.error is not None
    assert failed.error.error_type == "ConnectionFailedError"
    assert kinds(failed.items) == [OutcomeKind.TRACKED] * 2
    # The cursor saved sits between two messages of one SyncFolderItems answer.
    report = await world.sync(mailbox)
    assert report.status is RunStatus.SUCCEEDED
    assert kinds(report.items) == [OutcomeKind.TRACKED] * 3, "no duplicates to dedupe"
    assert world.incoming() == sent


async def test_throttling_backs_off_for_exchanges_time_and_completes(world: ExchangeWorld) -> None:
    mailbox = world.add_mailbox()
    sent = world.deliver(3, "throttled")
    world.server.inject(ServerBusy(back_off_ms=20 * 60 * 1000), operation="SyncFolderItems")

    async with world.engine() as engine:
        busy = await engine.run_once(workloads=[Workload.INCOMING])
        (failed,) = busy.mailboxes
        assert failed.status is RunStatus.FAILED
        assert failed.error is not None
        assert failed.error.error_type == "ServerBusyError"
        assert failed.error.transient
        state = await world.storage.get_workload_state(mailbox.id, Workload.INCOMING)
        assert state is not None
        assert state.next_run_at is not None
        assert state.next_run_at >= failed.finished_at + timedelta(minutes=20), (
            "Exchange's BackOffMilliseconds, longer than the 5-minute back-off, wins"
        )

        world.clock.advance(timedelta(minutes=10))
        world.server.clear_requests()
        waiting = await engine.run_once(workloads=[Workload.INCOMING])
        assert [r.skip_reason for r in waiting.mailboxes] == [SkipReason.NOT_DUE]
        assert world.server.requests == (), "nothing is asked of a busy server"

        world.clock.advance(timedelta(minutes=11))
        done = await engine.run_once(workloads=[Workload.INCOMING])

    (completed,) = done.mailboxes
    assert completed.status is RunStatus.SUCCEEDED
    assert kinds(completed.items) == [OutcomeKind.TRACKED] * 3
    assert world.incoming() == sent
    assert world.server.operations().count("SyncFolderItems") == 1, "one call, no retry storm"


async def test_a_401_disables_the_workload_with_the_reason(world: ExchangeWorld) -> None:
    mailbox = world.add_mailbox(password="not-the-password")
    world.deliver(1, "refused")

    report = await world.sync(mailbox)

    assert report.status is RunStatus.FAILED
    assert report.error is not None
    assert report.error.error_type == "AuthenticationError"
    assert report.error.server_code == "HTTP 401"
    assert not report.error.transient
    assert "not-the-password" not in report.error.message
    stored = await world.storage.get_mailbox(mailbox.id)
    assert stored is not None
    assert not stored.enabled_for_incoming, "a permanent failure disables the workload"
    state = await world.storage.get_workload_state(mailbox.id, Workload.INCOMING)
    assert state is not None
    assert state.last_error is not None
    assert state.last_error.error_type == "AuthenticationError"
    assert world.incoming() == []


async def test_unrelated_mail_is_judged_on_headers_and_never_downloaded(
    world: ExchangeWorld,
) -> None:
    mailbox = world.add_mailbox(filtering=IncomingFilteringMethod.IN_RESPONSE_TO_CRM_EMAIL)
    world.storage.put_activity(
        a_sent_email(
            sender_mailbox=mailbox, to=[JANE], subject="Quote", message_id="<quote@contoso.example>"
        )
    )
    world.deliver(4, "newsletter")
    world.server.deliver(
        ALICE,
        an_email(
            sender=JANE,
            to=[ALICE],
            subject="RE: Quote",
            message_id="<reply@fabrikam.example>",
            in_reply_to="<quote@contoso.example>",
        ),
    )

    report = await world.sync(mailbox)

    assert kinds(report.items) == [OutcomeKind.NOT_RELEVANT] * 4 + [OutcomeKind.TRACKED]
    assert report.items[-1].reason is DecisionReason.CORRELATION_MATCH
    mime = [r for r in world.server.requests if "item:MimeContent" in r.field_uris]
    assert len(mime) == 1, "only the tracked reply is downloaded"
    tagged = [i.subject for i in world.server.items(ALICE) if i.categories]
    assert tagged == ["RE: Quote"], "only the tracked message is tagged"


async def test_folder_level_tracking_follows_the_folder_id_across_a_rename(
    world: ExchangeWorld,
) -> None:
    mailbox = world.add_mailbox(filtering=IncomingFilteringMethod.NO_EMAIL_MESSAGES)
    projects = world.server.create_folder(ALICE, "Projects")
    world.storage.add_tracking_folder(
        MailboxTrackingFolder(
            id=TrackingFolderId("rule-1"),
            mailbox_id=mailbox.id,
            exchange_folder_id=projects.id,
            exchange_folder_name="Projects",
            regarding=ACCOUNT,
        )
    )
    before = world.deliver(1, "filed", folder=projects.id)
    world.deliver(1, "inbox")

    first = await world.sync(mailbox)
    world.server.rename_folder(projects.id, "Projects 2026")
    after = world.deliver(1, "renamed", folder=projects.id)
    second = await world.sync(mailbox)

    tracked = [i for i in (*first.items, *second.items) if i.kind is OutcomeKind.TRACKED]
    assert [i.folder for i in tracked] == [projects.id, projects.id]
    assert [str(i.message_id) for i in tracked] == before + after
    assert all(a.regarding == ACCOUNT for a in world.storage.activities())
    assert [i.kind for i in first.items if i.folder == "INBOX"] == [OutcomeKind.NOT_RELEVANT]


async def test_an_email_sent_before_a_crash_is_not_sent_again_on_resend(
    world: ExchangeWorld,
) -> None:
    mailbox = world.add_mailbox()
    email = a_pending_email(sender_mailbox=mailbox, to=[JANE], subject="Proposal")
    world.storage.put_activity(email)
    resend = SyncSettings(retry=RetryPolicy(expired_claim_policy=ExpiredClaimPolicy.RESEND))

    # Exchange accepts the message; the process dies before the outcome is recorded.
    world.storage.faults.fail_next("record_send_outcome", SimulatedCrash())
    with pytest.raises(BaseExceptionGroup) as crashed:
        async with world.engine(settings=resend) as engine:
            await engine.sync_mailbox(mailbox.id, workloads=[Workload.OUTGOING])
    assert crashed.group_contains(SimulatedCrash)
    assert len(world.server.outbox) == 1

    # The claim expires; the resend policy sends it again, and the transport finds the copy.
    world.clock.advance(timedelta(hours=1))
    async with world.engine(settings=resend) as engine:
        await engine.sync_mailbox(mailbox.id, workloads=[Workload.OUTGOING])
        world.clock.advance(timedelta(minutes=10))
        (report,) = await engine.sync_mailbox(mailbox.id, workloads=[Workload.OUTGOING])

    assert report.status is RunStatus.SUCCEEDED
    stored = next(a for a in world.storage.activities() if a.id == email.id)
    assert stored.status is EmailStatus.SENT
    assert len(world.server.outbox) == 1, "Exchange sent it once"
    assert world.ews.stats.sends_reconciled == 1
    assert stored.message_id == world.server.outbox[0].message_id


async def test_a_send_cut_off_by_its_deadline_is_retried_and_found_in_sent_items(
    world: ExchangeWorld,
) -> None:
    mailbox = world.add_mailbox()
    email = a_pending_email(sender_mailbox=mailbox, to=[JANE], subject="Order")
    world.storage.put_activity(email)
    timeouts = Timeouts(send=timedelta(seconds=0.5))
    world.ews = EwsTransport(clock=world.clock, timeouts=timeouts)
    settings = SyncSettings(timeouts=timeouts)  # MARK_UNCERTAIN, the default policy
    # Exchange answers too late, and sends the message all the same.
    world.server.inject(Delay(1), operation="CreateItem")

    async with world.engine(settings=settings) as engine:
        (cut_off,) = await engine.sync_mailbox(mailbox.id, workloads=[Workload.OUTGOING])
        assert cut_off.status is RunStatus.FAILED
        pending = next(a for a in world.storage.activities() if a.id == email.id)
        assert pending.status is EmailStatus.PENDING_SEND, "retried, not marked uncertain"
        for _ in range(50):  # Exchange finishes the late send
            if world.server.outbox:
                break
            await asyncio.sleep(0.1)
        world.clock.advance(timedelta(minutes=10))
        (retried,) = await engine.sync_mailbox(mailbox.id, workloads=[Workload.OUTGOING])

    assert retried.status is RunStatus.SUCCEEDED
    stored = next(a for a in world.storage.activities() if a.id == email.id)
    assert stored.status is EmailStatus.SENT
    assert len(world.server.outbox) == 1, "sent once"
    assert world.ews.stats.sends_reconciled == 1
