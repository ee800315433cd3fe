"""Pure scheduling and retry decisions of :mod:`serversync.planning`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from serversync.errors import (
    AuthenticationError,
    ConnectionFailedError,
    MessageRejectedError,
    ServerBusyError,
)
from serversync.model import (
    ActDeliveryMethod,
    EmailApprovalStatus,
    EmailServerProfile,
    EntityName,
    ErrorRecord,
    IncomingDeliveryMethod,
    Mailbox,
    OutgoingDeliveryMethod,
    RecordRef,
    RecordState,
    SkipReason,
    TestStatus,
    Workload,
    WorkloadState,
)
from serversync.planning import (
    next_run_after_success,
    next_send_attempt,
    skip_reason,
    state_after_failure,
)
from serversync.settings import OrganizationSettings, RetryPolicy, Schedule
from serversync.testing import a_mailbox, a_profile

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
USER = RecordRef(EntityName.SYSTEMUSER.value, "alice")
QUEUE = RecordRef(EntityName.QUEUE.value, "support")
ORG = OrganizationSettings()


def _user_mailbox(**overrides: Any) -> Mailbox:
    return attrs.evolve(a_mailbox("alice@contoso.example", owner=USER), **overrides)


def _queue_mailbox(**overrides: Any) -> Mailbox:
    return attrs.evolve(a_mailbox("support@contoso.example", owner=QUEUE), **overrides)


def _skip(
    mailbox: Mailbox,
    *,
    profile: EmailServerProfile | None = None,
    workload: Workload = Workload.INCOMING,
    state: WorkloadState | None = None,
    org: OrganizationSettings = ORG,
    no_profile: bool = False,
) -> SkipReason | None:
    return skip_reason(
        mailbox,
        None if no_profile else (profile or a_profile()),
        workload,
        state,
        now=NOW,
        org=org,
    )


# -- skip_reason ------------------------------------------------------------------------------


@pytest.mark.parametrize("workload", [Workload.INCOMING, Workload.OUTGOING])
def test_a_healthy_approved_mailbox_runs(workload: Workload) -> None:
    assert _skip(_user_mailbox(), workload=workload) is None
    assert _skip(_queue_mailbox(), workload=workload) is None


def test_inactive_mailbox_is_skipped() -> None:
    assert _skip(_user_mailbox(state=RecordState.INACTIVE)) is SkipReason.INACTIVE


def test_mailbox_without_profile_id_is_skipped() -> None:
    assert _skip(_user_mailbox(profile_id=None)) is SkipReason.NO_PROFILE


def test_mailbox_whose_profile_is_missing_is_skipped() -> None:
    assert _skip(_user_mailbox(), no_profile=True) is SkipReason.NO_PROFILE


def test_inactive_profile_is_skipped() -> None:
    profile = a_profile(state=RecordState.INACTIVE)
    assert _skip(_user_mailbox(), profile=profile) is SkipReason.PROFILE_INACTIVE


def test_forward_mailbox_cannot_send() -> None:
    forward = a_mailbox("forward@contoso.example", is_forward_mailbox=True)
    assert _skip(forward, workload=Workload.OUTGOING) is SkipReason.FORWARD_MAILBOX_CANNOT_SEND
    assert _skip(forward, workload=Workload.INCOMING) is None


@pytest.mark.parametrize(
    ("workload", "overrides"),
    [
        (Workload.INCOMING, {"incoming_delivery_method": IncomingDeliveryMethod.NONE}),
        (Workload.INCOMING, {"incoming_delivery_method": IncomingDeliveryMethod.OUTLOOK}),
        (Workload.INCOMING, {"incoming_delivery_method": IncomingDeliveryMethod.FORWARD_MAILBOX}),
        (Workload.OUTGOING, {"outgoing_delivery_method": OutgoingDeliveryMethod.NONE}),
        (Workload.OUTGOING, {"outgoing_delivery_method": OutgoingDeliveryMethod.OUTLOOK}),
        (Workload.ACT, {"act_delivery_method": ActDeliveryMethod.NONE}),
        (Workload.ACT, {"act_delivery_method": ActDeliveryMethod.OUTLOOK}),
    ],
)
def test_delivery_method_other_than_server_side_sync_is_skipped(
    workload: Workload, overrides: dict[str, Any]
) -> None:
    mailbox = _user_mailbox(**overrides)
    assert _skip(mailbox, workload=workload) is SkipReason.DELIVERY_METHOD_NOT_SERVER_SIDE_SYNC


def test_delivery_method_of_one_workload_does_not_affect_the_other() -> None:
    mailbox = _user_mailbox(outgoing_delivery_method=OutgoingDeliveryMethod.NONE)
    assert _skip(mailbox, workload=Workload.INCOMING) is None


def test_act_through_server_side_sync_may_run_once_tested() -> None:
    mailbox = _user_mailbox(
        act_delivery_method=ActDeliveryMethod.SERVER_SIDE_SYNC, act_status=TestStatus.SUCCESS
    )
    assert _skip(mailbox, workload=Workload.ACT) is None


@pytest.mark.parametrize("status", [TestStatus.NOT_RUN, TestStatus.FAILURE])
def test_act_waits_for_a_passed_act_test(status: TestStatus) -> None:
    mailbox = _user_mailbox(
        act_delivery_method=ActDeliveryMethod.SERVER_SIDE_SYNC, act_status=status
    )
    assert _skip(mailbox, workload=Workload.ACT) is SkipReason.ACT_NOT_TESTED


@pytest.mark.parametrize(
    ("workload", "flag"),
    [
        (Workload.INCOMING, "enabled_for_incoming"),
        (Workload.OUTGOING, "enabled_for_outgoing"),
        (Workload.ACT, "enabled_for_act"),
    ],
)
def test_disabled_workload_is_skipped(workload: Workload, flag: str) -> None:
    mailbox = _user_mailbox(act_delivery_method=ActDeliveryMethod.SERVER_SIDE_SYNC, **{flag: False})
    assert _skip(mailbox, workload=workload) is SkipReason.WORKLOAD_DISABLED
    other = Workload.OUTGOING if workload is Workload.INCOMING else Workload.INCOMING
    assert _skip(mailbox, workload=other) is None


@pytest.mark.parametrize(
    "approval",
    [
        EmailApprovalStatus.EMPTY,
        EmailApprovalStatus.PENDING_APPROVAL,
        EmailApprovalStatus.REJECTED,
    ],
)
def test_unapproved_user_mailbox_is_skipped_when_the_org_requires_approval(
    approval: EmailApprovalStatus,
) -> None:
    org = OrganizationSettings(require_approval_for_user_email=True)
    assert _skip(_user_mailbox(approval=approval), org=org) is SkipReason.NOT_APPROVED


@pytest.mark.parametrize(
    "approval", [EmailApprovalStatus.PENDING_APPROVAL, EmailApprovalStatus.REJECTED]
)
def test_unapproved_queue_mailbox_is_skipped_when_the_org_requires_approval(
    approval: EmailApprovalStatus,
) -> None:
    org = OrganizationSettings(require_approval_for_queue_email=True)
    assert _skip(_queue_mailbox(approval=approval), org=org) is SkipReason.NOT_APPROVED


def test_unapproved_mailboxes_run_when_the_org_does_not_require_approval() -> None:
    org = OrganizationSettings(
        require_approval_for_user_email=False, require_approval_for_queue_email=False
    )
    pending = EmailApprovalStatus.PENDING_APPROVAL
    assert _skip(_user_mailbox(approval=pending), org=org) is None
    assert _skip(_queue_mailbox(approval=pending), org=org) is None


def test_user_and_queue_approval_switches_are_independent() -> None:
    users_only = OrganizationSettings(
        require_approval_for_user_email=True, require_approval_for_queue_email=False
    )
    queues_only = OrganizationSettings(
        require_approval_for_user_email=False, require_approval_for_queue_email=True
    )
    user = _user_mailbox(approval=EmailApprovalStatus.EMPTY)
    queue = _queue_mailbox(approval=EmailApprovalStatus.EMPTY)

    assert _skip(user, org=users_only) is SkipReason.NOT_APPROVED
    assert _skip(queue, org=users_only) is None
    assert _skip(user, org=queues_only) is None
    assert _skip(queue, org=queues_only) is SkipReason.NOT_APPROVED


def test_workload_postponed_into_the_future_is_not_due() -> None:
    state = WorkloadState(next_run_at=NOW + timedelta(seconds=1))
    assert _skip(_user_mailbox(), state=state) is SkipReason.NOT_DUE


@pytest.mark.parametrize(
    "state",
    [
        None,
        WorkloadState(),
        WorkloadState(next_run_at=NOW),
        WorkloadState(next_run_at=NOW - timedelta(minutes=1)),
    ],
)
def test_workload_is_due_when_never_run_or_its_time_has_come(state: WorkloadState | None) -> None:
    assert _skip(_user_mailbox(), state=state) is None


# Each step repairs the condition the previous reason reported; the reasons must come out in
# the documented order.
_REPAIRS: list[tuple[SkipReason, Callable[[Mailbox], Mailbox]]] = [
    (SkipReason.INACTIVE, lambda m: attrs.evolve(m, state=RecordState.ACTIVE)),
    (SkipReason.NO_PROFILE, lambda m: attrs.evolve(m, profile_id=a_profile().id)),
    (SkipReason.PROFILE_INACTIVE, lambda m: m),
    (SkipReason.FORWARD_MAILBOX_CANNOT_SEND, lambda m: attrs.evolve(m, is_forward_mailbox=False)),
    (
        SkipReason.DELIVERY_METHOD_NOT_SERVER_SIDE_SYNC,
        lambda m: attrs.evolve(m, outgoing_delivery_method=OutgoingDeliveryMethod.SERVER_SIDE_SYNC),
    ),
    (SkipReason.WORKLOAD_DISABLED, lambda m: attrs.evolve(m, enabled_for_outgoing=True)),
    (SkipReason.NOT_APPROVED, lambda m: attrs.evolve(m, approval=EmailApprovalStatus.APPROVED)),
    (SkipReason.NOT_DUE, lambda m: m),
]


def test_skip_reasons_are_checked_in_the_documented_order() -> None:
    mailbox = _user_mailbox(
        state=RecordState.INACTIVE,
        profile_id=None,
        is_forward_mailbox=True,
        outgoing_delivery_method=OutgoingDeliveryMethod.NONE,
        enabled_for_outgoing=False,
        approval=EmailApprovalStatus.PENDING_APPROVAL,
    )
    profile = a_profile(state=RecordState.INACTIVE)
    state: WorkloadState | None = WorkloadState(next_run_at=NOW + timedelta(hours=1))
    seen: list[SkipReason] = []
    for expected, repair in _REPAIRS:
        reason = _skip(mailbox, profile=profile, workload=Workload.OUTGOING, state=state)
        assert reason is expected, f"after {seen}: expected {expected}, got {reason}"
        seen.append(expected)
        mailbox = repair(mailbox)
        if expected is SkipReason.PROFILE_INACTIVE:
            profile = a_profile()
        if expected is SkipReason.NOT_DUE:
            state = None
    assert _skip(mailbox, profile=profile, workload=Workload.OUTGOING, state=state) is None


# -- next_run_after_success -------------------------------------------------------------------


SCHEDULE = Schedule(incoming_interval=timedelta(minutes=5), outgoing_interval=timedelta(minutes=2))


def test_next_incoming_run_is_the_incoming_interval_after_the_cycle_finished() -> None:
    finished = NOW + timedelta(minutes=3)
    at = next_run_after_success(
        Workload.INCOMING, a_profile(), finished_at=finished, schedule=SCHEDULE
    )
    assert at == finished + timedelta(minutes=5)


def test_next_outgoing_run_uses_the_outgoing_interval() -> None:
    at = next_run_after_success(Workload.OUTGOING, a_profile(), finished_at=NOW, schedule=SCHEDULE)
    assert at == NOW + timedelta(minutes=2)


def test_default_schedule_polls_every_five_minutes() -> None:
    for workload in (Workload.INCOMING, Workload.OUTGOING):
        at = next_run_after_success(workload, a_profile(), finished_at=NOW, schedule=Schedule())
        assert at == NOW + timedelta(minutes=5)


def test_profile_minimum_polling_interval_wins_when_longer() -> None:
    profile = a_profile(min_polling_interval=timedelta(minutes=15))
    for workload in (Workload.INCOMING, Workload.OUTGOING):
        at = next_run_after_success(workload, profile, finished_at=NOW, schedule=SCHEDULE)
        assert at == NOW + timedelta(minutes=15)


def test_profile_minimum_polling_interval_does_not_shorten_the_schedule() -> None:
    profile = a_profile(min_polling_interval=timedelta(minutes=1))
    at = next_run_after_success(Workload.INCOMING, profile, finished_at=NOW, schedule=SCHEDULE)
    assert at == NOW + timedelta(minutes=5)


# -- state_after_failure ----------------------------------------------------------------------


POLICY = RetryPolicy(mailbox_transient_backoff=timedelta(minutes=5))
PREVIOUS = WorkloadState(
    next_run_at=NOW - timedelta(minutes=1),
    consecutive_failures=2,
    last_sync_started_on=NOW - timedelta(hours=1),
    last_successful_sync_completed_on=NOW - timedelta(minutes=59),
    items_processed_for_last_sync=7,
    items_failed_for_last_sync=1,
)


def _record(exc: BaseException) -> ErrorRecord:
    return ErrorRecord.from_exception(exc)


def test_failure_counts_one_more_consecutive_failure_and_records_the_error() -> None:
    error = _record(ConnectionFailedError("reset", mailbox_id="m"))
    state = state_after_failure(PREVIOUS, error, now=NOW, policy=POLICY)
    assert state.consecutive_failures == 3
    assert state.last_error == error
    assert state.last_error_at == NOW


def test_first_failure_of_a_fresh_workload_counts_one() -> None:
    error = _record(ConnectionFailedError("reset"))
    state = state_after_failure(WorkloadState(), error, now=NOW, policy=POLICY)
    assert state.consecutive_failures == 1
    assert state.next_run_at == NOW + timedelta(minutes=5)


def test_failure_postpones_by_the_transient_backoff() -> None:
    error = _record(ConnectionFailedError("reset"))
    state = state_after_failure(PREVIOUS, error, now=NOW, policy=POLICY)
    assert state.next_run_at == NOW + timedelta(minutes=5)


def test_failure_postpones_by_retry_after_when_longer_than_the_backoff() -> None:
    error = _record(ServerBusyError("busy", retry_after=timedelta(minutes=20)))
    state = state_after_failure(PREVIOUS, error, now=NOW, policy=POLICY)
    assert state.next_run_at == NOW + timedelta(minutes=20)


def test_a_shorter_retry_after_does_not_shorten_the_backoff() -> None:
    error = _record(ServerBusyError("busy", retry_after=timedelta(seconds=30)))
    state = state_after_failure(PREVIOUS, error, now=NOW, policy=POLICY)
    assert state.next_run_at == NOW + timedelta(minutes=5)


def test_failure_keeps_the_last_success_fields() -> None:
    error = _record(AuthenticationError("refused"))
    state = state_after_failure(PREVIOUS, error, now=NOW, policy=POLICY)
    assert state.last_sync_started_on == PREVIOUS.last_sync_started_on
    assert state.last_successful_sync_completed_on == PREVIOUS.last_successful_sync_completed_on
    assert state.items_processed_for_last_sync == 7
    assert state.items_failed_for_last_sync == 1


def test_failure_does_not_modify_the_previous_state() -> None:
    error = _record(ConnectionFailedError("reset"))
    before = attrs.evolve(PREVIOUS)
    state_after_failure(PREVIOUS, error, now=NOW, policy=POLICY)
    assert before == PREVIOUS


# -- next_send_attempt ------------------------------------------------------------------------


SEND_POLICY = RetryPolicy(send_max_attempts=3, send_retry_interval=timedelta(minutes=5))


def test_permanent_error_is_never_retried() -> None:
    error = _record(MessageRejectedError("554 rejected", server_code="554"))
    assert next_send_attempt(error, attempts_made=1, now=NOW, policy=SEND_POLICY) is None


def test_transient_error_is_retried_after_the_interval() -> None:
    error = _record(ConnectionFailedError("421 try later"))
    at = next_send_attempt(error, attempts_made=1, now=NOW, policy=SEND_POLICY)
    assert at == NOW + timedelta(minutes=5)


def test_unexpected_exception_is_retried_as_transient() -> None:
    error = _record(RuntimeError("boom"))
    at = next_send_attempt(error, attempts_made=1, now=NOW, policy=SEND_POLICY)
    assert at == NOW + timedelta(minutes=5)


def test_retry_after_is_used_when_longer_than_the_interval() -> None:
    error = _record(ServerBusyError("busy", retry_after=timedelta(hours=1)))
    at = next_send_attempt(error, attempts_made=1, now=NOW, policy=SEND_POLICY)
    assert at == NOW + timedelta(hours=1)


def test_a_shorter_retry_after_keeps_the_interval() -> None:
    error = _record(ServerBusyError("busy", retry_after=timedelta(seconds=10)))
    at = next_send_attempt(error, attempts_made=1, now=NOW, policy=SEND_POLICY)
    assert at == NOW + timedelta(minutes=5)


def test_transient_error_gives_up_when_the_attempts_are_spent() -> None:
    error = _record(ConnectionFailedError("421 try later"))
    assert next_send_attempt(error, attempts_made=2, now=NOW, policy=SEND_POLICY) is not None
    assert next_send_attempt(error, attempts_made=3, now=NOW, policy=SEND_POLICY) is None
    assert next_send_attempt(error, attempts_made=4, now=NOW, policy=SEND_POLICY) is None


def test_default_policy_allows_five_attempts() -> None:
    error = _record(ConnectionFailedError("421 try later"))
    policy = RetryPolicy()
    assert next_send_attempt(error, attempts_made=4, now=NOW, policy=policy) is not None
    assert next_send_attempt(error, attempts_made=5, now=NOW, policy=policy) is None
