"""A do-nothing observer to subclass."""

from __future__ import annotations

from serversync.model import Alert, ItemOutcome, MailboxRunReport, SendResult

__all__ = ["BaseSyncObserver"]


class BaseSyncObserver:
    """A :class:`~serversync.ports.SyncObserver` whose callbacks do nothing; override some."""

    def item_processed(self, outcome: ItemOutcome) -> None:
        """An incoming message was decided."""

    def email_sent(self, result: SendResult) -> None:
        """A claimed email was sent, rescheduled or failed."""

    def mailbox_run_finished(self, report: MailboxRunReport) -> None:
        """A mailbox workload run ended (or was skipped)."""

    def alert_raised(self, alert: Alert) -> None:
        """An alert was raised (a workload disabled, a profile failing)."""
