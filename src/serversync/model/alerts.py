"""Alerts: what Dynamics posts on a mailbox's or a profile's Alerts wall."""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

from serversync.model.ids import MailboxId, ProfileId
from serversync.model.options import Workload
from serversync.model.outcomes import ErrorRecord

__all__ = ["Alert", "AlertKind", "AlertLevel"]


class AlertLevel(enum.StrEnum):
    """The Dynamics alert levels (``generatealertsforerrors`` / ``…warnings`` /
    ``…information`` choose which ones an organisation shows)."""

    ERROR = "error"
    WARNING = "warning"
    INFORMATION = "information"


class AlertKind(enum.StrEnum):
    """What an alert is about."""

    WORKLOAD_DISABLED = "workload_disabled"
    """A permanent error, or too many transient ones in a row, disabled a workload."""

    PROFILE_MASS_FAILURE = "profile_mass_failure"
    """More than half of a profile's mailboxes failed within the window (an hour)."""


@attrs.frozen(kw_only=True)
class Alert:
    """One alert for the host to show, send or log (see ``SyncObserver.alert_raised``).

    A workload alert names the mailbox, its profile and the workload; a profile alert names
    only the profile. ``error`` is the failure that caused it, when there is one.
    """

    kind: AlertKind
    level: AlertLevel
    message: str
    raised_at: datetime
    mailbox_id: MailboxId | None = None
    profile_id: ProfileId | None = None
    workload: Workload | None = None
    error: ErrorRecord | None = None

    @property
    def credentials_rejected(self) -> bool:
        """Whether the server or the identity provider refused the mailbox's credentials (an
        :class:`~serversync.errors.AuthenticationError` disabled the workload): a wrong or
        expired password or secret, a revoked token grant or consent. The host's cue to ask
        the user or an administrator for new credentials; the workload stays disabled until
        they are replaced and the mailbox enabled again."""
        return (
            self.kind is AlertKind.WORKLOAD_DISABLED
            and self.error is not None
            and self.error.error_type == "AuthenticationError"
        )
