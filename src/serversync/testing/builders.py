"""Builders for test data: profiles, mailboxes, CRM records, raw emails and CRM emails.

Every builder takes keyword overrides for any field, so tests state only what matters.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from serversync.model import (
    ActEntity,
    ActivityId,
    ActivityParty,
    ConditionOperator,
    CrmRecord,
    EmailActivity,
    EmailApprovalStatus,
    EmailDirection,
    EmailServerProfile,
    EmailStatus,
    EntityName,
    FieldCondition,
    FilterGroup,
    IncomingFilteringMethod,
    Mailbox,
    MailboxId,
    MessageId,
    ParticipationType,
    ProfileId,
    RecordRef,
    ServerEndpoint,
    ServerType,
    SyncFilter,
)

__all__ = [
    "a_contact",
    "a_mailbox",
    "a_pending_email",
    "a_profile",
    "a_queue",
    "a_sent_email",
    "a_sync_filter",
    "a_user",
    "an_account",
    "an_email",
]

_serial = itertools.count(1)


def a_profile(**overrides: Any) -> EmailServerProfile:
    """An active IMAP/SMTP profile named "In-memory" with id ``profile-1``."""
    fields: dict[str, Any] = {
        "id": ProfileId("profile-1"),
        "name": "In-memory",
        "server_type": ServerType.IMAP_SMTP,
        "incoming": ServerEndpoint(host="memory"),
    }
    fields.update(overrides)
    return EmailServerProfile(**fields)


def a_mailbox(address: str, *, owner: RecordRef | None = None, **overrides: Any) -> Mailbox:
    """An active, approved mailbox for ``address`` on ``profile-1`` that may use its credentials.

    Its id is ``mailbox:<address>``.
    """
    fields: dict[str, Any] = {
        "id": MailboxId(f"mailbox:{address.lower()}"),
        "name": address,
        "email_address": address.lower(),
        "owner": owner,
        "profile_id": ProfileId("profile-1"),
        "approval": EmailApprovalStatus.APPROVED,
        "allow_email_connector_to_use_credentials": True,
    }
    fields.update(overrides)
    return Mailbox(**fields)


def _record(entity: EntityName, address: str, **overrides: Any) -> CrmRecord:
    fields: dict[str, Any] = {
        "ref": RecordRef(entity.value, address.lower()),
        "email_address": address,
        "name": address.split("@")[0].replace(".", " ").title(),
    }
    fields.update(overrides)
    return CrmRecord(**fields)


def a_user(
    address: str,
    *,
    filtering: IncomingFilteringMethod = IncomingFilteringMethod.IN_RESPONSE_TO_CRM_EMAIL,
    **overrides: Any,
) -> CrmRecord:
    """A CRM user with a mailbox id of ``mailbox:<address>`` and an approved address."""
    fields: dict[str, Any] = {
        "incoming_filtering_method": filtering,
        "mailbox_id": MailboxId(f"mailbox:{address.lower()}"),
        "approval": EmailApprovalStatus.APPROVED,
    }
    fields.update(overrides)
    return _record(EntityName.SYSTEMUSER, address, **fields)


def a_queue(
    address: str,
    *,
    filtering: IncomingFilteringMethod = IncomingFilteringMethod.ALL_EMAIL_MESSAGES,
    **overrides: Any,
) -> CrmRecord:
    """A CRM queue (accepting all email by default) with a mailbox id of ``mailbox:<address>``."""
    fields: dict[str, Any] = {
        "incoming_filtering_method": filtering,
        "mailbox_id": MailboxId(f"mailbox:{address.lower()}"),
        "approval": EmailApprovalStatus.APPROVED,
    }
    fields.update(overrides)
    return _record(EntityName.QUEUE, address, **fields)


def a_contact(address: str, **overrides: Any) -> CrmRecord:
    """A CRM contact."""
    return _record(EntityName.CONTACT, address, **overrides)


def an_account(address: str, **overrides: Any) -> CrmRecord:
    """A CRM account."""
    return _record(EntityName.ACCOUNT, address, **overrides)


def an_email(
    *,
    sender: str = "customer@fabrikam.example",
    to: Sequence[str] = ("user@contoso.example",),
    cc: Sequence[str] = (),
    subject: str = "Hello",
    body: str = "Hello there.",
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    date: datetime | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """A raw RFC 5322 message. ``message_id=""`` leaves the Message-ID header out."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date or datetime(2026, 1, 5, 8, 0, tzinfo=UTC))
    if message_id is None:
        message_id = f"<msg-{next(_serial)}@fabrikam.example>"
    if message_id:
        msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references or in_reply_to:
        msg["References"] = " ".join(references or (in_reply_to or "",))
    for name, value in headers:
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes()


def a_sent_email(
    *,
    sender_mailbox: Mailbox,
    to: Sequence[str],
    subject: str,
    message_id: str,
    regarding: RecordRef | None = None,
    **overrides: Any,
) -> EmailActivity:
    """A CRM email already sent from ``sender_mailbox`` (what replies correlate with)."""
    fields: dict[str, Any] = {
        "id": ActivityId(f"email-{next(_serial)}"),
        "direction": EmailDirection.OUTGOING,
        "status": EmailStatus.SENT,
        "subject": subject,
        "message_id": MessageId(message_id),
        "sender_mailbox_id": sender_mailbox.id,
        "owner": sender_mailbox.owner,
        "regarding": regarding,
        "sender": sender_mailbox.email_address,
        "parties": _parties(sender_mailbox, to),
    }
    fields.update(overrides)
    return EmailActivity(**fields)


def a_pending_email(
    *,
    sender_mailbox: Mailbox,
    to: Sequence[str],
    subject: str,
    body: str = "Hello from the CRM.",
    **overrides: Any,
) -> EmailActivity:
    """A CRM email in Pending Send from ``sender_mailbox``."""
    fields: dict[str, Any] = {
        "id": ActivityId(f"email-{next(_serial)}"),
        "direction": EmailDirection.OUTGOING,
        "status": EmailStatus.PENDING_SEND,
        "subject": subject,
        "description": body,
        "sender_mailbox_id": sender_mailbox.id,
        "owner": sender_mailbox.owner,
        "sender": sender_mailbox.email_address,
        "parties": _parties(sender_mailbox, to),
    }
    fields.update(overrides)
    return EmailActivity(**fields)


def _parties(sender: Mailbox, to: Sequence[str]) -> tuple[ActivityParty, ...]:
    return (
        ActivityParty(
            participation=ParticipationType.SENDER,
            address=sender.email_address,
            record=sender.owner,
        ),
        # Recipients resolved to contacts: Dynamics sends to unresolved addresses only when the
        # organisation allows it.
        *(
            ActivityParty(
                participation=ParticipationType.TO_RECIPIENT,
                address=a,
                record=RecordRef(EntityName.CONTACT.value, a.lower()),
            )
            for a in to
        ),
    )


def a_sync_filter(owner: RecordRef, entity: ActEntity, **overrides: Any) -> SyncFilter:
    """An enabled synchronization filter of ``owner`` for ``entity``: the records they own
    ("My Outlook Contacts" and the like)."""
    fields: dict[str, Any] = {
        "id": f"filter-{entity.value}-{owner.id}-{next(_serial)}",
        "name": f"My {entity.value}s",
        "owner": owner,
        "entity": entity,
        "criteria": FilterGroup(
            conditions=(FieldCondition(field="owner", operator=ConditionOperator.EQ_USERID),)
        ),
    }
    fields.update(overrides)
    return SyncFilter(**fields)
