"""Built-in relevance rules: sender validity and the incoming filtering methods."""

from __future__ import annotations

import attrs

from serversync.model import (
    CorrelationMatch,
    CrmRecord,
    DecisionReason,
    EmailDirection,
    EntityName,
    IncomingFilteringMethod,
    ParsedHeaders,
)
from serversync.ports.relevance import Reject, RelevanceFacts, Track, Verdict
from serversync.relevance.correlation import correlate

__all__ = [
    "Acceptance",
    "AutoReplyRule",
    "FilteringMethodRule",
    "InternalEmailRule",
    "InvalidSenderRule",
    "LoopGuardRule",
    "acceptance",
    "acceptance_candidates",
    "acceptance_summary",
    "accepting_queues",
    "describe_filter",
    "filtering_method_of",
    "is_automatic",
]

_METHOD_LABELS = {
    IncomingFilteringMethod.ALL_EMAIL_MESSAGES: "all email messages",
    IncomingFilteringMethod.IN_RESPONSE_TO_CRM_EMAIL: "email in response to CRM email",
    IncomingFilteringMethod.FROM_LEADS_CONTACTS_ACCOUNTS: "email from leads, contacts, accounts",
    IncomingFilteringMethod.FROM_EMAIL_ENABLED_RECORDS: "email from email-enabled records",
    IncomingFilteringMethod.NO_EMAIL_MESSAGES: "no email messages",
}

_CUSTOMERS = frozenset({EntityName.CONTACT.value, EntityName.ACCOUNT.value, EntityName.LEAD.value})


@attrs.frozen
class InvalidSenderRule:
    """Reject a message whose From has no usable address (reason InvalidSender)."""

    name: str = "invalid-sender"

    def evaluate(self, message: ParsedHeaders, facts: RelevanceFacts) -> Verdict | None:
        """Reject when there is no sender address; no opinion otherwise."""
        if message.sender is None:
            return Reject(
                reason=DecisionReason.INVALID_SENDER,
                rule=self.name,
                explanation="the From header has no valid address",
            )
        return None


def filtering_method_of(record: CrmRecord, facts: RelevanceFacts) -> IncomingFilteringMethod:
    """A user's or queue's filtering method, or the organisation default for its kind."""
    if record.incoming_filtering_method is not None:
        return record.incoming_filtering_method
    org = facts.organization
    if record.ref.entity == EntityName.QUEUE:
        return org.default_queue_filtering_method
    return org.default_user_filtering_method


@attrs.frozen(kw_only=True)
class Acceptance:
    """A user or queue accepting a message, with the Dynamics reason and why."""

    record: CrmRecord
    reason: DecisionReason
    explanation: str


def acceptance_candidates(
    message: ParsedHeaders, facts: RelevanceFacts
) -> list[tuple[CrmRecord, bool]]:
    """The users and queues to ask, in order, each with whether it is a visible recipient.

    The processing mailbox's owner comes first, then To, Cc and Bcc. With
    ``UseFilteringMethodOfSyncingMailboxOnlyForCorrelation``, or with
    ``SSSForceFilteringMethodForUserMailboxes`` in a user's mailbox, only the owner is asked.
    """
    owner = facts.mailbox_owner
    if facts.direction is EmailDirection.OUTGOING:
        # Sent items: the sending mailbox's owner applies its own filter to what it sent.
        return [(owner, True)] if owner is not None and owner.is_active else []
    visible: dict[str, CrmRecord] = {}
    for address in message.recipients:
        for record in facts.principals_for(address.address):
            visible.setdefault(str(record.ref), record)
    candidates = [(record, True) for record in visible.values()]
    if owner is not None and owner.is_active:
        own = (visible.get(str(owner.ref), owner), str(owner.ref) in visible)
        candidates = [own] + [c for c in candidates if c[0].ref != owner.ref]
        org = facts.organization
        if org.use_filtering_method_of_syncing_mailbox_only or (
            org.force_filtering_method_for_user_mailboxes
            and owner.ref.entity == EntityName.SYSTEMUSER.value
        ):
            candidates = [own]
    return candidates


