"""The observer port: optional callbacks for host metrics, audit trails and alerts."""

from __future__ import annotations

from typing import Protocol

from serversync.model import ItemOutcome, MailboxRunReport, SendResult

__all__ = ["SyncObserver"]


class SyncObserver(Protocol):
    """Told about each decision, send and mailbox run as they happen.

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
