"""Correlation: linking an incoming email to an email already in the CRM.

Methods run in Dynamics' order and the first match wins: In-Reply-To/References (exact),
tracking token, conversation index, smart matching (off by default). Header and
conversation-index matches make the earlier email the parent; token and smart matches
only correlate, as in Dynamics.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from serversync.model import (
    CorrelationMatch,
    CorrelationMethod,
    CorrelationQuery,
    EmailActivity,
    MessageId,
    ParsedHeaders,
)
from serversync.ports.relevance import RelevanceFacts
from serversync.relevance.conversation import base_conversation_index_hash
from serversync.relevance.smart_matching import normalize_subject, recipients_match, subjects_match
from serversync.relevance.tokens import find_tokens, strip_tokens
from serversync.settings import OrganizationSettings

__all__ = ["correlate", "correlation_query", "is_forward"]

_FORWARD = re.compile(r"^\s*(fw|fwd|wg|tr|rv|enc|vs|doorst)\s*:", re.IGNORECASE)
_EPOCH = datetime.min.replace(tzinfo=UTC)


def is_forward(subject: str) -> bool:
    """Whether the subject marks a forward (``FW:``, ``Fwd:``, ``WG:`` ...)."""
    return _FORWARD.match(subject) is not None


def _participants(message: ParsedHeaders) -> tuple[str, ...]:
    addresses = [a.address for a in message.recipients]
    if message.sender is not None:
        addresses.insert(0, message.sender.address)
    return tuple(dict.fromkeys(addresses))


def correlation_query(
    message: ParsedHeaders, org: OrganizationSettings, *, now: datetime | None
) -> CorrelationQuery:
    """What to look up so that :func:`correlate` can decide (switches already applied)."""
    if not org.email_correlation_enabled or (
        org.do_not_correlate_forwarded_emails_as_replies and is_forward(message.subject)
    ):
        return CorrelationQuery()
    headers = not org.ignore_conversation_index_and_in_reply_to
    tokens = org.tracking_tokens
    smart = org.smart_matching
    return CorrelationQuery(
        message_ids=message.thread_ids if headers else (),
        tracking_tokens=find_tokens(message.subject, tokens) if tokens.enabled else (),
        conversation_index_hash=(
            base_conversation_index_hash(message.conversation_index) if headers else None
        ),
        participants=_participants(message) if smart.enabled else (),
        # Without a clock (hand-built facts) smart matching looks at every candidate.
        since=now - smart.window if smart.enabled and now is not None else None,
    )


def _newest(activities: Iterable[EmailActivity]) -> EmailActivity | None:
    ordered = sorted(activities, key=lambda a: (a.last_activity_on or _EPOCH, a.id), reverse=True)
    return ordered[0] if ordered else None


def _match(
    method: CorrelationMethod,
    activity: EmailActivity,
    message: ParsedHeaders,
    org: OrganizationSettings,
) -> CorrelationMatch:
    parent = method in (CorrelationMethod.IN_REPLY_TO, CorrelationMethod.CONVERSATION_INDEX)
    tokens = org.tracking_tokens
    ours = normalize_subject(strip_tokens(message.subject, tokens), org.smart_matching)
    theirs = normalize_subject(strip_tokens(activity.subject, tokens), org.smart_matching)
    return CorrelationMatch(
        method=method,
        correlated_activity_id=activity.id,
        parent_activity_id=activity.id if parent else None,
        regarding=activity.regarding,
        owner=activity.owner,
        subject_changed=ours != theirs,
    )


def correlate(message: ParsedHeaders, facts: RelevanceFacts) -> CorrelationMatch | None:
    """The earlier email this message belongs with, or ``None``.

    Only ``facts.candidates`` are considered, so the answer depends on the message, the
    candidates and the settings alone (deterministic).
    """
    org = facts.organization
    query = correlation_query(message, org, now=facts.now)
    if query.is_empty:
        return None
    candidates = facts.candidates
    by_id: dict[MessageId, list[EmailActivity]] = {}
    for activity in candidates:
        if activity.message_id is not None:
            by_id.setdefault(activity.message_id, []).append(activity)
    for mid in query.message_ids:
        found = _newest(by_id.get(mid, ()))
        if found is not None:
            return _match(CorrelationMethod.IN_REPLY_TO, found, message, org)
    for token in query.tracking_tokens:
        found = _newest(a for a in candidates if a.tracking_token == token)
        if found is not None:
            return _match(CorrelationMethod.TRACKING_TOKEN, found, message, org)
    if query.conversation_index_hash is not None:
        found = _newest(
            a for a in candidates if a.base_conversation_index_hash == query.conversation_index_hash
        )
        if found is not None:
            return _match(CorrelationMethod.CONVERSATION_INDEX, found, message, org)
    if query.participants:
        smart = org.smart_matching
        found = _newest(
            a
            for a in candidates
            if (query.since is None or (a.last_activity_on or _EPOCH) >= query.since)
            and subjects_match(
                strip_tokens(message.subject, org.tracking_tokens),
                strip_tokens(a.subject, org.tracking_tokens),
                smart,
            )
            and recipients_match(query.participants, (p.address for p in a.parties), smart)
        )
        if found is not None:
            return _match(CorrelationMethod.SMART_MATCHING, found, message, org)
    return None
