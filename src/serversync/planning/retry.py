"""Retry decisions for failing mailbox workloads and for emails that could not be sent."""

from __future__ import annotations

from datetime import datetime

from serversync.model import ErrorRecord, WorkloadState
from serversync.settings import RetryPolicy

__all__ = ["next_send_attempt", "state_after_failure"]


def state_after_failure(
    state: WorkloadState, error: ErrorRecord, *, now: datetime, policy: RetryPolicy
) -> WorkloadState:
    """The workload state after a failed cycle: one more consecutive failure, postponed by the
    transient back-off or by the server's retry-after when that is longer."""
    delay = policy.mailbox_transient_backoff
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
