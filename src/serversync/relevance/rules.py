"""Built-in relevance rules: sender validity and the incoming filtering methods."""

from __future__ import annotations

import attrs

from serversync.model import (
    CrmRecord,
    DecisionReason,
    EntityName,
    IncomingFilteringMethod,
    ParsedHeaders,
)
from serversync.ports.relevance import Reject, RelevanceFacts, Track, Verdict
from serversync.relevance.correlation import correlate

__all__ = [
    "AutoReplyRule",
    "FilteringMethodRule",
    "InvalidSenderRule",
    "acceptance_summary",
    "filtering_method_of",
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


@attrs.frozen
class FilteringMethodRule:
    """Acceptance across recipients: track when any CRM user or queue in To/Cc/Bcc accepts.

    Each resolved user or queue recipient is asked with its own filtering method; one
    accepting recipient is enough. The processing mailbox's owner is asked first; when it is
    not a visible recipient (distribution list, Bcc) only "All email messages" lets it
    accept. Abstains when nobody accepts, so later rules may still accept.
    """

    name: str = "filtering-method"

    def evaluate(self, message: ParsedHeaders, facts: RelevanceFacts) -> Verdict | None:
        """Track with the first accepting user or queue, or abstain."""
        correlation = correlate(message, facts)
        sender_records = facts.records_for(message.sender.address) if message.sender else ()
        visible: dict[str, CrmRecord] = {}
        for address in message.recipients:
            for record in facts.principals_for(address.address):
                visible.setdefault(str(record.ref), record)
        candidates = list(visible.values())
        owner = facts.mailbox_owner
        if owner is not None and owner.is_active:
            key = str(owner.ref)
            if key in visible:
                candidates.remove(visible[key])
                candidates.insert(0, visible[key])
            else:
                candidates.insert(0, owner)
        for record in candidates:
            method = filtering_method_of(record, facts)
            is_visible = str(record.ref) in visible
            if method is IncomingFilteringMethod.ALL_EMAIL_MESSAGES:
                return Track(
                    reason=DecisionReason.ACCEPT_ALL,
                    rule=self.name,
                    explanation=f"{record.ref} accepts all email messages",
                    accepting_entity=record.ref,
                    correlation=correlation,
                )
            if not is_visible:
                continue
            if method is IncomingFilteringMethod.IN_RESPONSE_TO_CRM_EMAIL and correlation:
                return Track(
                    reason=DecisionReason.CORRELATION_MATCH,
                    rule=self.name,
                    explanation=(
                        f"{record.ref} tracks replies; the message answers "
                        f"email {correlation.correlated_activity_id}"
                    ),
                    accepting_entity=record.ref,
                    correlation=correlation,
                )
            if method is IncomingFilteringMethod.FROM_LEADS_CONTACTS_ACCOUNTS:
                match = next((r for r in sender_records if r.ref.entity in _CUSTOMERS), None)
                if match is not None:
                    return Track(
                        reason=DecisionReason.SENDER_MATCH,
                        rule=self.name,
                        explanation=f"{record.ref} tracks mail from {match.ref.entity} records",
                        accepting_entity=record.ref,
                        correlation=correlation,
                    )
            if method is IncomingFilteringMethod.FROM_EMAIL_ENABLED_RECORDS and sender_records:
                return Track(
                    reason=DecisionReason.SENDER_MATCH,
                    rule=self.name,
                    explanation=(
                        f"{record.ref} tracks mail from CRM records; the sender is "
                        f"{sender_records[0].ref}"
                    ),
                    accepting_entity=record.ref,
                    correlation=correlation,
                )
        return None


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


@attrs.frozen
class AutoReplyRule:
    """Opt-in loop guard: reject automatic mail (``Auto-Submitted`` other than ``no``).

    Dynamics tracks auto-replies like any email; add this rule before the defaults to stop
    out-of-office and bounce loops from becoming activities.
    """

    name: str = "auto-reply"

    def evaluate(self, message: ParsedHeaders, facts: RelevanceFacts) -> Verdict | None:
        """Reject automatic mail; no opinion otherwise."""
        value = (message.auto_submitted or "no").split(";")[0].strip().lower()
        if value != "no":
            return Reject(
                reason=DecisionReason.UNKNOWN,
                rule=self.name,
                explanation=f"automatic mail (Auto-Submitted: {message.auto_submitted})",
            )
        return None
