"""The relevance port: rules are synchronous pure functions of a message and facts.

The engine gathers every fact a rule may read (repository answers) before calling rules,
so rules do no I/O and test without servers.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

import attrs

from serversync.model import (
    CorrelationMatch,
    CrmRecord,
    DecisionReason,
    EmailActivity,
    EmailDirection,
    EntityName,
    Mailbox,
    MailboxTrackingFolder,
    ParsedHeaders,
    RecordRef,
    TrackingFolderId,
)
from serversync.model.messages import normalize_address
from serversync.settings import OrganizationSettings

__all__ = ["Reject", "RelevanceFacts", "RelevanceRule", "Track", "Verdict"]

_PRINCIPALS = frozenset({EntityName.SYSTEMUSER.value, EntityName.QUEUE.value})


@attrs.frozen(kw_only=True, eq=False)
class RelevanceFacts:
    """What rules may know about a message beyond its headers.

    ``records`` maps each lower-cased address of the message (sender and recipients) to the
    CRM records it resolves to; ``candidates`` are stored emails the message may correlate
    with (the answer to its :class:`~serversync.model.CorrelationQuery`); ``mailbox_owner``
    is the user or queue record of the mailbox being processed; ``now`` is the engine's
    clock when the facts were gathered. ``direction`` is Outgoing for a message read from the
    mailbox's sent items; ``same_message`` are stored emails with this message's Message-ID
    in either direction; ``recent_from_sender`` counts stored emails from the same sender
    within the loop guard's window (gathered only while the loop guard is on).
    """

    mailbox: Mailbox
    mailbox_owner: CrmRecord | None
    folder: str
    records: Mapping[str, tuple[CrmRecord, ...]]
    candidates: tuple[EmailActivity, ...] = ()
    direction: EmailDirection = EmailDirection.INCOMING
    same_message: tuple[EmailActivity, ...] = ()
    recent_from_sender: int | None = None
    tracking_folder: MailboxTrackingFolder | None = None
    organization: OrganizationSettings = attrs.Factory(OrganizationSettings)
    now: datetime | None = None

    def records_for(self, address: str) -> tuple[CrmRecord, ...]:
        """The records an address resolves to (empty if none)."""
        return self.records.get(normalize_address(address), ())

    def principals_for(self, address: str) -> tuple[CrmRecord, ...]:
        """The active users and queues an address resolves to."""
        return tuple(
            r for r in self.records_for(address) if r.ref.entity in _PRINCIPALS and r.is_active
        )


@attrs.frozen(kw_only=True)
class Track:
    """Create an email activity for the message.

    ``accepting_entity`` is the user or queue whose filter accepted it; ``correlation`` links
    it to an earlier email; ``regarding`` overrides the correlated Regarding and
    ``tracking_folder_id`` names the folder-level tracking rule that tracked it.
    """

    reason: DecisionReason
    rule: str
    explanation: str
    accepting_entity: RecordRef | None = None
    correlation: CorrelationMatch | None = None
    regarding: RecordRef | None = None
    tracking_folder_id: TrackingFolderId | None = None


@attrs.frozen(kw_only=True)
class Reject:
    """Do not track the message, for ``reason``."""

    reason: DecisionReason
    rule: str
    explanation: str


Verdict = Track | Reject
"""A rule's decision."""


class RelevanceRule(Protocol):
    """Decides whether an incoming message becomes an email activity.

    Return a :data:`Verdict` to decide, or ``None`` to leave the decision to the next rule.
    Rules must be pure: no I/O, no clock, no randomness.
    """

    @property
    def name(self) -> str:
        """A short stable name, shown in outcomes as the rule that decided."""
        ...

    def evaluate(self, message: ParsedHeaders, facts: RelevanceFacts) -> Verdict | None:
        """The verdict on ``message``, or ``None`` for no opinion."""
        ...
