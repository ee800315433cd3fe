"""Mailbox health: how each workload of a mailbox stands, for operators and dashboards."""

from __future__ import annotations

from datetime import datetime

import attrs

from serversync.model.ids import MailboxId, ProfileId
from serversync.model.options import TestStatus, Workload
from serversync.model.outcomes import ErrorRecord, SkipReason
from serversync.model.quarantine import QuarantineCount

__all__ = ["MailboxHealth"]


@attrs.frozen(kw_only=True)
class MailboxHealth:
    """One workload of one mailbox as the store shows it at ``checked_at``.

    ``enabled`` and ``test_status`` are the mailbox's ``enabledfor<workload>`` and
    ``<workload>status``; ``blocked_by`` says why the workload does not run at all (inactive,
    disabled, not approved, another delivery method, ...), ``None`` when it runs at
    ``next_run_at``. ``lease_holder`` is the engine processing it right now, if any.
    ``backlog`` is the number of emails waiting to be sent for the outgoing workload, and
    ``None`` where it is not known (incoming and ACT: the server is not asked).
    ``quarantined`` counts the incoming workload's poison messages (waiting and given up, and
    the earliest next try); it is ``None`` for the other workloads.
    """

    mailbox_id: MailboxId
    email_address: str
    profile_id: ProfileId | None
    workload: Workload
    checked_at: datetime
    enabled: bool
    test_status: TestStatus
    blocked_by: SkipReason | None = None
    last_sync_started_on: datetime | None = None
    last_success: datetime | None = None
    last_error: ErrorRecord | None = None
    last_error_at: datetime | None = None
    consecutive_failures: int = 0
    next_run_at: datetime | None = None
    lease_holder: str | None = None
    backlog: int | None = None
    quarantined: QuarantineCount | None = None

    @property
    def failing(self) -> bool:
        """Whether the workload's last cycle failed, or a failure disabled it."""
        return self.consecutive_failures > 0 or (
            not self.enabled and self.test_status is TestStatus.FAILURE
        )
