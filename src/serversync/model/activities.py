"""Email activities, their parties, queue items, and the values of storing and sending them."""

from __future__ import annotations

from datetime import datetime

import attrs

from serversync.model.ids import (
    ActivityId,
    ClaimToken,
    MailboxId,
    MessageId,
    QueueItemId,
    RecordRef,
    TrackingFolderId,
)
from serversync.model.messages import AttachmentInfo
from serversync.model.options import (
    CorrelationMethod,
    EmailDirection,
    EmailStateCode,
    EmailStatus,
    ParticipationType,
)
from serversync.model.outcomes import ErrorRecord

__all__ = [
    "ActivityParty",
    "AddResult",
    "AlreadyExists",
    "CorrelationQuery",
    "Created",
    "DedupeKey",
    "EmailActivity",
    "NewIncomingEmail",
    "QueueItem",
    "SendClaim",
    "SendFailed",
    "SendOutcome",
    "SendReleased",
    "SendRetry",
    "SendSucceeded",
    "SendUncertain",
    "TrackingNumbers",
]


@attrs.frozen(kw_only=True)
class ActivityParty:
    """``activityparty``: one sender or recipient of an email.

    ``record`` is the CRM record the address resolved to; ``None`` is an unresolved address.
    """

    participation: ParticipationType
    address: str
    record: RecordRef | None = None
    name: str = ""


@attrs.frozen(kw_only=True)
class EmailActivity:
    """``email``: a CRM email activity, incoming or outgoing, with its sync columns."""

    id: ActivityId
    direction: EmailDirection
    status: EmailStatus
    subject: str = ""
    description: str = ""
    message_id: MessageId | None = None
    in_reply_to: MessageId | None = None
    conversation_index: str | None = None
    base_conversation_index_hash: int | None = None
    tracking_token: str | None = None
    parties: tuple[ActivityParty, ...] = ()
    sender: str | None = None
    to_recipients: str | None = None
    regarding: RecordRef | None = None
    owner: RecordRef | None = None
    tracking_folder_id: TrackingFolderId | None = None
    correlation_method: CorrelationMethod = CorrelationMethod.NONE
    correlated_activity_id: ActivityId | None = None
    parent_activity_id: ActivityId | None = None
    correlated_subject_changed: bool = False
    accepting_entity: RecordRef | None = None
    receiving_mailbox_id: MailboxId | None = None
    sender_mailbox_id: MailboxId | None = None
    submitted_by: RecordRef | None = None
    received_on: datetime | None = None
    sent_on: datetime | None = None
    delivery_attempts: int = 0
    postpone_sending_until: datetime | None = None
    last_send_error: ErrorRecord | None = None
    delivery_uncertain: bool = False
    attachments: tuple[AttachmentInfo, ...] = ()
    internet_message_headers: tuple[tuple[str, str], ...] = ()
    notifications: int = 0
    server_reply: str | None = None

    @property
    def state(self) -> EmailStateCode:
        """``statecode``, derived from the status."""
        return self.status.state

    def parties_of(self, participation: ParticipationType) -> tuple[ActivityParty, ...]:
        """The parties in one role (sender, To, Cc, Bcc)."""
        return tuple(p for p in self.parties if p.participation is participation)

    @property
    def last_activity_on(self) -> datetime | None:
        """When it was last sent or received (for "newest first")."""
        stamps = [d for d in (self.sent_on, self.received_on) if d is not None]
        return max(stamps) if stamps else None

    @property
    def dedupe_key(self) -> DedupeKey | None:
        """The organisation-wide uniqueness key, when the email has a Message-ID."""
        if self.message_id is None:
            return None
        return DedupeKey(message_id=self.message_id, direction=self.direction)


@attrs.frozen(kw_only=True)
class CorrelationQuery:
    """What an incoming message could correlate with, for one repository lookup.

    The answer is every stored email (either direction) whose Message-ID is in
    ``message_ids``, whose tracking token is in ``tracking_tokens``, whose
    ``base_conversation_index_hash`` is ``conversation_index_hash``, or, when
    ``participants`` is not empty, that was sent or received since ``since`` with one of
    those addresses among its parties (newest first, at most ``limit`` of those).
    """

    message_ids: tuple[MessageId, ...] = ()
    tracking_tokens: tuple[str, ...] = ()
    conversation_index_hash: int | None = None
    participants: tuple[str, ...] = ()
    since: datetime | None = None
    limit: int = 200

    @property
    def is_empty(self) -> bool:
        """Whether the query can match nothing."""
        return not (
            self.message_ids
            or self.tracking_tokens
            or self.conversation_index_hash is not None
            or self.participants
        )


@attrs.frozen(kw_only=True)
class DedupeKey:
    """One email activity per (Message-ID, direction) across the whole organisation."""

    message_id: MessageId
    direction: EmailDirection


@attrs.frozen(kw_only=True)
class QueueItem:
    """``queueitem``: an email routed into a queue."""

    id: QueueItemId
    queue: RecordRef
    activity_id: ActivityId
    created_on: datetime | None = None


@attrs.frozen(kw_only=True)
class Created:
    """``add_incoming`` stored a new activity."""

    activity_id: ActivityId


@attrs.frozen(kw_only=True)
class AlreadyExists:
    """``add_incoming`` found an activity with the same dedupe key; nothing was written."""

    activity_id: ActivityId


AddResult = Created | AlreadyExists


@attrs.frozen(kw_only=True)
class NewIncomingEmail:
    """One email to store with ``add_incoming_batch``: the activity and the queues that get
    a queue item for it (what ``add_incoming`` takes for one email)."""

    activity: EmailActivity
    queues: tuple[RecordRef, ...] = ()


"""The answer of ``add_incoming``."""


@attrs.frozen(kw_only=True)
class SendClaim:
    """One email claimed for sending by one engine until ``expires_at``.

    ``activity`` is the email as claimed: status Sending, ``delivery_attempts`` counting the
    attempts made before this claim. Recording an outcome counts this attempt, except
    :class:`SendReleased`.
    """

    activity: EmailActivity
    token: ClaimToken
    owner: str
    expires_at: datetime


@attrs.frozen(kw_only=True)
class TrackingNumbers:
    """What a tracking token is made of: the sender's user number and the email counter."""

    user_number: int
    counter: int


@attrs.frozen(kw_only=True)
class SendSucceeded:
    """The server accepted the email: it becomes Sent."""

    message_id: MessageId
    sent_on: datetime
    server_reply: str | None = None


@attrs.frozen(kw_only=True)
class SendRetry:
    """A transient failure: the email goes back to Pending Send until ``not_before``."""

    not_before: datetime
    error: ErrorRecord


@attrs.frozen(kw_only=True)
class SendFailed:
    """A permanent failure, or attempts exhausted: the email becomes Failed (state Open)."""

    error: ErrorRecord


@attrs.frozen(kw_only=True)
class SendUncertain:
    """A claim expired while Sending: the server may or may not have the email.

    The email becomes Failed with ``delivery_uncertain`` set, so the host decides whether to
    send it again.
    """

    error: ErrorRecord


@attrs.frozen(kw_only=True)
class SendReleased:
    """The email was never handed to the server (the mailbox could not connect): back to
    Pending Send until ``not_before``, without counting an attempt."""

    not_before: datetime
    error: ErrorRecord | None = None


SendOutcome = SendSucceeded | SendRetry | SendFailed | SendUncertain | SendReleased
"""What ``record_send_outcome`` records for a claim."""
