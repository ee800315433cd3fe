"""Relevance: pure decisions on incoming messages (no awaits, no repositories).

``decide(rules, message, facts)`` asks each rule in order; the first verdict wins, and the
trace records every answer. When
every rule abstains the message is rejected with ``NoRecipientMatch`` (no CRM user or queue
among the recipients) or ``NoCorrelationMatch`` (there were some, and none accepted).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from serversync.model import (
    DecisionReason,
    EmailDirection,
    ParsedHeaders,
    RuleDecision,
    RuleStep,
)
from serversync.ports.relevance import Reject, RelevanceFacts, RelevanceRule, Track, Verdict
from serversync.relevance.correlation import correlate
from serversync.relevance.folders import (
    FolderTrackingRule,
    is_under_inbox,
    tracked_folders,
    validate_tracking_folder,
)
from serversync.relevance.rules import (
    AutoReplyRule,
    FilteringMethodRule,
    InternalEmailRule,
    InvalidSenderRule,
    LoopGuardRule,
    acceptance_summary,
    describe_filter,
    filtering_method_of,
)
from serversync.relevance.threading import normalize_message_id, parse_message_ids

__all__ = [
    "AutoReplyRule",
    "Decision",
    "FilteringMethodRule",
    "FolderTrackingRule",
    "InternalEmailRule",
    "InvalidSenderRule",
    "LoopGuardRule",
    "acceptance_summary",
    "correlate",
    "decide",
    "default_rules",
    "evaluate",
    "filtering_method_of",
    "is_under_inbox",
    "normalize_message_id",
    "parse_message_ids",
    "tracked_folders",
    "validate_tracking_folder",
]


def default_rules() -> tuple[RelevanceRule, ...]:
    """The built-in rules in Dynamics order; append or prepend your own."""
    return (
        LoopGuardRule(),
        InvalidSenderRule(),
        InternalEmailRule(),
        FolderTrackingRule(),
        FilteringMethodRule(),
    )


@attrs.frozen(kw_only=True)
class Decision:
    """A verdict with its trace: every rule consulted, in order, and what it said."""

    verdict: Verdict
    trace: tuple[RuleStep, ...]


def _step(rule: str, verdict: Verdict | None) -> RuleStep:
    if verdict is None:
        return RuleStep(rule=rule, decision=RuleDecision.ABSTAINED)
    return RuleStep(
        rule=rule,
        decision=RuleDecision.TRACKED if isinstance(verdict, Track) else RuleDecision.REJECTED,
        reason=verdict.reason,
        explanation=verdict.explanation,
    )


def decide(
    rules: Sequence[RelevanceRule], message: ParsedHeaders, facts: RelevanceFacts
) -> Decision:
    """Ask each rule in order until one decides; record every answer in the trace."""
    trace: list[RuleStep] = []
    for rule in rules:
        verdict = rule.evaluate(message, facts)
        trace.append(_step(rule.name, verdict))
        if verdict is not None:
            return Decision(verdict=verdict, trace=tuple(trace))
    fallback = _fallback(message, facts)
    trace.append(_step(fallback.rule, fallback))
    return Decision(verdict=fallback, trace=tuple(trace))


def evaluate(
    rules: Sequence[RelevanceRule], message: ParsedHeaders, facts: RelevanceFacts
) -> Verdict:
    """The verdict of the first rule with an opinion, or the Dynamics fallback rejection."""
    return decide(rules, message, facts).verdict


def _fallback(message: ParsedHeaders, facts: RelevanceFacts) -> Reject:
    if facts.direction is EmailDirection.OUTGOING:
        owner = facts.mailbox_owner
        what = (
            f"{owner.ref} tracks {describe_filter(filtering_method_of(owner, facts))}"
            if owner is not None
            else "the mailbox has no owner"
        )
        return Reject(
            reason=DecisionReason.NO_CORRELATION_MATCH,
            rule="no-acceptance",
            explanation=f"the sender's own filter does not accept this sent email: {what}",
        )
    summary = acceptance_summary(message, facts)
    has_principal = any(facts.principals_for(a.address) for a in message.recipients)
    if has_principal:
        return Reject(
            reason=DecisionReason.NO_CORRELATION_MATCH,
            rule="no-acceptance",
            explanation=f"no CRM user or queue among the recipients accepts it: {summary}",
        )
    return Reject(
        reason=DecisionReason.NO_RECIPIENT_MATCH,
        rule="no-acceptance",
        explanation=f"no recipient is a CRM user or queue that accepts it: {summary}",
    )
