"""Composing outgoing email activities into RFC 5322 messages."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from html.parser import HTMLParser

from serversync.errors import ConfigurationError, ErrorScope, MessageTooLargeError
from serversync.model import (
    ActivityId,
    EmailActivity,
    MessageId,
    OutgoingAttachment,
    OutgoingMessage,
    ParticipationType,
)

__all__ = ["compose", "html_to_text", "message_id_for", "outgoing_message_id"]

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


class _TextOfHtml(HTMLParser):
    """Plain text of an HTML body, for the text/plain alternative."""

    _BREAKS = frozenset({"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in self._BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """A readable plain-text rendering of an HTML body."""
    parser = _TextOfHtml()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line) + "\n"


def _check_attachment(
    activity: EmailActivity,
    attachment: OutgoingAttachment,
    max_size: int | None,
    blocked: Collection[str],
) -> None:
    name = attachment.filename.lower()
    extension = name.rpartition(".")[2] if "." in name else ""
    if extension and extension in blocked:
        raise ConfigurationError(
            f"email {activity.id}: attachment {attachment.filename!r} has a blocked file type",
            scope=ErrorScope.ITEM,
        )
    if max_size is not None and len(attachment.data) > max_size:
        raise ConfigurationError(
            f"email {activity.id}: attachment {attachment.filename!r} is larger than "
            f"{max_size} bytes",
            scope=ErrorScope.ITEM,
        )


def compose(
    activity: EmailActivity,
    *,
    sender_address: str,
    now: datetime,
    message_id_domain: str | None = None,
    attachments: Sequence[OutgoingAttachment] = (),
    max_attachment_size: int | None = None,
    blocked_extensions: Collection[str] = (),
    max_message_size: int | None = None,
) -> OutgoingMessage:
    """Build the message for ``activity`` sent from ``sender_address``.

    The Message-ID is the activity's own if it has one, else derived from its id. To and Cc
    become headers; Bcc recipients only join the envelope. An HTML body goes out with a
    plain-text alternative. Raises :class:`ConfigurationError` (scope item) when there is no
    recipient address, a header would carry a line break, or an attachment is too large or
    of a blocked type, and :class:`MessageTooLargeError` (scope item) when the whole message
    is larger than ``max_message_size`` bytes.
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
            msg.set_content(html_to_text(body))
            msg.add_alternative(body, subtype="html")
        else:
            msg.set_content(body)
        for attachment in attachments:
            _check_attachment(activity, attachment, max_attachment_size, blocked_extensions)
            maintype, _, subtype = attachment.content_type.partition("/")
            msg.add_attachment(
                attachment.data,
                maintype=maintype or "application",
                subtype=subtype or "octet-stream",
                filename=attachment.filename,
            )
        data = msg.as_bytes()
    except (ValueError, TypeError, UnicodeError, IndexError) as exc:
        # The stdlib refuses some header values; that email fails, not its mailbox.
        raise ConfigurationError(
            f"email {activity.id} cannot be composed: {exc}", scope=ErrorScope.ITEM
        ) from exc
    if max_message_size is not None and len(data) > max_message_size:
        raise MessageTooLargeError(
            f"email {activity.id} is {len(data)} bytes once composed, more than the "
            f"{max_message_size} allowed (Limits.max_message_size)",
            size=len(data),
            limit=max_message_size,
            scope=ErrorScope.ITEM,
        )
    return OutgoingMessage(
        message_id=message_id,
        sender=sender_address,
        recipients=recipients,
        data=data,
    )
