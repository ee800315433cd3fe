"""Composing outgoing email activities into RFC 5322 messages."""

from __future__ import annotations

import re
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from serversync.errors import ConfigurationError, ErrorScope
from serversync.model import (
    ActivityId,
    EmailActivity,
    MessageId,
    OutgoingMessage,
    ParticipationType,
)

__all__ = ["compose", "message_id_for", "outgoing_message_id"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# refold_source="none" keeps raw-set headers exactly as written.
_POLICY = policy.SMTP.clone(refold_source="none")
_HTML_HINT = re.compile(r"<\s*(html|body|p|div|br|table|span)\b", re.IGNORECASE)


def outgoing_message_id(activity_id: ActivityId, domain: str) -> MessageId:
    """The Message-ID serversync gives an outgoing email: derived from the activity id, so a
    retry reuses it and replies correlate by In-Reply-To."""
    local = _UNSAFE.sub("-", str(activity_id)) or "activity"
    return MessageId(f"<serversync.{local}@{domain}>")


def message_id_for(
    activity: EmailActivity, *, sender_address: str, message_id_domain: str | None = None
) -> MessageId:
    """The email's own Message-ID, or the one derived from its id and the sender's domain."""
    if activity.message_id is not None:
        return activity.message_id
    return outgoing_message_id(activity.id, message_id_domain or _domain_of(sender_address))


def _refuse_header_injection(activity: EmailActivity, sender_address: str) -> None:
    """A line break in a header value would start a new header (a Bcc, say): refuse it."""
    values = {
        "subject": activity.subject,
        "sender": sender_address,
        "In-Reply-To": activity.in_reply_to or "",
    }
    for party in activity.parties:
        values[f"{party.participation.name.lower()} {party.address!r}"] = party.address + party.name
    for where, value in values.items():
        if any(c in value for c in "\r\n\x00"):
            raise ConfigurationError(
                f"email {activity.id}: line break in the {where} (header injection refused)",
                scope=ErrorScope.ITEM,
            )


def _domain_of(address: str) -> str:
    _, _, domain = address.rpartition("@")
    return domain or "serversync.invalid"


def _format_party(address: str, name: str) -> str:
    try:
        return str(Address(display_name=name, addr_spec=address))
    except (ValueError, IndexError):
        return address


def compose(
    activity: EmailActivity,
    *,
    sender_address: str,
    now: datetime,
    message_id_domain: str | None = None,
) -> OutgoingMessage:
    """Build the message for ``activity`` sent from ``sender_address``.

    The Message-ID is the activity's own if it has one, else derived from its id. To and Cc
    become headers; Bcc recipients only join the envelope. Raises
    :class:`ConfigurationError` when there is no recipient address at all.
    """
    message_id = message_id_for(
        activity, sender_address=sender_address, message_id_domain=message_id_domain
    )
    _refuse_header_injection(activity, sender_address)
    to = activity.parties_of(ParticipationType.TO_RECIPIENT)
    cc = activity.parties_of(ParticipationType.CC_RECIPIENT)
    bcc = activity.parties_of(ParticipationType.BCC_RECIPIENT)
    recipients = tuple(dict.fromkeys(p.address for p in (*to, *cc, *bcc) if p.address))
    if not recipients:
        raise ConfigurationError(
            f"email {activity.id} has no recipient address", scope=ErrorScope.ITEM
        )
    senders = activity.parties_of(ParticipationType.SENDER)
    sender_name = senders[0].name if senders else ""

    try:
        msg = EmailMessage(policy=_POLICY)
        msg["From"] = _format_party(sender_address, sender_name)
        if to:
            msg["To"] = ", ".join(_format_party(p.address, p.name) for p in to)
        if cc:
            msg["Cc"] = ", ".join(_format_party(p.address, p.name) for p in cc)
        msg["Subject"] = activity.subject
        msg["Date"] = format_datetime(now)
        msg["Message-ID"] = message_id
        if activity.in_reply_to:
            # Set raw: the stdlib would RFC 2047-encode a msg-id longer than a folded line,
            # which no mail client recognises as a msg-id any more.
            msg.set_raw("In-Reply-To", activity.in_reply_to)
            msg.set_raw("References", activity.in_reply_to)
        body = activity.description or ""
        if _HTML_HINT.search(body):
            msg.set_content(body, subtype="html")
        else:
            msg.set_content(body)
        data = msg.as_bytes()
    except (ValueError, TypeError, UnicodeError, IndexError) as exc:
        # The stdlib refuses some header values; that email fails, not its mailbox.
        raise ConfigurationError(
            f"email {activity.id} cannot be composed: {exc}", scope=ErrorScope.ITEM
        ) from exc
    return OutgoingMessage(
        message_id=message_id,
        sender=sender_address,
        recipients=recipients,
        data=data,
    )
