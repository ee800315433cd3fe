"""MIME content and item properties: what Exchange derives from a delivered message, and
the MIME it produces for a message created from properties."""

from __future__ import annotations

import base64
import binascii
import email.utils
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser

from serversync.testing.ews._xml import T, qname, t, text_of, xml_bool, xml_datetime

__all__ = [
    "addresses_in",
    "mailbox_element",
    "mime_from_props",
    "props_from_mime",
    "recipients_of",
]

_REPLY_PREFIX = re.compile(r"^\s*((re|fw|fwd|aw|wg|sv|vs)\s*:\s*)+", re.IGNORECASE)


def mailbox_element(name: str, address: str, *, local: bool) -> ET.Element:
    """A ``t:Mailbox`` as Exchange writes one: name, SMTP address, routing and type."""
    return t(
        "Mailbox",
        children=[
            t("Name", name or address),
            t("EmailAddress", address),
            t("RoutingType", "SMTP"),
            t("MailboxType", "Mailbox" if local else "OneOff"),
        ],
    )


def addresses_in(elem: ET.Element | None) -> list[tuple[str, str]]:
    """(name, address) of every ``t:Mailbox`` below ``elem`` (recipient lists, From,
    attendees)."""
    if elem is None:
        return []
    out = []
    for mailbox in elem.iter(qname(T, "Mailbox")):
        address = text_of(mailbox.find(qname(T, "EmailAddress"))).strip()
        name = text_of(mailbox.find(qname(T, "Name"))).strip()
        if address:
            out.append((name, address))
    return out


def recipients_of(props: dict[str, ET.Element], names: Iterable[str]) -> list[str]:
    return [address for name in names for _, address in addresses_in(props.get(name))]


def _header_addresses(message: EmailMessage, header: str) -> list[tuple[str, str]]:
    values = message.get_all(header) or []
    out: list[tuple[str, str]] = []
    for value in values:
        try:
            found: Iterable[Address] = value.addresses
            out.extend((a.display_name, a.addr_spec) for a in found if a.addr_spec)
        except (AttributeError, ValueError, IndexError):
            out.extend((n, a) for n, a in email.utils.getaddresses([str(value)]) if a)
    return out


def _mailbox_list(
    name: str, found: list[tuple[str, str]], is_local: Callable[[str], bool]
) -> ET.Element:
    return t(name, children=[mailbox_element(n, a, local=is_local(a)) for n, a in found])


def _body(message: EmailMessage) -> ET.Element:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return t("Body", "", {"BodyType": "Text"})
    try:
        content = part.get_content()
    except (LookupError, ValueError):
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    body_type = "HTML" if part.get_content_subtype() == "html" else "Text"
    return t("Body", str(content), {"BodyType": body_type})


def _importance(message: EmailMessage) -> str:
    importance = str(message.get("importance", "")).strip().lower()
    if importance in ("high", "low"):
        return importance.capitalize()
    priority = str(message.get("x-priority", "")).strip()[:1]
    return {"1": "High", "2": "High", "4": "Low", "5": "Low"}.get(priority, "Normal")


