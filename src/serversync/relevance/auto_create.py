"""Contacts and leads for unknown senders ("Automatically create records", spec §3.5, G7).

Dynamics documents the option for promoting email by hand and is silent on automatic
tracking; serversync applies it to tracked incoming email when both switches are on: the
organisation's ``AutoCreateContactOnPromote`` and the accepting user's personal option. Queues
have no such option, so mail a queue accepts creates nothing.
"""

from __future__ import annotations

from serversync.model import (
    CrmRecord,
    EmailDirection,
    EntityName,
    MessageId,
    ParsedHeaders,
    RecordRef,
    SenderRecordRequest,
)
from serversync.ports.relevance import RelevanceFacts, Track

__all__ = ["AUTO_CREATED_TYPES", "sender_record_to_create"]

AUTO_CREATED_TYPES = frozenset({EntityName.CONTACT.value, EntityName.LEAD.value})
"""What a user's option may ask to create."""


def _record_of(ref: RecordRef, facts: RelevanceFacts) -> CrmRecord | None:
    if facts.mailbox_owner is not None and facts.mailbox_owner.ref == ref:
        return facts.mailbox_owner
    for records in facts.records.values():
        for record in records:
            if record.ref == ref:
                return record
    return None


def sender_record_to_create(
    headers: ParsedHeaders,
    verdict: Track,
    facts: RelevanceFacts,
    *,
    message_id: MessageId | None = None,
) -> SenderRecordRequest | None:
    """The contact or lead to create before storing a tracked email, or ``None``.

    Only for incoming mail whose sender address matches no CRM record at all (an address
    matching several records stays unresolved, as Dynamics leaves it), accepted by an active
    user whose option names ``"contact"`` or ``"lead"``, with the organisation switch on.
    """
    sender = headers.sender
    if (
        sender is None
        or facts.direction is not EmailDirection.INCOMING
        or not facts.organization.auto_create_contact_on_promote
        or verdict.accepting_entity is None
        or verdict.accepting_entity.entity != EntityName.SYSTEMUSER.value
        or facts.records_for(sender.address)
    ):
        return None
    user = _record_of(verdict.accepting_entity, facts)
    if user is None or not user.is_active or user.auto_create_record_type not in AUTO_CREATED_TYPES:
        return None
    assert user.auto_create_record_type is not None
    return SenderRecordRequest(
        entity=user.auto_create_record_type,
        email_address=sender.address,
        name=sender.name or "",
        owner=user.ref,
        message_id=message_id,
    )
