"""Pure construction of incoming email activities from a parsed message and a verdict."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from serversync.model import (
    ActivityId,
    ActivityParty,
    CorrelationMethod,
    CrmRecord,
    EmailActivity,
    EmailAddress,
    EmailDirection,
    EmailStatus,
    EntityName,
    Mailbox,
    MessageId,
    ParsedMessage,
    ParticipationType,
    RecordRef,
)
from serversync.ports.relevance import RelevanceFacts, Track

__all__ = ["build_incoming_activity", "queues_for"]

# Sender resolution order when several records share the address (Dynamics documents it).
_SENDER_PRIORITY = (
    EntityName.SYSTEMUSER.value,
    EntityName.CONTACT.value,
    EntityName.ACCOUNT.value,
    EntityName.LEAD.value,
    EntityName.EQUIPMENT.value,
    EntityName.TEAM.value,
    EntityName.BUSINESSUNIT.value,
)


def _resolve_sender(records: Sequence[CrmRecord]) -> CrmRecord | None:
    """Active records first, then by table priority, then the earliest created."""
    if not records:
        return None

    def rank(record: CrmRecord) -> tuple[int, int, int, datetime]:
        entity = record.ref.entity
        priority = (
            _SENDER_PRIORITY.index(entity) if entity in _SENDER_PRIORITY else len(_SENDER_PRIORITY)
        )
        created = record.created_on
        return (
            0 if record.is_active else 1,
            priority,
            0 if created is not None else 1,
            created if created is not None else datetime.min.replace(tzinfo=UTC),
        )

    return min(records, key=rank)


def _parties(
    participation: ParticipationType,
    addresses: Sequence[EmailAddress],
    facts: RelevanceFacts,
) -> list[ActivityParty]:
    parties: list[ActivityParty] = []
    for address in addresses:
        records = [r for r in facts.records_for(address.address) if r.is_active]
        if not records:
            parties.append(
                ActivityParty(
                    participation=participation, address=address.address, name=address.name
                )
            )
            continue
        parties.extend(
            ActivityParty(
                participation=participation,
                address=address.address,
                record=record.ref,
                name=record.name or address.name,
            )
            for record in records
        )
    return parties


def queues_for(verdict: Track, facts: RelevanceFacts) -> tuple[RecordRef, ...]:
    """Queues that get a queue item: the accepting queue and the processing queue mailbox."""
    queues: dict[str, RecordRef] = {}
    if verdict.accepting_entity is not None and verdict.accepting_entity.entity == EntityName.QUEUE:
        queues[str(verdict.accepting_entity)] = verdict.accepting_entity
    owner = facts.mailbox.owner
    if owner is not None and owner.entity == EntityName.QUEUE:
        queues.setdefault(str(owner), owner)
    return tuple(queues.values())


def build_incoming_activity(
    *,
    activity_id: ActivityId,
    message_id: MessageId,
    message: ParsedMessage,
    verdict: Track,
    facts: RelevanceFacts,
    mailbox: Mailbox,
    received_on: datetime,
) -> EmailActivity:
    """The email activity Dynamics would create for a tracked incoming message."""
    headers = message.headers
    parties: list[ActivityParty] = []
    if headers.sender is not None:
        sender = _resolve_sender(facts.records_for(headers.sender.address))
        parties.append(
            ActivityParty(
                participation=ParticipationType.SENDER,
                address=headers.sender.address,
                record=sender.ref if sender else None,
                name=(sender.name if sender and sender.name else headers.sender.name),
            )
        )
    parties += _parties(ParticipationType.TO_RECIPIENT, headers.to, facts)
    parties += _parties(ParticipationType.CC_RECIPIENT, headers.cc, facts)
    parties += _parties(ParticipationType.BCC_RECIPIENT, headers.bcc, facts)

    correlation = verdict.correlation
    owner: RecordRef | None = None
    if correlation is not None and correlation.owner is not None:
        owner = correlation.owner
    elif verdict.accepting_entity is not None:
        owner = verdict.accepting_entity
    else:
        owner = mailbox.owner

    extra_headers: list[tuple[str, str]] = []
    if headers.auto_submitted is not None:
        extra_headers.append(("Auto-Submitted", headers.auto_submitted))
    if headers.reply_to:
        extra_headers.append(("Reply-To", ", ".join(str(a) for a in headers.reply_to)))

    return EmailActivity(
        id=activity_id,
        direction=EmailDirection.INCOMING,
        status=EmailStatus.RECEIVED,
        subject=headers.subject,
        description=message.body_html
        if message.body_html is not None
        else (message.body_text or ""),
        message_id=message_id,
        in_reply_to=headers.in_reply_to[0] if headers.in_reply_to else None,
        conversation_index=headers.conversation_index,
        parties=tuple(parties),
        sender=headers.sender.address if headers.sender else None,
        to_recipients=";".join(a.address for a in headers.to) or None,
        regarding=verdict.regarding or (correlation.regarding if correlation else None),
        owner=owner,
        correlation_method=correlation.method if correlation else CorrelationMethod.NONE,
        correlated_activity_id=correlation.correlated_activity_id if correlation else None,
        parent_activity_id=correlation.parent_activity_id if correlation else None,
        accepting_entity=verdict.accepting_entity,
        receiving_mailbox_id=mailbox.id,
        received_on=received_on,
        attachments=message.attachments,
        internet_message_headers=tuple(extra_headers),
    )
