"""Which alerts to raise: a disabled workload, and a profile whose mailboxes fail en masse."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from serversync.model import (
    Alert,
    AlertKind,
    AlertLevel,
    EmailServerProfile,
    ErrorRecord,
    Mailbox,
    MailboxId,
    Workload,
    WorkloadState,
)
from serversync.settings import AlertSettings

__all__ = ["profile_failure_alert", "workload_disabled_alert"]

# How Dynamics' alerts name each workload ("has been disabled for receiving email").
_DOING = {
    Workload.INCOMING: "receiving email",
    Workload.OUTGOING: "sending email",
    Workload.ACT: "synchronizing appointments, contacts, and tasks",
}


def workload_disabled_alert(
    mailbox: Mailbox,
    workload: Workload,
    error: ErrorRecord,
    *,
    consecutive_failures: int,
    at: datetime,
) -> Alert:
    """The Error alert for a workload the engine just disabled."""
    cause = (
        f"{error.error_type}: {error.message}"
        if not error.transient
        else f"{consecutive_failures} failures in a row, the last {error.error_type}: "
        f"{error.message}"
    )
    return Alert(
        kind=AlertKind.WORKLOAD_DISABLED,
        level=AlertLevel.ERROR,
        message=(
            f"The mailbox {mailbox.name} <{mailbox.email_address}> has been disabled for "
            f"{_DOING[workload]} ({cause}). Fix the cause, then enable the mailbox again."
        ),
        raised_at=at,
        mailbox_id=mailbox.id,
        profile_id=mailbox.profile_id,
        workload=workload,
        error=error,
    )


def profile_failure_alert(
    profile: EmailServerProfile,
    mailboxes: Iterable[Mailbox],
    states: Mapping[tuple[MailboxId, Workload], WorkloadState],
    *,
    now: datetime,
    settings: AlertSettings,
    last_alert_at: datetime | None = None,
) -> Alert | None:
    """The profile-level alert when more than ``settings.mass_failure_share`` of the
    profile's mailboxes had a failed cycle (of any workload) within the window before
    ``now``, or ``None``.

    The mailboxes counted are the profile's active ones that use server-side sync for some
    workload; ``states`` holds what is known of their workloads (a mailbox without states
    did not fail). No alert is repeated while
    ``last_alert_at`` is within the window.
    """
    window = settings.mass_failure_window
    if last_alert_at is not None and now - last_alert_at < window:
        return None
    since = now - window
    mine = [
        m
        for m in mailboxes
        if m.profile_id == profile.id
        and m.is_active
        and any(m.uses_server_side_sync(w) for w in Workload)
    ]
    if not mine:
        return None
    failing = {
        box
        for (box, _), state in states.items()
        if state.last_error_at is not None and since <= state.last_error_at <= now
    }
    failed = [m for m in mine if m.id in failing]
    if len(failed) <= settings.mass_failure_share * len(mine):
        return None
    minutes = round(window.total_seconds() / 60)
    return Alert(
        kind=AlertKind.PROFILE_MASS_FAILURE,
        level=AlertLevel.ERROR,
        message=(
            f"{len(failed)} of the {len(mine)} mailboxes of the email server profile "
            f"{profile.name} failed in the last {minutes} minutes; check the profile and its "
            "server."
        ),
        raised_at=now,
        profile_id=profile.id,
    )
