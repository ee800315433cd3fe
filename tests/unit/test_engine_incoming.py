"""The engine's incoming workload over the in-memory adapters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import attrs
import pytest

from serversync import (
    AuthenticationError,
    ConnectionFailedError,
    CorrelationMethod,
    Credentials,
    DecisionReason,
    EmailDirection,
    EmailServerProfile,
    EmailStatus,
    ImapCheckpoint,
    IncomingBatch,
    IncomingDeliveryMethod,
    IncomingFilteringMethod,
    IncomingMailSession,
    Mailbox,
    OutcomeKind,
    RecordRef,
    RecordState,
    RunReport,
    RunStatus,
    SkipReason,
    SyncSettings,
    Timeouts,
    Transports,
    Workload,
)
from serversync.model import INBOX, Checkpoint, EmailApprovalStatus
from serversync.testing import (
    FaultPoint,
    InMemoryOutgoingTransport,
    InMemoryWorld,
    SimulatedCrash,
    a_contact,
    a_sent_email,
    an_email,
)

ALICE = "alice@contoso.example"
BOB = "bob@contoso.example"
SUPPORT = "support@contoso.example"
JANE = "jane@fabrikam.example"
TRACKED = "$ServerSyncTracked"


async def run(world: InMemoryWorld, **engine_args: object) -> RunReport:
    async with world.engine(**engine_args) as engine:
        return await engine.run_once(workloads=[Workload.INCOMING])


def items(report: RunReport, kind: OutcomeKind | None = None) -> list[object]:
    return [i for i in report.items() if kind is None or i.kind is kind]


async def test_reply_to_crm_email_is_tracked_with_correlation_and_regarding() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    world.add_record(a_contact(JANE))
    opportunity = RecordRef("opportunity", "opp-1")
    sent = a_sent_email(
        sender_mailbox=alice,
        to=[JANE],
        subject="Quote",
        message_id="<quote@contoso.example>",
        regarding=opportunity,
    )
    world.storage.put_activity(sent)
    world.deliver(
        ALICE,
        an_email(
            sender=JANE, to=[ALICE], subject="RE: Quote", in_reply_to="<quote@contoso.example>"
        ),
    )

    report = await run(world)

    (outcome,) = report.items()
    assert outcome.kind is OutcomeKind.TRACKED
    assert outcome.reason is DecisionReason.CORRELATION_MATCH
    stored = [a for a in world.storage.activities() if a.direction is EmailDirection.INCOMING]
    assert len(stored) == 1
    activity = stored[0]
    assert activity.id == outcome.activity_id
    assert activity.status is EmailStatus.RECEIVED
    assert activity.correlation_method is CorrelationMethod.IN_REPLY_TO
    assert activity.correlated_activity_id == sent.id
    assert activity.parent_activity_id == sent.id
    assert activity.regarding == opportunity
    assert activity.receiving_mailbox_id == alice.id
    assert activity.accepting_entity == alice.owner
    sender_party = activity.parties[0]
    assert sender_party.record == a_contact(JANE).ref
    assert TRACKED in world.server.messages(ALICE)[0].keywords


async def test_unrelated_mail_is_not_tracked_and_the_cursor_moves_past_it() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    world.deliver(ALICE, an_email(sender=JANE, to=[ALICE], subject="Newsletter"))

    report = await run(world)

    (outcome,) = report.items()
    assert outcome.kind is OutcomeKind.NOT_RELEVANT
    assert outcome.reason is DecisionReason.NO_CORRELATION_MATCH
    assert world.storage.activities() == []
    assert await world.storage.load_checkpoint(alice.id, INBOX) is not None
    world.clock.advance(timedelta(minutes=5))
    again = await run(world)
    assert list(again.items()) == [], "a rejected message must not be evaluated again"


async def test_same_message_in_two_mailboxes_is_stored_once_and_tagged_in_both() -> None:
    world = InMemoryWorld()
    world.add_user(BOB)
    support = world.add_queue(SUPPORT)
    message = an_email(sender=JANE, to=[SUPPORT], cc=[BOB], subject="Broken order")
    assert sorted(world.send_mail(message)) == [BOB, SUPPORT]

    report = await run(world)

    kinds = sorted(i.kind.value for i in report.items())
    assert kinds == ["duplicate", "tracked"]
    duplicate = next(i for i in report.items() if i.kind is OutcomeKind.DUPLICATE)
    assert duplicate.reason is DecisionReason.DUPLICATE
    (activity,) = world.storage.activities()
    assert activity.accepting_entity == support.owner
    assert [q.queue for q in world.storage.queue_items()] == [support.owner]
    assert TRACKED in world.server.messages(BOB)[0].keywords
    assert TRACKED in world.server.messages(SUPPORT)[0].keywords


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"state": RecordState.INACTIVE}, SkipReason.INACTIVE),
        ({"profile_id": None}, SkipReason.NO_PROFILE),
        ({"approval": EmailApprovalStatus.PENDING_APPROVAL}, SkipReason.NOT_APPROVED),
        ({"enabled_for_incoming": False}, SkipReason.WORKLOAD_DISABLED),
        (
            {"incoming_delivery_method": IncomingDeliveryMethod.NONE},
            SkipReason.DELIVERY_METHOD_NOT_SERVER_SIDE_SYNC,
        ),
    ],
)
async def test_mailboxes_that_may_not_run_are_skipped_without_touching_the_server(
    change: dict[str, Any], reason: SkipReason
) -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    world.storage.add_mailbox(attrs.evolve(alice, **change))
    world.deliver(ALICE, an_email(to=[ALICE]))

    report = await run(world)

    (mailbox_report,) = report.mailboxes
    assert mailbox_report.status is RunStatus.SKIPPED
    assert mailbox_report.skip_reason is reason
    assert world.server.faults.calls == [], "a skipped mailbox must not connect"
    assert world.storage.activities() == []


async def test_inactive_profile_skips_its_mailboxes() -> None:
    world = InMemoryWorld()
    world.add_user(ALICE)
    world.storage.add_profile(attrs.evolve(world.profile, state=RecordState.INACTIVE))
    report = await run(world)
    assert report.mailboxes[0].skip_reason is SkipReason.PROFILE_INACTIVE


async def test_one_failing_mailbox_does_not_stop_the_others() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    world.add_user(BOB, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    world.server.set_password(ALICE, "changed")
    world.deliver(ALICE, an_email(to=[ALICE]))
    world.deliver(BOB, an_email(to=[BOB]))

    report = await run(world)

    by_mailbox = {r.mailbox_id: r for r in report.mailboxes}
    failed = by_mailbox[alice.id]
    assert failed.status is RunStatus.FAILED
    assert failed.error is not None
    assert failed.error.error_type == AuthenticationError.__name__
    assert not failed.error.transient
    assert [i.kind for i in report.items()] == [OutcomeKind.TRACKED]
    state = await world.storage.get_workload_state(alice.id, Workload.INCOMING)
    assert state is not None
    assert state.consecutive_failures == 1
    assert state.next_run_at == world.clock.now() + timedelta(minutes=5)


async def test_transient_failure_mid_batch_keeps_stored_mail_and_resumes_without_duplicates() -> (
    None
):
    world = InMemoryWorld()
    alice = world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    for n in range(4):
        world.deliver(ALICE, an_email(to=[ALICE], subject=f"message {n}"))
    world.server.faults.fail_next("fetch_message", ConnectionFailedError("reset"), skip=2)

    first = await run(world)

    assert first.mailboxes[0].status is RunStatus.FAILED
    assert [i.subject for i in first.items()] == ["message 0", "message 1"]
    saved = await world.storage.load_checkpoint(alice.id, INBOX)
    assert isinstance(saved, ImapCheckpoint)
    assert saved.last_uid == 2, "the cursor stops after the last stored message"

    world.clock.advance(timedelta(minutes=5))
    second = await run(world)

    assert second.mailboxes[0].status is RunStatus.SUCCEEDED
    assert [i.subject for i in second.items()] == ["message 2", "message 3"]
    subjects = sorted(a.subject for a in world.storage.activities())
    assert subjects == [f"message {n}" for n in range(4)]
    state = await world.storage.get_workload_state(alice.id, Workload.INCOMING)
    assert state is not None
    assert state.consecutive_failures == 0


async def test_malformed_headers_are_recorded_and_the_rest_of_the_batch_is_processed() -> None:
    world = InMemoryWorld()
    world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    world.deliver(ALICE, b"\r\n\r\nno headers at all")
    world.deliver(ALICE, an_email(to=[ALICE], subject="fine"))

    report = await run(world)

    kinds = [i.kind for i in report.items()]
    assert kinds == [OutcomeKind.FAILED, OutcomeKind.TRACKED]
    failed = next(iter(report.items()))
    assert failed.error is not None
    assert failed.error.error_type == "MalformedMessageError"
    assert report.mailboxes[0].status is RunStatus.SUCCEEDED


async def test_mail_received_before_process_email_from_is_skipped() -> None:
    world = InMemoryWorld()
    world.add_user(
        ALICE,
        filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES,
        process_email_received_after=InMemoryWorld().clock.now() + timedelta(hours=1),
    )
    world.deliver(ALICE, an_email(to=[ALICE], subject="old"))
    world.clock.advance(timedelta(hours=2))
    world.deliver(ALICE, an_email(to=[ALICE], subject="new"))

    report = await run(world)

    assert [(i.subject, i.kind) for i in report.items()] == [
        (None, OutcomeKind.SKIPPED),
        ("new", OutcomeKind.TRACKED),
    ]


async def test_uidvalidity_change_relists_the_folder_without_duplicates() -> None:
    world = InMemoryWorld()
    world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    for n in range(3):
        world.deliver(ALICE, an_email(to=[ALICE], subject=f"m{n}"))
    await run(world)
    assert len(world.storage.activities()) == 3

    world.server.change_uidvalidity(ALICE)
    world.deliver(ALICE, an_email(to=[ALICE], subject="after"))
    world.clock.advance(timedelta(minutes=5))
    report = await run(world)

    kinds = [i.kind for i in report.items()]
    assert kinds == [OutcomeKind.DUPLICATE] * 3 + [OutcomeKind.TRACKED]
    assert len(world.storage.activities()) == 4


async def test_message_without_message_id_is_stored_once_across_a_crash() -> None:
    world = InMemoryWorld()
    world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    world.deliver(ALICE, an_email(to=[ALICE], subject="no id", message_id=""))
    # Die right after the email was stored, before the cursor could move.
    world.storage.faults.fail_next("add_incoming", SimulatedCrash(), point=FaultPoint.AFTER)

    with pytest.raises(BaseExceptionGroup) as crashed:
        await run(world)
    assert crashed.group_contains(SimulatedCrash)
    (stored,) = world.storage.activities()
    assert stored.message_id is not None
    assert stored.message_id.endswith("@serversync.invalid>")

    world.clock.advance(timedelta(minutes=11))  # the dead engine's lease expires
    report = await run(world)
    (outcome,) = report.items()
    assert outcome.kind is OutcomeKind.DUPLICATE
    assert len(world.storage.activities()) == 1


async def test_a_workload_runs_again_only_when_due() -> None:
    world = InMemoryWorld()
    world.add_user(ALICE)
    await run(world)
    world.clock.advance(timedelta(minutes=4))
    early = await run(world)
    assert early.mailboxes[0].skip_reason is SkipReason.NOT_DUE
    world.clock.advance(timedelta(minutes=1))
    due = await run(world)
    assert due.mailboxes[0].status is RunStatus.SUCCEEDED


async def test_a_mailbox_leased_by_another_engine_is_skipped() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    now = world.clock.now()
    taken = await world.storage.try_acquire_lease(
        f"{alice.id}/incoming", owner="other", now=now, until=now + timedelta(minutes=10)
    )
    assert taken
    report = await run(world)
    assert report.mailboxes[0].skip_reason is SkipReason.LEASED_ELSEWHERE


async def test_sync_mailbox_runs_one_mailbox_now() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    world.add_user(BOB, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    world.deliver(ALICE, an_email(to=[ALICE]))
    world.deliver(BOB, an_email(to=[BOB]))
    async with world.engine() as engine:
        reports = await engine.sync_mailbox(alice.id, workloads=[Workload.INCOMING])
        again = await engine.sync_mailbox(alice.id, workloads=[Workload.INCOMING])
    assert [r.mailbox_id for r in reports] == [alice.id]
    assert [i.kind for i in reports[0].items] == [OutcomeKind.TRACKED]
    assert again[0].status is RunStatus.SUCCEEDED, "force ignores the schedule"
    assert len(world.storage.activities()) == 1


class _HangingSession:
    def __init__(self, inner: IncomingMailSession) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def list_new(
        self, folder: str, checkpoint: Checkpoint | None, *, limit: int
    ) -> IncomingBatch:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


class _HangingTransport:
    def __init__(self, world: InMemoryWorld) -> None:
        self._inner = world.transports().incoming_for(world.profile)

    @asynccontextmanager
    async def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AsyncIterator[IncomingMailSession]:
        async with self._inner.open(mailbox, profile, credentials) as session:
            yield _HangingSession(session)  # type: ignore[misc]


def _hanging(world: InMemoryWorld) -> Transports:
    return Transports.for_all(
        incoming=_HangingTransport(world), outgoing=InMemoryOutgoingTransport(world.server)
    )


async def test_a_stuck_server_times_out_as_a_transient_failure() -> None:
    world = InMemoryWorld(
        settings=SyncSettings(timeouts=Timeouts(command=timedelta(milliseconds=50)))
    )
    world.add_user(ALICE)
    report = await run(world, transports=_hanging(world))
    (mailbox_report,) = report.mailboxes
    assert mailbox_report.status is RunStatus.FAILED
    assert mailbox_report.error is not None
    assert mailbox_report.error.error_type == "OperationTimeoutError"
    assert mailbox_report.error.transient


async def test_cancelling_a_run_leaves_no_half_written_state() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    async with world.engine(transports=_hanging(world)) as engine:
        task = asyncio.ensure_future(engine.run_once(workloads=[Workload.INCOMING]))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await world.storage.load_checkpoint(alice.id, INBOX) is None
    assert await world.storage.get_workload_state(alice.id, Workload.INCOMING) is None
    # The lease was released on the way out, so a new engine can run at once.
    world.deliver(ALICE, an_email(to=[ALICE]))
    report = await run(world)
    assert report.mailboxes[0].status is RunStatus.SUCCEEDED


async def test_engine_refuses_use_outside_its_context() -> None:
    world = InMemoryWorld()
    engine = world.engine()
    with pytest.raises(RuntimeError, match="async with"):
        await engine.run_once()
    async with engine:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        await engine.run_once()
