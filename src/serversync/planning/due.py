"""Which mailbox workloads may run now, and when they run next. Pure functions."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from serversync.model import (
    EmailApprovalStatus,
    EmailServerProfile,
    EntityName,
    Mailbox,
    SkipReason,
    TestStatus,
    Workload,
    WorkloadState,
)
from serversync.settings import OrganizationSettings, Schedule

__all__ = ["cycle_interval", "next_run_after_success", "skip_reason"]


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
    enabled flag (and, for ACT, a passed ACT test), address approval, then the schedule.
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
    if workload is Workload.ACT and mailbox.act_status is not TestStatus.SUCCESS:
        return SkipReason.ACT_NOT_TESTED
    if _approval_required(mailbox, org) and mailbox.approval is not EmailApprovalStatus.APPROVED:
        return SkipReason.NOT_APPROVED
    if state is not None and state.next_run_at is not None and state.next_run_at > now:
        return SkipReason.NOT_DUE
    return None


def _mailbox_point(mailbox_id: str) -> float:
    """A fixed number in [0, 1) for the mailbox: the same in every process and every run
    (``hash()`` is salted per process, so a digest is used)."""
    digest = hashlib.sha256(mailbox_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def cycle_interval(
    workload: Workload,
    profile: EmailServerProfile | None,
    *,
    schedule: Schedule,
    mailbox: Mailbox | None = None,
) -> timedelta:
    """How long a workload waits after the end of a successful cycle.

    Incoming and outgoing use their intervals. ACT waits between ``act_min_interval`` and
    ``act_max_interval`` (``act_max_interval_with_incoming`` when the mailbox also receives
    mail through server-side sync: Dynamics then spreads ACT over 5 to 15 minutes), at a
    point fixed by the mailbox id, so that mailboxes spread out and runs are reproducible;
    ``mailbox`` is required for it. The profile's minimum polling interval lengthens any
    shorter interval.
    """
    if workload is Workload.INCOMING:
        interval = schedule.incoming_interval
    elif workload is Workload.OUTGOING:
        interval = schedule.outgoing_interval
    elif mailbox is None:
        raise ValueError("the ACT interval depends on the mailbox; pass mailbox=")
    else:
        receives = mailbox.enabled_for(Workload.INCOMING) and mailbox.uses_server_side_sync(
            Workload.INCOMING
        )
        longest = schedule.act_max_interval_with_incoming if receives else schedule.act_max_interval
        spread = longest - schedule.act_min_interval
        interval = schedule.act_min_interval + spread * _mailbox_point(str(mailbox.id))
    minimum = profile.min_polling_interval if profile is not None else None
    return max(interval, minimum or timedelta(0))


def next_run_after_success(
    workload: Workload,
    profile: EmailServerProfile,
    *,
    finished_at: datetime,
    schedule: Schedule,
    mailbox: Mailbox | None = None,
) -> datetime:
    """When a workload runs again after a successful cycle: :func:`cycle_interval` after the
    cycle's end, as Dynamics measures it (a long cycle delays the next one). ``mailbox`` is
    required for ACT."""
    return finished_at + cycle_interval(workload, profile, schedule=schedule, mailbox=mailbox)
