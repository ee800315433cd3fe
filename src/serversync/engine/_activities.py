"""Pure construction of incoming email activities from a parsed message and a verdict."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from serversync.model import (
    ActivityId,
    ActivityParty,
    AttachmentInfo,
    CorrelationMethod,
    EmailActivity,
    EmailAddress,
    EmailDirection,
    EmailStatus,
    EntityName,
    Mailbox,
    MessageId,
    ParsedHeaders,
    ParsedMessage,
    ParticipationType,
    RecordRef,
)
from serversync.ports.relevance import RelevanceFacts, Track
from serversync.relevance.conversation import base_conversation_index_hash
from serversync.relevance.parties import choose_owner, resolve_recipient, resolve_sender
from serversync.relevance.rules import accepting_queues
from serversync.settings import OrganizationSettings

__all__ = ["NOTIFICATION_ATTACHMENTS_DROPPED", "build_incoming_activity", "queues_for"]

NOTIFICATION_ATTACHMENTS_DROPPED = 1
"""``email.notifications``: saved, but not every attachment could be saved."""


def _parties(
    participation: ParticipationType,
    addresses: Sequence[EmailAddress],
    facts: RelevanceFacts,
) -> list[ActivityParty]:
    parties: list[ActivityParty] = []
    for address in addresses:
        records = resolve_recipient(facts.records_for(address.address), facts)
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


def _allowed(attachment: AttachmentInfo, org: OrganizationSettings) -> bool:
    name = (attachment.filename or "").lower()
    extension = name.rpartition(".")[2] if "." in name else ""
    if extension and extension in org.blocked_attachment_extensions:
        return False
    return attachment.size <= org.max_upload_file_size


def _body(message: ParsedMessage) -> str:
    if message.body_html is not None:
        return message.body_html
    return message.body_text or ""


def queues_for(
    verdict: Track, message: ParsedHeaders, facts: RelevanceFacts
) -> tuple[RecordRef, ...]:
    """Queues that get a queue item when the email is created (spec email-relevance §1.4).

    The accepting queue; with ``CreateQueueItemsForAcceptingQueueRecipients`` every queue
    recipient that accepts; with ``CreateQueueItemForSynchronizingMailbox`` the queue whose
    mailbox is being processed when it is not a visible recipient (distribution list, Bcc).
    """
    org = facts.organization
    queues: dict[str, RecordRef] = {}
    accepting = verdict.accepting_entity
    if accepting is not None and accepting.entity == EntityName.QUEUE:
        queues[str(accepting)] = accepting
    if org.create_queue_items_for_accepting_queue_recipients:
        for queue in accepting_queues(message, facts, verdict.correlation):
            queues.setdefault(str(queue.ref), queue.ref)
    owner = facts.mailbox.owner
    visible = {r.ref for a in message.recipients for r in facts.principals_for(a.address)}
    if (
        owner is not None
        and owner.entity == EntityName.QUEUE
        and org.create_queue_item_for_synchronizing_mailbox
        and facts.direction is EmailDirection.INCOMING
        and owner not in visible
    ):
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
    """The email activity Dynamics would create for a tracked incoming message.

    Attachments over the organisation's size limit or with a blocked extension are left out
    and ``notifications`` says so; the email itself is never refused for them.
    """
    headers = message.headers
    org = facts.organization
    # A message read from the sent items is the mailbox owner's outgoing email.
    outgoing = facts.direction is EmailDirection.OUTGOING
    parties: list[ActivityParty] = []
    sender = None
    if headers.sender is not None:
        sender = resolve_sender(facts.records_for(headers.sender.address), facts)
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
    extra_headers: list[tuple[str, str]] = []
    if headers.auto_submitted is not None:
        extra_headers.append(("Auto-Submitted", headers.auto_submitted))
    if headers.reply_to:
        extra_headers.append(("Reply-To", ", ".join(str(a) for a in headers.reply_to)))
    kept = tuple(a for a in message.attachments if _allowed(a, org))

    return EmailActivity(
        id=activity_id,
        direction=facts.direction,
        status=EmailStatus.SENT if outgoing else EmailStatus.RECEIVED,
        subject=headers.subject,
        description=message.body_html
        if message.body_html is not None
        else (message.body_text or ""),
        message_id=message_id,
        in_reply_to=headers.in_reply_to[0] if headers.in_reply_to else None,
        conversation_index=headers.conversation_index,
        base_conversation_index_hash=base_conversation_index_hash(headers.conversation_index),
        parties=tuple(parties),
        sender=headers.sender.address if headers.sender else None,
        to_recipients=";".join(a.address for a in headers.to) or None,
        regarding=verdict.regarding or (correlation.regarding if correlation else None),
        owner=choose_owner(headers, facts, correlation=correlation, sender=sender),
        tracking_folder_id=verdict.tracking_folder_id,
        correlation_method=correlation.method if correlation else CorrelationMethod.NONE,
        correlated_activity_id=correlation.correlated_activity_id if correlation else None,
        parent_activity_id=correlation.parent_activity_id if correlation else None,
        correlated_subject_changed=correlation.subject_changed if correlation else False,
        accepting_entity=verdict.accepting_entity,
        receiving_mailbox_id=None if outgoing else mailbox.id,
        sender_mailbox_id=mailbox.id if outgoing else None,
        received_on=None if outgoing else received_on,
        sent_on=received_on if outgoing else None,
        attachments=kept,
        notifications=NOTIFICATION_ATTACHMENTS_DROPPED
        if len(kept) < len(message.attachments)
        else 0,
        internet_message_headers=tuple(extra_headers),
    )
