"""Dynamics' error policy (spec §5, behaviours 5 and 6 of §12): permanent errors disable a
workload at once with an alert; transient ones postpone it, ten in a row disable it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from serversync import (
    AlertKind,
    AlertLevel,
    AuthenticationError,
    ConfigurationError,
    ConnectionFailedError,
    Credentials,
    EmailServerProfile,
    ErrorRecord,
    ErrorScope,
    IncomingFilteringMethod,
    Mailbox,
    MailboxRunReport,
    MessageRejectedError,
    OperationTimeoutError,
    RetryPolicy,
    RunStatus,
    ServerBusyError,
    SkipReason,
    SyncSettings,
    TestStatus,
    Workload,
    WorkloadState,
)
from serversync.planning import disables_workload, state_after_failure
from serversync.testing import InMemoryWorld, a_contact, a_pending_email
from serversync.testing import an_email as email

from .engine_support import Recorder

ALICE = "alice@contoso.example"
BOB = "bob@contoso.example"
CUSTOMER = "jane@fabrikam.example"
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
FIVE_MINUTES = timedelta(minutes=5)


async def _incoming(world: InMemoryWorld, recorder: Recorder | None = None) -> RunStatus:
    async with world.engine(observer=recorder or Recorder()) as engine:
        report = await engine.run_once(workloads=[Workload.INCOMING])
    (only,) = report.mailboxes
    return only.status


async def _state(world: InMemoryWorld, mailbox: Mailbox) -> WorkloadState:
    state = await world.storage.get_workload_state(mailbox.id, Workload.INCOMING)
    assert state is not None
    return state


async def _mailbox(world: InMemoryWorld, mailbox: Mailbox) -> Mailbox:
    stored = await world.storage.get_mailbox(mailbox.id)
    assert stored is not None
    return stored


def _connects(world: InMemoryWorld) -> int:
    return sum(1 for operation, _ in world.server.faults.calls if operation == "connect")


# -- behaviour 5: a permanent error disables the workload at once ----------------------------


async def test_a_permanent_error_disables_the_workload_at_once_with_an_error_alert() -> None:
    """behaviour_5 of spec §12: a permanent error disables the workload with an Error alert."""
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    world.server.set_password(ALICE, "changed by the user")
    recorder = Recorder()

    assert await _incoming(world, recorder) is RunStatus.FAILED

    stored = await _mailbox(world, alice)
    assert not stored.enabled_for_incoming
    assert stored.incoming_status is TestStatus.FAILURE
    assert stored.enabled_for_outgoing, "disabling is per workload"
    assert stored.outgoing_status is TestStatus.NOT_RUN
    state = await _state(world, alice)
    assert state.last_error is not None
    assert state.last_error.error_type == "AuthenticationError", "the reason is recorded"
    assert state.consecutive_failures == 1
    (alert,) = recorder.alerts_of(AlertKind.WORKLOAD_DISABLED)
    assert alert.kind is AlertKind.WORKLOAD_DISABLED
    assert alert.level is AlertLevel.ERROR
    assert (alert.mailbox_id, alert.profile_id, alert.workload) == (
        alice.id,
        world.profile.id,
        Workload.INCOMING,
    ), "the alert is for the mailbox's and the profile's Alerts walls"
    assert alert.raised_at == world.clock.now()
    assert alert.error == state.last_error
    assert "disabled for receiving email" in alert.message
    assert "login refused" in alert.message
    assert "changed by the user" not in alert.message, "no secret in an alert"


async def test_a_disabled_workload_is_not_retried_so_a_revoked_credential_never_loops() -> None:
    world = InMemoryWorld()
    world.add_user(ALICE)
    world.server.set_password(ALICE, "revoked")
    start = world.clock.now()
    stop = asyncio.Event()

    class StopAfterADay(Recorder):
        def mailbox_run_finished(self, report: MailboxRunReport) -> None:
            super().mailbox_run_finished(report)
            if world.clock.now() - start > timedelta(days=1):
                stop.set()

    recorder = StopAfterADay()
    async with world.engine(observer=recorder) as engine, asyncio.timeout(10):
        await engine.run_forever(stop=stop)
    assert _connects(world) == 1, "one login attempt in a day of runs"
    assert len(recorder.alerts_of(AlertKind.WORKLOAD_DISABLED)) == 1
    skipped = [r for r in recorder.runs if r.workload is Workload.INCOMING][1:]
    assert len(skipped) > 2000, "the engine kept running"
    assert {r.skip_reason for r in skipped} == {SkipReason.WORKLOAD_DISABLED}


async def test_the_other_workload_goes_on_when_one_is_disabled() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    world.add_record(a_contact(CUSTOMER))
    world.storage.put_activity(a_pending_email(sender_mailbox=alice, to=[CUSTOMER], subject="hi"))
    world.server.faults.fail_next("connect", AuthenticationError("token revoked"))

    async with world.engine() as engine:
        report = await engine.run_once()
    by_workload = {r.workload: r for r in report.mailboxes}
    assert by_workload[Workload.INCOMING].status is RunStatus.FAILED
    assert by_workload[Workload.OUTGOING].status is RunStatus.SUCCEEDED
    assert len(world.server.outbox) == 1
    stored = await _mailbox(world, alice)
    assert (stored.enabled_for_incoming, stored.enabled_for_outgoing) == (False, True)


async def test_missing_credentials_disable_the_workload() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)

    class NoCredentials:
        async def resolve(
            self, mailbox: Mailbox, profile: EmailServerProfile, workload: Workload
        ) -> Credentials | None:
            raise ConfigurationError("no password is stored for the mailbox")

    async with world.engine(credentials=NoCredentials()) as engine:
        await engine.run_once(workloads=[Workload.INCOMING])
    assert not (await _mailbox(world, alice)).enabled_for_incoming
    assert _connects(world) == 0


async def test_disabling_alerts_once_when_the_workload_was_already_disabled() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    recorder = Recorder()

    class DisabledMeanwhile:
        """An administrator disables the workload while the cycle runs; then it fails."""

        async def resolve(
            self, mailbox: Mailbox, profile: EmailServerProfile, workload: Workload
        ) -> Credentials | None:
            record = ErrorRecord(error_type="X", message="x", transient=False, scope="mailbox")
            await world.storage.disable_workload(mailbox.id, workload, error=record, at=NOW)
            raise AuthenticationError("login refused")

    async with world.engine(credentials=DisabledMeanwhile(), observer=recorder) as engine:
        report = await engine.run_once(workloads=[Workload.INCOMING])
    assert report.mailboxes[0].status is RunStatus.FAILED
    assert not (await _mailbox(world, alice)).enabled_for_incoming
    assert recorder.alerts_of(AlertKind.WORKLOAD_DISABLED) == [], (
        "whoever disabled it first has alerted"
    )


# -- behaviour 6: transient errors postpone; the tenth in a row disables -----------------------


async def test_transient_failures_postpone_by_five_minutes_and_count_up() -> None:
    """behaviour_6 of spec §12 (with the tests below): transient errors postpone the workload,
    the tenth in a row disables it."""
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    world.server.faults.fail_next("connect", ConnectionFailedError("reset"), times=3)

    for expected in (1, 2, 3):
        assert await _incoming(world) is RunStatus.FAILED
        state = await _state(world, alice)
        assert state.consecutive_failures == expected
        assert state.next_run_at == world.clock.now() + FIVE_MINUTES
        world.clock.advance(timedelta(minutes=4))
        assert await _incoming(world) is RunStatus.SKIPPED, "postponed, not retried at once"
        world.clock.advance(timedelta(minutes=1))
    assert (await _mailbox(world, alice)).enabled_for_incoming


async def test_a_success_resets_the_count() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    world.deliver(ALICE, email(to=[ALICE]))
    world.server.faults.fail_next("connect", ConnectionFailedError("reset"), times=9)
    for _ in range(9):
        assert await _incoming(world) is RunStatus.FAILED
        world.clock.advance(FIVE_MINUTES)
    assert (await _state(world, alice)).consecutive_failures == 9

    assert await _incoming(world) is RunStatus.SUCCEEDED
    state = await _state(world, alice)
    assert state.consecutive_failures == 0
    assert state.last_error is not None, "the last error stays for the record"
    assert len(world.storage.activities()) == 1

    world.server.faults.fail_next("connect", ConnectionFailedError("reset"), times=9)
    for _ in range(9):
        world.clock.advance(FIVE_MINUTES)
        assert await _incoming(world) is RunStatus.FAILED
    assert (await _mailbox(world, alice)).enabled_for_incoming, "nine in a row, not ten"


async def test_the_tenth_transient_failure_in_a_row_counts_as_permanent() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    world.server.faults.fail_next("connect", ConnectionFailedError("connection reset"), times=11)
    recorder = Recorder()
    for _ in range(9):
        assert await _incoming(world, recorder) is RunStatus.FAILED
        world.clock.advance(FIVE_MINUTES)
    assert (await _mailbox(world, alice)).enabled_for_incoming
    assert recorder.alerts_of(AlertKind.WORKLOAD_DISABLED) == []

    assert await _incoming(world, recorder) is RunStatus.FAILED
    stored = await _mailbox(world, alice)
    assert not stored.enabled_for_incoming
    assert stored.incoming_status is TestStatus.FAILURE
    (alert,) = recorder.alerts_of(AlertKind.WORKLOAD_DISABLED)
    assert alert.kind is AlertKind.WORKLOAD_DISABLED
    assert "10 failures in a row" in alert.message
    assert "connection reset" in alert.message

    world.clock.advance(timedelta(hours=1))
    async with world.engine() as engine:
        report = await engine.run_once(workloads=[Workload.INCOMING])
    assert report.mailboxes[0].skip_reason is SkipReason.WORKLOAD_DISABLED
    assert _connects(world) == 10


async def test_the_number_of_transient_failures_is_a_setting() -> None:
    world = InMemoryWorld(settings=SyncSettings(retry=RetryPolicy(max_transient_failures=2)))
    alice = world.add_user(ALICE)
    world.server.faults.fail_next("connect", ConnectionFailedError("reset"), times=2)
    await _incoming(world)
    world.clock.advance(FIVE_MINUTES)
    assert (await _mailbox(world, alice)).enabled_for_incoming
    await _incoming(world)
    assert not (await _mailbox(world, alice)).enabled_for_incoming


async def test_a_server_retry_after_wins_when_longer() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    world.server.faults.fail_next(
        "connect", ServerBusyError("busy", retry_after=timedelta(minutes=20))
    )
    await _incoming(world)
    assert (await _state(world, alice)).next_run_at == world.clock.now() + timedelta(minutes=20)


async def test_a_timeout_uses_the_timeout_backoff() -> None:
    policy = RetryPolicy(mailbox_timeout_backoff=timedelta(minutes=2))
    world = InMemoryWorld(settings=SyncSettings(retry=policy))
    alice = world.add_user(ALICE)
    world.server.faults.fail_next("connect", OperationTimeoutError("no answer in 30 s"))
    await _incoming(world)
    assert (await _state(world, alice)).next_run_at == world.clock.now() + timedelta(minutes=2)
    world.clock.advance(timedelta(minutes=2))
    world.server.faults.fail_next("connect", ConnectionFailedError("reset"))
    await _incoming(world)
    state = await _state(world, alice)
    assert state.next_run_at == world.clock.now() + FIVE_MINUTES, "other errors: 5 minutes"
    assert state.consecutive_failures == 2


async def test_errors_of_one_message_never_disable_a_workload() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    world.server.faults.fail_next(
        "list_new", MessageRejectedError("the server refuses this message"), times=12
    )
    for _ in range(12):
        assert await _incoming(world) is RunStatus.FAILED
        world.clock.advance(FIVE_MINUTES)
    state = await _state(world, alice)
    assert state.consecutive_failures == 12
    assert state.last_error is not None
    assert state.last_error.scope == ErrorScope.ITEM.value
    assert (await _mailbox(world, alice)).enabled_for_incoming


async def test_an_unexpected_exception_is_transient() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    world.server.faults.fail_next("connect", RuntimeError("a bug"))
    assert await _incoming(world) is RunStatus.FAILED
    assert (await _mailbox(world, alice)).enabled_for_incoming
    assert (await _state(world, alice)).next_run_at == world.clock.now() + FIVE_MINUTES


async def test_the_outgoing_workload_is_disabled_with_its_own_words() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    world.add_record(a_contact(CUSTOMER))
    email_to_send = a_pending_email(sender_mailbox=alice, to=[CUSTOMER], subject="hi")
    world.storage.put_activity(email_to_send)
    world.server.set_password(ALICE, "changed")
    recorder = Recorder()
    async with world.engine(observer=recorder) as engine:
        await engine.run_once(workloads=[Workload.OUTGOING])
    stored = await _mailbox(world, alice)
    assert (stored.enabled_for_outgoing, stored.outgoing_status) == (False, TestStatus.FAILURE)
    assert stored.enabled_for_incoming
    (alert,) = recorder.alerts_of(AlertKind.WORKLOAD_DISABLED)
    assert alert.workload is Workload.OUTGOING
    assert "disabled for sending email" in alert.message
    kept = await world.storage.get_activity(email_to_send.id)
    assert kept is not None
    assert kept.delivery_attempts == 0, "the email was given back, not failed"


# -- the pure policy ---------------------------------------------------------------------------


def _record(exc: BaseException) -> ErrorRecord:
    return ErrorRecord.from_exception(exc)


POLICY = RetryPolicy()


@pytest.mark.parametrize(
    "error",
    [
        AuthenticationError("refused"),
        ConfigurationError("no profile"),
        AuthenticationError("refused", scope=ErrorScope.MAILBOX),
    ],
)
def test_permanent_mailbox_errors_disable_at_the_first_failure(error: Exception) -> None:
    assert disables_workload(_record(error), consecutive_failures=1, policy=POLICY)


@pytest.mark.parametrize(
    "error",
    [
        MessageRejectedError("554"),
        AuthenticationError("refused", scope=ErrorScope.ITEM),
        ConfigurationError("unsupported server type", scope=ErrorScope.ENGINE),
        ConnectionFailedError("reset", scope=ErrorScope.ENGINE),
    ],
)
def test_errors_beyond_the_mailbox_never_disable(error: Exception) -> None:
    assert not disables_workload(_record(error), consecutive_failures=50, policy=POLICY)


@pytest.mark.parametrize(("failures", "disabled"), [(1, False), (9, False), (10, True), (11, True)])
def test_transient_errors_disable_from_the_tenth_in_a_row(failures: int, disabled: bool) -> None:
    error = _record(ConnectionFailedError("reset"))
    assert disables_workload(error, consecutive_failures=failures, policy=POLICY) is disabled


def test_the_timeout_backoff_applies_only_to_timeouts_and_only_when_set() -> None:
    error = _record(OperationTimeoutError("slow"))
    with_setting = RetryPolicy(mailbox_timeout_backoff=timedelta(minutes=1))
    state = WorkloadState()
    assert state_after_failure(
        state, error, now=NOW, policy=with_setting, timed_out=True
    ).next_run_at == NOW + timedelta(minutes=1)
    assert state_after_failure(
        state, error, now=NOW, policy=with_setting, timed_out=False
    ).next_run_at == NOW + timedelta(minutes=5)
    assert state_after_failure(
        state, error, now=NOW, policy=RetryPolicy(), timed_out=True
    ).next_run_at == NOW + timedelta(minutes=5), "unset: the transient back-off"


def test_retry_after_beats_a_shorter_timeout_backoff() -> None:
    busy = _record(ServerBusyError("busy", retry_after=timedelta(minutes=3)))
    policy = RetryPolicy(mailbox_timeout_backoff=timedelta(minutes=1))
    state = state_after_failure(WorkloadState(), busy, now=NOW, policy=policy, timed_out=True)
    assert state.next_run_at == NOW + timedelta(minutes=3)


def test_retry_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="max_transient_failures"):
        RetryPolicy(max_transient_failures=0)
    with pytest.raises(ValueError, match="mailbox_timeout_backoff"):
        RetryPolicy(mailbox_timeout_backoff=timedelta(0))