def acceptance(
    record: CrmRecord,
    *,
    visible: bool,
    message: ParsedHeaders,
    facts: RelevanceFacts,
    correlation: CorrelationMatch | None,
) -> Acceptance | None:
    """Whether ``record``'s filtering method accepts the message.

    A user or queue that is not a visible recipient (distribution list, Bcc) accepts only
    with "All email messages", since nothing else ties the message to it.
    """
    method = filtering_method_of(record, facts)
    if method is IncomingFilteringMethod.ALL_EMAIL_MESSAGES:
        return Acceptance(
            record=record,
            reason=DecisionReason.ACCEPT_ALL,
            explanation=f"{record.ref} accepts all email messages",
        )
    if not visible:
        return None
    if method is IncomingFilteringMethod.IN_RESPONSE_TO_CRM_EMAIL and correlation:
        return Acceptance(
            record=record,
            reason=DecisionReason.CORRELATION_MATCH,
            explanation=(
                f"{record.ref} tracks replies; the message answers "
                f"email {correlation.correlated_activity_id}"
            ),
        )
    sender_records = _counterparts(message, facts)
    if method is IncomingFilteringMethod.FROM_LEADS_CONTACTS_ACCOUNTS:
        match = next((r for r in sender_records if r.ref.entity in _CUSTOMERS), None)
        if match is not None:
            return Acceptance(
                record=record,
                reason=DecisionReason.SENDER_MATCH,
                explanation=f"{record.ref} tracks mail from {match.ref.entity} records",
            )
    if method is IncomingFilteringMethod.FROM_EMAIL_ENABLED_RECORDS and sender_records:
        return Acceptance(
            record=record,
            reason=DecisionReason.SENDER_MATCH,
            explanation=(
                f"{record.ref} tracks mail from CRM records; the sender is {sender_records[0].ref}"
            ),
        )
    return None


def _counterparts(message: ParsedHeaders, facts: RelevanceFacts) -> tuple[CrmRecord, ...]:
    """The records on the other side: the sender of received mail, the recipients of sent."""
    if facts.direction is EmailDirection.OUTGOING:
        records = [r for a in message.recipients for r in facts.records_for(a.address)]
    else:
        records = list(facts.records_for(message.sender.address)) if message.sender else []
    # Inactive rows do not resolve (OrgDB ResolveForInactiveEntities is off by default).
    return tuple(r for r in records if r.is_active)


def accepting_queues(
    message: ParsedHeaders, facts: RelevanceFacts, correlation: CorrelationMatch | None
) -> tuple[CrmRecord, ...]:
    """Every queue among the recipients whose filtering method accepts the message."""
    return tuple(
        record
        for record, visible in acceptance_candidates(message, facts)
        if visible
        and record.ref.entity == EntityName.QUEUE
        and acceptance(record, visible=True, message=message, facts=facts, correlation=correlation)
        is not None
    )


@attrs.frozen
class FilteringMethodRule:
    """Acceptance across recipients: track when any CRM user or queue in To/Cc/Bcc accepts.

    Each resolved user or queue recipient is asked with its own filtering method; one
    accepting recipient is enough (see :func:`acceptance_candidates` and
    :func:`acceptance`). Abstains when nobody accepts, so later rules may still accept.
    """

    name: str = "filtering-method"

    def evaluate(self, message: ParsedHeaders, facts: RelevanceFacts) -> Verdict | None:
        """Track with the first accepting user or queue, or abstain."""
        correlation = correlate(message, facts)
        for record, visible in acceptance_candidates(message, facts):
            accepted = acceptance(
                record, visible=visible, message=message, facts=facts, correlation=correlation
            )
            if accepted is not None:
                return Track(
                    reason=accepted.reason,
                    rule=self.name,
                    explanation=accepted.explanation,
                    accepting_entity=record.ref,
                    correlation=correlation,
                )
        return None


def describe_filter(method: IncomingFilteringMethod) -> str:
    """A filtering method in words (``email in response to CRM email`` ...)."""
    return _METHOD_LABELS[method]


