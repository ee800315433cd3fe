"""Relevance: pure decisions on incoming messages (no awaits, no repositories).

``evaluate(rules, message, facts)`` asks each rule in order; the first verdict wins. When
every rule abstains the message is rejected with ``NoRecipientMatch`` (no CRM user or queue
among the recipients) or ``NoCorrelationMatch`` (there were some, and none accepted).
"""

from __future__ import annotations

from collections.abc import Sequence

from serversync.model import DecisionReason, ParsedHeaders
from serversync.ports.relevance import Reject, RelevanceFacts, RelevanceRule, Verdict
from serversync.relevance.correlation import correlate
from serversync.relevance.rules import FilteringMethodRule, InvalidSenderRule, filtering_method_of
from serversync.relevance.threading import normalize_message_id, parse_message_ids

__all__ = [
    "FilteringMethodRule",
    "InvalidSenderRule",
    "correlate",
    "default_rules",
    "evaluate",
    "filtering_method_of",
    "normalize_message_id",
    "parse_message_ids",
]


def default_rules() -> tuple[RelevanceRule, ...]:
    """The built-in rules in Dynamics order; append or prepend your own."""
    return (InvalidSenderRule(), FilteringMethodRule())


def evaluate(
    rules: Sequence[RelevanceRule], message: ParsedHeaders, facts: RelevanceFacts
) -> Verdict:
    """The verdict of the first rule with an opinion, or the Dynamics fallback rejection."""
    for rule in rules:
        verdict = rule.evaluate(message, facts)
        if verdict is not None:
            return verdict
    has_principal = any(facts.principals_for(a.address) for a in message.recipients)
    if has_principal:
        return Reject(
            reason=DecisionReason.NO_CORRELATION_MATCH,
            rule="no-acceptance",
            explanation="no CRM user or queue among the recipients accepts this message",
        )
    return Reject(
        reason=DecisionReason.NO_RECIPIENT_MATCH,
        rule="no-acceptance",
        explanation="no recipient is a CRM user or queue that accepts this message",
    )