def props_from_mime(
    raw: bytes, *, is_local: Callable[[str], bool], is_read: bool
) -> dict[str, ET.Element]:
    """The message properties Exchange derives from MIME content on delivery."""
    message = BytesParser(policy=policy.default).parsebytes(raw)
    subject = str(message.get("subject", ""))
    props: dict[str, ET.Element] = {
        "ItemClass": t("ItemClass", "IPM.Note"),
        "Subject": t("Subject", subject),
        "Sensitivity": t("Sensitivity", "Normal"),
        "Body": _body(message),
        "Importance": t("Importance", _importance(message)),
    }
    if message.get("in-reply-to"):
        props["InReplyTo"] = t("InReplyTo", str(message["in-reply-to"]).strip())
    props["IsSubmitted"] = t("IsSubmitted", "false")
    props["IsDraft"] = t("IsDraft", "false")
    props["InternetMessageHeaders"] = t(
        "InternetMessageHeaders",
        children=[
            t("InternetMessageHeader", str(value), {"HeaderName": name})
            for name, value in message.raw_items()
        ],
    )
    if message.get("date"):
        try:
            sent = email.utils.parsedate_to_datetime(str(message["date"]))
            if sent.tzinfo is not None:
                props["DateTimeSent"] = t("DateTimeSent", xml_datetime(sent))
        except (TypeError, ValueError):
            pass
    has_attachments = any(part.is_attachment() for part in message.walk())
    props["HasAttachments"] = t("HasAttachments", xml_bool(has_attachments))
    senders = _header_addresses(message, "sender") or _header_addresses(message, "from")
    if senders:
        props["Sender"] = t(
            "Sender", children=[mailbox_element(*senders[0], local=is_local(senders[0][1]))]
        )
    for header, name in (("to", "ToRecipients"), ("cc", "CcRecipients"), ("bcc", "BccRecipients")):
        found = _header_addresses(message, header)
        if found:
            props[name] = _mailbox_list(name, found, is_local)
    thread_index = str(message.get("thread-index", "")).strip()
    if thread_index:
        try:
            base64.b64decode(thread_index, validate=True)
            props["ConversationIndex"] = t("ConversationIndex", thread_index)
        except binascii.Error:
            pass
    topic = str(message.get("thread-topic", "")) or _REPLY_PREFIX.sub("", subject)
    props["ConversationTopic"] = t("ConversationTopic", topic)
    authors = _header_addresses(message, "from")
    if authors:
        props["From"] = t(
            "From", children=[mailbox_element(*authors[0], local=is_local(authors[0][1]))]
        )
    if message.get("message-id"):
        props["InternetMessageId"] = t("InternetMessageId", str(message["message-id"]).strip())
    props["IsRead"] = t("IsRead", xml_bool(is_read))
    if message.get("references"):
        props["References"] = t("References", " ".join(str(message["references"]).split()))
    reply_to = _header_addresses(message, "reply-to")
    if reply_to:
        props["ReplyTo"] = _mailbox_list("ReplyTo", reply_to, is_local)
    return props


def _format_addresses(pairs: list[tuple[str, str]]) -> str:
    return ", ".join(email.utils.formataddr((name, address)) for name, address in pairs)


def mime_from_props(
    props: dict[str, ET.Element], *, author: tuple[str, str], sent: datetime
) -> bytes:
    """The MIME content Exchange generates for a message created from properties."""
    message = EmailMessage(policy=policy.SMTP)
    authors = addresses_in(props.get("From")) or [author]
    message["From"] = _format_addresses(authors[:1])
    for name, header in (("ToRecipients", "To"), ("CcRecipients", "Cc"), ("ReplyTo", "Reply-To")):
        found = addresses_in(props.get(name))
        if found:
            message[header] = _format_addresses(found)
    message["Subject"] = text_of(props.get("Subject"))
    message["Date"] = email.utils.format_datetime(sent)
    message_id = text_of(props.get("InternetMessageId"))
    if message_id:
        message["Message-ID"] = message_id
    for name, header in (("InReplyTo", "In-Reply-To"), ("References", "References")):
        value = text_of(props.get(name))
        if value:
            message[header] = value
    importance = text_of(props.get("Importance"), "Normal")
    if importance in ("High", "Low"):
        message["Importance"] = importance.lower()
    conversation_index = text_of(props.get("ConversationIndex"))
    if conversation_index:
        message["Thread-Index"] = conversation_index
    body = props.get("Body")
    subtype = "html" if body is not None and body.get("BodyType") == "HTML" else "plain"
    message.set_content(text_of(body), subtype=subtype)
    attachments = props.get("Attachments")
    if attachments is not None:
        for attachment in attachments.findall(qname(T, "FileAttachment")):
            content = base64.b64decode(text_of(attachment.find(qname(T, "Content"))))
            maintype, _, subtype_ = text_of(
                attachment.find(qname(T, "ContentType")), "application/octet-stream"
            ).partition("/")
            message.add_attachment(
                content,
                maintype=maintype,
                subtype=subtype_ or "octet-stream",
                filename=text_of(attachment.find(qname(T, "Name")), "attachment"),
            )
    return message.as_bytes()
