"""Dynamics' error policy for failing mailbox workloads, and retries of unsent emails.

A permanent error disables the workload at once. A transient error postpones it by the
transient back-off (or the timeout back-off, or the server's retry-after when longer) and
counts one more failure in a row; the ``max_transient_failures``-th counts as permanent. A
success resets the count. Errors confined to one message (scope ``item``) or to the engine
(scope ``engine``) are postponed and counted but never disable a workload: the mailbox is
not what failed.
"""

from __future__ import annotations

from datetime import datetime

from serversync.errors import ErrorScope
from serversync.model import ErrorRecord, WorkloadState
from serversync.settings import RetryPolicy

__all__ = ["disables_workload", "next_send_attempt", "state_after_failure"]

_MAILBOX = ErrorScope.MAILBOX.value


def state_after_failure(
    state: WorkloadState,
    error: ErrorRecord,
    *,
    now: datetime,
    policy: RetryPolicy,
    timed_out: bool = False,
) -> WorkloadState:
    """The workload state after a failed cycle: one more consecutive failure, the error, and
    the next run postponed by the back-off (the timeout back-off when ``timed_out`` and set),
    or by the server's retry-after when that is longer."""
    delay = policy.mailbox_transient_backoff
    if timed_out and policy.mailbox_timeout_backoff is not None:
        delay = policy.mailbox_timeout_backoff
    if error.retry_after is not None and error.retry_after > delay:
        delay = error.retry_after
    return WorkloadState(
        next_run_at=now + delay,
        consecutive_failures=state.consecutive_failures + 1,
        last_error=error,
        last_error_at=now,
        last_sync_started_on=state.last_sync_started_on,
        last_successful_sync_completed_on=state.last_successful_sync_completed_on,
        items_processed_for_last_sync=state.items_processed_for_last_sync,
        items_failed_for_last_sync=state.items_failed_for_last_sync,
    )


def disables_workload(
    error: ErrorRecord, *, consecutive_failures: int, policy: RetryPolicy
) -> bool:
    """Whether this failure disables the workload: a permanent error of the mailbox, or the
    ``max_transient_failures``-th failure in a row (``consecutive_failures`` counts this one).
    """
    if error.scope != _MAILBOX:
        return False
    return not error.transient or consecutive_failures >= policy.max_transient_failures


def next_send_attempt(
    error: ErrorRecord, *, attempts_made: int, now: datetime, policy: RetryPolicy
) -> datetime | None:
    """When to try sending again, or ``None`` to give up (permanent error, or attempts spent)."""
    if not error.transient or attempts_made >= policy.send_max_attempts:
        return None
    delay = policy.send_retry_interval
    if error.retry_after is not None and error.retry_after > delay:
        delay = error.retry_after
    return now + delay
