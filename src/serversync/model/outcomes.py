"""What a run did: per-message outcomes, per-email send results and per-mailbox reports."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from datetime import datetime, timedelta

import attrs

from serversync.errors import ServerBusyError, SyncError
from serversync.model.act import ActAction, ActEntity
from serversync.model.ids import ActivityId, MailboxId, MessageId, RecordRef
from serversync.model.options import DecisionReason, EmailStatus, Workload

__all__ = [
    "ActOutcome",
    "ErrorRecord",
    "ItemOutcome",
    "MailboxRunReport",
    "OutcomeKind",
    "RuleDecision",
    "RuleStep",
    "RunReport",
    "RunStatus",
    "SendReceipt",
    "SendResult",
    "SkipReason",
]


@attrs.frozen(kw_only=True)
class ErrorRecord:
    """A storable snapshot of an error: its class name, message and classification."""

    error_type: str
    message: str
    transient: bool
    scope: str
    server_code: str | None = None
    retry_after: timedelta | None = None

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorRecord:
        """Record ``exc``; anything that is not a :class:`SyncError` counts as transient."""
        if isinstance(exc, SyncError):
            return cls(
                error_type=type(exc).__name__,
                message=str(exc),
                transient=exc.transient,
                scope=str(exc.scope),
                server_code=exc.server_code,
                retry_after=exc.retry_after if isinstance(exc, ServerBusyError) else None,
            )
        # An unexpected exception is most likely a bug or an outage: retry rather than give up.
        return cls(
            error_type=type(exc).__name__,
            message=str(exc) or type(exc).__name__,
            transient=True,
            scope="mailbox",
        )


class RuleDecision(enum.StrEnum):
    """What one rule said about a message."""

    ABSTAINED = "abstained"
    TRACKED = "tracked"
    REJECTED = "rejected"


@attrs.frozen(kw_only=True)
class RuleStep:
    """One line of a decision's trace: a rule that was consulted and what it said."""

    rule: str
    decision: RuleDecision
    reason: DecisionReason | None = None
    explanation: str = ""


class OutcomeKind(enum.StrEnum):
    """What happened to one incoming message."""

    TRACKED = "tracked"
    DUPLICATE = "duplicate"
    NOT_RELEVANT = "not_relevant"
    SKIPPED = "skipped"
    FAILED = "failed"


@attrs.frozen(kw_only=True)
class ItemOutcome:
    """The decision on one incoming message, with the Dynamics reason code and who decided."""

    mailbox_id: MailboxId
    folder: str
    remote_id: str
    kind: OutcomeKind
    reason: DecisionReason | None = None
    rule: str | None = None
    explanation: str = ""
    message_id: MessageId | None = None
    subject: str | None = None
    sender: str | None = None
    activity_id: ActivityId | None = None
    error: ErrorRecord | None = None
    trace: tuple[RuleStep, ...] = ()


@attrs.frozen(kw_only=True)
class ActOutcome:
    """One action of an appointment, contact and task (ACT) cycle, with why it was taken;
    ``error`` when it failed (it is tried again on a later cycle, see
    :attr:`~serversync.model.ExchangeSyncIdMapping.retries`)."""

    entity: ActEntity
    action: ActAction
    record: RecordRef | None = None
    item_id: str | None = None
    explanation: str = ""
    error: ErrorRecord | None = None


class SkipReason(enum.StrEnum):
    """Why a mailbox workload was not processed in a run."""

    INACTIVE = "inactive"
    NO_PROFILE = "no_profile"
    PROFILE_INACTIVE = "profile_inactive"
    NOT_APPROVED = "not_approved"
    DELIVERY_METHOD_NOT_SERVER_SIDE_SYNC = "delivery_method_not_server_side_sync"
    WORKLOAD_DISABLED = "workload_disabled"
    NOT_DUE = "not_due"
    LEASED_ELSEWHERE = "leased_elsewhere"
    FORWARD_MAILBOX_CANNOT_SEND = "forward_mailbox_cannot_send"
    ENGINE_STOPPING = "engine_stopping"
    PROFILE_CONNECTIONS_IN_USE = "profile_connections_in_use"
    ACT_NOT_TESTED = "act_not_tested"
    """Appointment, contact and task sync waits for a passed Test & Enable (Dynamics needs
    a passed ACT test before it syncs)."""


class RunStatus(enum.StrEnum):
    """How a mailbox workload run ended."""

    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    FAILED = "failed"
    STOPPED = "stopped"
    """The engine was asked to stop: the workload ended between two items, progress kept."""


@attrs.frozen(kw_only=True)
class SendReceipt:
    """What the server said when it accepted a message.

    ``refused`` lists recipients the server refused alone (address, reply) while accepting
    the others; ``remote_id`` is the server's id of a saved copy (EWS Sent Items).
    """

    message_id: MessageId
    accepted_at: datetime
    server_reply: str | None = None
    refused: tuple[tuple[str, str], ...] = ()
    remote_id: str | None = None


@attrs.frozen(kw_only=True)
class SendResult:
    """What happened to one email the outgoing workload claimed."""

    activity_id: ActivityId
    status: EmailStatus
    message_id: MessageId | None
    subject: str
    recipients: tuple[str, ...]
    attempt: int
    next_attempt_at: datetime | None = None
    server_reply: str | None = None
    error: ErrorRecord | None = None
    copied_to_sent: bool | None = None
    """Whether the copy for the profile's ``sent_folder`` was stored; ``None`` when the
    profile asks for none or the email was not sent."""
    sent_copy_error: ErrorRecord | None = None
    """Why the copy was not stored (the email itself was sent)."""


@attrs.frozen(kw_only=True)
class MailboxRunReport:
    """One workload of one mailbox in one run: processed items, sends, or why it was skipped."""

    mailbox_id: MailboxId
    workload: Workload
    status: RunStatus
    started_at: datetime
    finished_at: datetime
    skip_reason: SkipReason | None = None
    items: tuple[ItemOutcome, ...] = ()
    sends: tuple[SendResult, ...] = ()
    error: ErrorRecord | None = None
    act: tuple[ActOutcome, ...] = ()
    """What an ACT cycle did, record by record."""

    @property
    def items_failed(self) -> int:
        """Messages that ended in :attr:`OutcomeKind.FAILED`."""
        return sum(1 for item in self.items if item.kind is OutcomeKind.FAILED)


@attrs.frozen(kw_only=True)
class RunReport:
    """Everything one :meth:`SyncEngine.run_once` did, mailbox by mailbox."""

    started_at: datetime
    finished_at: datetime
    mailboxes: tuple[MailboxRunReport, ...] = ()

    def items(self) -> Iterator[ItemOutcome]:
        """Every incoming message outcome of the run."""
        for report in self.mailboxes:
            yield from report.items

    def sends(self) -> Iterator[SendResult]:
        """Every send result of the run."""
        for report in self.mailboxes:
            yield from report.sends

    def for_mailbox(self, mailbox_id: MailboxId) -> tuple[MailboxRunReport, ...]:
        """The reports of one mailbox (one per workload that was considered)."""
        return tuple(r for r in self.mailboxes if r.mailbox_id == mailbox_id)
