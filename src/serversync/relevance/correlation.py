"""Correlation: linking an incoming email to an email already in the CRM."""

from __future__ import annotations

from serversync.model import CorrelationMatch, CorrelationMethod, ParsedHeaders
from serversync.ports.relevance import RelevanceFacts

__all__ = ["correlate"]


def correlate(message: ParsedHeaders, facts: RelevanceFacts) -> CorrelationMatch | None:
    """The earlier email this message answers, by In-Reply-To then References (newest first).

    Header correlation is exact, so it comes first, as in Dynamics; the match takes the
    earlier email's Regarding and owner and becomes its parent. Returns ``None`` when
    correlation is switched off for the organisation or nothing matches.
    """
    if not facts.organization.email_correlation_enabled:
        return None
    by_id = {a.message_id: a for a in facts.thread_activities if a.message_id is not None}
    for mid in message.thread_ids:
        activity = by_id.get(mid)
        if activity is not None:
            return CorrelationMatch(
                method=CorrelationMethod.IN_REPLY_TO,
                correlated_activity_id=activity.id,
                parent_activity_id=activity.id,
                regarding=activity.regarding,
                owner=activity.owner,
            )
    return None