def acceptance_summary(message: ParsedHeaders, facts: RelevanceFacts) -> str:
    """Who was asked and what they track, for the explanation of a rejection."""
    parts = []
    seen: set[str] = set()
    for address in message.recipients:
        for record in facts.principals_for(address.address):
            if str(record.ref) in seen:
                continue
            seen.add(str(record.ref))
            method = filtering_method_of(record, facts)
            parts.append(f"{record.ref} tracks {_METHOD_LABELS[method]}")
    owner = facts.mailbox_owner
    if owner is not None and str(owner.ref) not in seen:
        method = filtering_method_of(owner, facts)
        parts.append(
            f"{owner.ref} (this mailbox, not a visible recipient) tracks {_METHOD_LABELS[method]}"
        )
    if correlate(message, facts) is None and message.thread_ids:
        parts.append("the message answers no email stored in the CRM")
    return "; ".join(parts) if parts else "no recipient resolves to a CRM user or queue"


def is_automatic(message: ParsedHeaders) -> bool:
    """Whether ``Auto-Submitted`` marks the message as automatic (anything but ``no``)."""
    return (message.auto_submitted or "no").split(";")[0].strip().lower() != "no"


@attrs.frozen
class LoopGuardRule:
    """The loop guard, active when ``OrganizationSettings.loop_guard`` is on: rejects
    automatic mail and a sender with more than ``max_messages`` emails in ``window``."""

    name: str = "loop-guard"

    def evaluate(self, message: ParsedHeaders, facts: RelevanceFacts) -> Verdict | None:
        """Reject loops while the guard is on; no opinion otherwise."""
        guard = facts.organization.loop_guard
        if not guard.enabled or facts.direction is not EmailDirection.INCOMING:
            return None
        if is_automatic(message):
            return Reject(
                reason=DecisionReason.UNKNOWN,
                rule=self.name,
                explanation=f"automatic mail (Auto-Submitted: {message.auto_submitted})",
            )
        recent = facts.recent_from_sender or 0
        if recent >= guard.max_messages:
            minutes = int(guard.window.total_seconds() // 60)
            return Reject(
                reason=DecisionReason.UNKNOWN,
                rule=self.name,
                explanation=(
                    f"{recent} emails from this sender in the last {minutes} minutes "
                    f"(limit {guard.max_messages}): a mail loop or a flood"
                ),
            )
        return None


@attrs.frozen
class AutoReplyRule:
    """Reject automatic mail (``Auto-Submitted`` other than ``no``), always.

    Dynamics tracks auto-replies like any email; add this rule before the defaults to keep
    out-of-office replies and bounces out, without turning on the whole loop guard.
    """

    name: str = "auto-reply"

    def evaluate(self, message: ParsedHeaders, facts: RelevanceFacts) -> Verdict | None:
        """Reject automatic mail; no opinion otherwise."""
        if is_automatic(message):
            return Reject(
                reason=DecisionReason.UNKNOWN,
                rule=self.name,
                explanation=f"automatic mail (Auto-Submitted: {message.auto_submitted})",
            )
        return None


@attrs.frozen
class InternalEmailRule:
    """Email between CRM users and queues is tracked once, not twice (spec §4.2).

    Unless "track email sent between two users as two activities" is on, a message whose
    sender and at least one recipient are CRM users or queues is rejected with
    InternalEmailReject; with the detection enhancement (on by default) only when the same
    email is already stored in the other direction. Mail to a queue that accepts it is still
    tracked while ``do_not_ignore_internal_email_to_queues`` is on.
    """

    name: str = "internal-email"

    def evaluate(self, message: ParsedHeaders, facts: RelevanceFacts) -> Verdict | None:
        """Reject internal email already tracked the other way; no opinion otherwise."""
        org = facts.organization
        if org.track_email_sent_between_users_as_two_activities or message.sender is None:
            return None
        if not facts.principals_for(message.sender.address):
            return None
        if not any(facts.principals_for(a.address) for a in message.recipients):
            return None
        if org.ignore_internal_email_detection_enhancement and not any(
            a.direction is not facts.direction for a in facts.same_message
        ):
            return None
        if (
            org.do_not_ignore_internal_email_to_queues
            and facts.direction is EmailDirection.INCOMING
            and accepting_queues(message, facts, correlate(message, facts))
        ):
            return None
        return Reject(
            reason=DecisionReason.INTERNAL_EMAIL_REJECT,
            rule=self.name,
            explanation=(
                "email between CRM users is tracked once, and this one is already tracked "
                "in the other direction"
                if org.ignore_internal_email_detection_enhancement
                else "email between CRM users is not tracked"
            ),
        )
