"""The observer port: optional callbacks for host metrics, audit trails and alerts."""

from __future__ import annotations

from typing import Protocol

from serversync.model import Alert, ItemOutcome, MailboxRunReport, SendResult

__all__ = ["SyncObserver"]


class SyncObserver(Protocol):
    """Told about each decision, send, mailbox run and alert as they happen.

    Callbacks must be quick and must not raise; :class:`serversync.BaseSyncObserver` has
    no-op implementations to subclass.
    """

    def item_processed(self, outcome: ItemOutcome) -> None:
        """An incoming message was decided."""
        ...

    def email_sent(self, result: SendResult) -> None:
        """A claimed email was sent, rescheduled or failed."""
        ...

    def mailbox_run_finished(self, report: MailboxRunReport) -> None:
        """A mailbox workload run ended (or was skipped)."""
        ...

    def alert_raised(self, alert: Alert) -> None:
        """An alert for the Alerts wall: a workload was disabled, or a profile's mailboxes
        fail en masse. Deliver it to the profile owner (and the mailbox owner if wanted)."""
        ...
