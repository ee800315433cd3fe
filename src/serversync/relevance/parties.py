"""Party resolution: which CRM records an email's addresses become, and who owns the email."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from serversync.model import (
    CorrelationMatch,
    CrmRecord,
    EmailDirection,
    EntityName,
    ParsedHeaders,
    RecordRef,
)
from serversync.ports.relevance import RelevanceFacts

__all__ = ["MAX_SENDER_MATCHES", "choose_owner", "resolve_recipient", "resolve_sender"]

MAX_SENDER_MATCHES = 100
"""Above this many records, Dynamics leaves the sender unresolved."""

# Dynamics' order for a sender matching several records.
_SENDER_PRIORITY = (
    EntityName.SYSTEMUSER.value,
    EntityName.CONTACT.value,
    EntityName.ACCOUNT.value,
    EntityName.LEAD.value,
    EntityName.EQUIPMENT.value,
    EntityName.TEAM.value,
    EntityName.BUSINESSUNIT.value,
)
_EPOCH = datetime.min.replace(tzinfo=UTC)


def _rank(record: CrmRecord) -> tuple[int, int, int, datetime]:
    entity = record.ref.entity
    priority = (
        _SENDER_PRIORITY.index(entity) if entity in _SENDER_PRIORITY else len(_SENDER_PRIORITY)
    )
    created = record.created_on
    return (
        0 if record.is_active else 1,
        priority,
        0 if created is not None else 1,
        created if created is not None else _EPOCH,
    )


def _owners(facts: RelevanceFacts) -> set[RecordRef]:
    """Who "the owner of the mailbox or queue tracking the email" is."""
    owners = set()
    if facts.mailbox.owner is not None:
        owners.add(facts.mailbox.owner)
    if facts.mailbox_owner is not None and facts.mailbox_owner.owner is not None:
        owners.add(facts.mailbox_owner.owner)
    return owners


def resolve_sender(records: Sequence[CrmRecord], facts: RelevanceFacts) -> CrmRecord | None:
    """The one record the From address becomes, or ``None`` (an unresolved address).

    More than 100 matches, or several with ``UnresolveSenderInCaseOfMultipleMatch``, stay
    unresolved; one match wins whatever its state; otherwise a record owned by the
    processing mailbox's owner wins, then the first active by table priority
    (user, contact, account, lead, ...), then the earliest created.
    """
    if not records or len(records) > MAX_SENDER_MATCHES:
        return None
    if len(records) == 1:
        return records[0]
    if facts.organization.unresolve_sender_in_case_of_multiple_match:
        return None
    owners = _owners(facts)
    owned = [r for r in records if r.owner is not None and r.owner in owners]
    return min(owned or records, key=_rank)


def resolve_recipient(records: Sequence[CrmRecord], facts: RelevanceFacts) -> tuple[CrmRecord, ...]:
    """Every active record a recipient address becomes; empty means unresolved.

    With ``unresolveemailaddressifmultiplematch`` an address matching several records stays
    one unresolved party.
    """
    active = tuple(r for r in records if r.is_active)
    if len(active) > 1 and facts.organization.unresolve_email_address_if_multiple_match:
        return ()
    return active


def _users_in(records: Iterable[CrmRecord]) -> list[CrmRecord]:
    return [r for r in records if r.ref.entity == EntityName.SYSTEMUSER and r.is_active]


def choose_owner(
    message: ParsedHeaders,
    facts: RelevanceFacts,
    *,
    correlation: CorrelationMatch | None,
    sender: CrmRecord | None,
) -> RecordRef | None:
    """The owner of the created email, by Dynamics' rules.

    Among the users in To, then Cc, then Bcc: the owner of the correlated email; else the
    owner of the sender's record; else the first user. Without a user recipient, the
    processing mailbox's owner.
    """
    if facts.direction is EmailDirection.OUTGOING:
        return facts.mailbox.owner  # sent items belong to the user who sent them
    eligible: list[RecordRef] = []
    for address in message.recipients:
        for user in _users_in(facts.records_for(address.address)):
            if user.ref not in eligible:
                eligible.append(user.ref)
    if correlation is not None and correlation.owner in eligible:
        return correlation.owner
    if sender is not None and sender.owner is not None and sender.owner in eligible:
        return sender.owner
    if eligible:
        return eligible[0]
    return facts.mailbox.owner
