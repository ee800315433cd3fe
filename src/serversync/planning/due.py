"""Which mailbox workloads may run now, and when they run next. Pure functions."""

from __future__ import annotations

from datetime import datetime, timedelta

from serversync.model import (
    EmailApprovalStatus,
    EmailServerProfile,
    EntityName,
    Mailbox,
    SkipReason,
    Workload,
    WorkloadState,
)
from serversync.settings import OrganizationSettings, Schedule

__all__ = ["next_run_after_success", "skip_reason"]


def _approval_required(mailbox: Mailbox, org: OrganizationSettings) -> bool:
    if mailbox.owner is None:
        return False
    if mailbox.owner.entity == EntityName.QUEUE:
        return org.require_approval_for_queue_email
    return org.require_approval_for_user_email


def skip_reason(
    mailbox: Mailbox,
    profile: EmailServerProfile | None,
    workload: Workload,
    state: WorkloadState | None,
    *,
    now: datetime,
    org: OrganizationSettings,
) -> SkipReason | None:
    """Why ``workload`` of ``mailbox`` must not run now, or ``None`` when it may.

    Checked in the order Dynamics documents: inactive mailbox, no profile, delivery method,
    enabled flag, address approval, then the schedule.
    """
    if not mailbox.is_active:
        return SkipReason.INACTIVE
    if mailbox.profile_id is None or profile is None:
        return SkipReason.NO_PROFILE
    if not profile.is_active:
        return SkipReason.PROFILE_INACTIVE
    if workload is Workload.OUTGOING and mailbox.is_forward_mailbox:
        return SkipReason.FORWARD_MAILBOX_CANNOT_SEND
    if not mailbox.uses_server_side_sync(workload):
        return SkipReason.DELIVERY_METHOD_NOT_SERVER_SIDE_SYNC
    if not mailbox.enabled_for(workload):
        return SkipReason.WORKLOAD_DISABLED
    if _approval_required(mailbox, org) and mailbox.approval is not EmailApprovalStatus.APPROVED:
        return SkipReason.NOT_APPROVED
    if state is not None and state.next_run_at is not None and state.next_run_at > now:
        return SkipReason.NOT_DUE
    return None


def next_run_after_success(
    workload: Workload, profile: EmailServerProfile, *, finished_at: datetime, schedule: Schedule
) -> datetime:
    """When a workload runs again after a successful cycle: measured from the cycle's end, as
    Dynamics does, and never sooner than the profile's minimum polling interval."""
    interval = (
        schedule.incoming_interval if workload is Workload.INCOMING else schedule.outgoing_interval
    )
    minimum = profile.min_polling_interval or timedelta(0)
    return finished_at + max(interval, minimum)
