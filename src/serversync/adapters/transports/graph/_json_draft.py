"""A composed message as a Graph JSON draft plus its attachments, for messages too large
for a MIME draft (pure: no I/O).

Graph takes a MIME draft in one request, whose base64 body must stay under about 4 MB
(about 3 MB of MIME). A larger message is rebuilt as a JSON draft (subject, body,
recipients, our Message-ID, the ``x-`` headers, the threading headers as their MAPI
properties) and its attachments are added one by one: small ones in one request, large
ones through an upload session.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import default as default_policy
from email.utils import getaddresses
from typing import Any, Final

import attrs

from serversync.adapters.transports.graph._headers import (
    IN_REPLY_TO_PROPERTY,
    REFERENCES_PROPERTY,
)
from serversync.model import OutgoingMessage
from serversync.model.messages import normalize_address

__all__ = [
    "MIME_DRAFT_LIMIT",
    "SMALL_ATTACHMENT_LIMIT",
    "UPLOAD_CHUNK",
    "DraftAttachment",
    "JsonDraft",
    "json_draft",
    "upload_ranges",
]

MIME_DRAFT_LIMIT: Final = 3_000_000
"""The largest MIME (bytes) sent as a MIME draft: its base64 (4/3 larger) stays under
Graph's request limit of about 4 MB."""
SMALL_ATTACHMENT_LIMIT: Final = 3 * 1024 * 1024
"""Attachments smaller than this are added in one request; larger ones by upload session."""
UPLOAD_CHUNK: Final = 10 * 327_680
"""Bytes per upload-session ``PUT``: a multiple of 320 KiB, under Graph's 4 MB per range."""
# Graph accepts custom internet headers only when their names start with "x-".
_CUSTOM_PREFIX: Final = "x-"


@attrs.frozen(kw_only=True)
class DraftAttachment:
    """One attachment of a JSON draft."""

    name: str
    content_type: str
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    is_inline: bool = False
    content_id: str | None = None

    def item(self) -> dict[str, Any]:
        """The ``attachmentItem`` of an upload session for this attachment."""
        item: dict[str, Any] = {
            "attachmentType": "file",
            "name": self.name,
            "size": len(self.data),
            "contentType": self.content_type,
            "isInline": self.is_inline,
        }
        if self.content_id:
            item["contentId"] = self.content_id
        return item

    def file_attachment(self) -> dict[str, Any]:
        """The ``fileAttachment`` that adds this attachment in one request."""
        body: dict[str, Any] = {
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": self.name,
            "contentType": self.content_type,
            "contentBytes": base64.b64encode(self.data).decode("ascii"),
            "isInline": self.is_inline,
        }
        if self.content_id:
            body["contentId"] = self.content_id
        return body


@attrs.frozen(kw_only=True)
class JsonDraft:
    """The JSON body of ``POST /messages`` and the attachments to add afterwards."""

    message: dict[str, Any]
    attachments: tuple[DraftAttachment, ...]


def _recipients(values: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for name, address in getaddresses(list(values)):
        if address:
            email: dict[str, str] = {"address": address}
            if name:
                email["name"] = name
            out.append({"emailAddress": email})
    return out


def _header_values(message: EmailMessage, name: str) -> list[str]:
    return [str(v) for v in message.get_all(name) or ()]


def _leaves(part: Message, inside_alternative: bool = False) -> Iterator[tuple[Message, bool]]:
    """Every part that is no container (a forwarded message counts as one part), with
    whether it sits in a multipart/alternative."""
    if part.is_multipart() and part.get_content_maintype() == "multipart":
        alternative = part.get_content_subtype() == "alternative"
        for child in part.get_payload():
            assert isinstance(child, Message)
            yield from _leaves(child, inside_alternative or alternative)
    else:
        yield part, inside_alternative


def _attachment_of(part: Message, n: int) -> DraftAttachment:
    content_type = part.get_content_type()
    if content_type == "message/rfc822":
        inner = part.get_payload()
        inner_message = inner[0] if isinstance(inner, list) else inner
        data = inner_message.as_bytes() if isinstance(inner_message, Message) else b""
        default_name = f"message-{n}.eml"
    else:
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        default_name = f"attachment-{n}"
    name = part.get_filename() or default_name
    content_id = part.get("content-id")
    disposition = part.get_content_disposition()
    cid = str(content_id).strip().strip("<>") if content_id else None
    return DraftAttachment(
        name=name,
        content_type=content_type,
        data=data,
        is_inline=bool(cid) and disposition != "attachment",
        content_id=cid,
    )


def json_draft(message: OutgoingMessage, *, property_id: str | None = None) -> JsonDraft:
    """``message`` as a JSON draft: the body part (HTML preferred, as Exchange derives the
    plain text itself), every other part an attachment, the envelope recipients the headers
    do not name as Bcc. ``property_id`` names an extended property set to the Message-ID
    (left out when ``None``, for a draft tagged once it is complete)."""
    parsed = BytesParser(policy=default_policy).parsebytes(message.data)
    assert isinstance(parsed, EmailMessage)
    body_part = parsed.get_body(preferencelist=("html", "plain"))
    body: dict[str, str] = {"contentType": "text", "content": ""}
    if body_part is not None:
        subtype = body_part.get_content_subtype()
        body = {
            "contentType": "html" if subtype == "html" else "text",
            "content": str(body_part.get_content()),
        }
    attachments: list[DraftAttachment] = []
    for part, in_alternative in _leaves(parsed):
        if part is body_part:
            continue
        if (
            in_alternative
            and part.get_content_maintype() == "text"
            and part.get_content_disposition() != "attachment"
        ):
            continue  # the plain-text alternative of the body
        attachments.append(_attachment_of(part, len(attachments) + 1))

    named = {
        normalize_address(a)
        for _, a in getaddresses(
            [v for h in ("to", "cc", "bcc") for v in _header_values(parsed, h)]
        )
    }
    bcc = [*_header_values(parsed, "bcc")]
    bcc += [a for a in message.recipients if normalize_address(a) not in named]
    draft: dict[str, Any] = {
        "subject": str(parsed.get("subject") or ""),
        "body": body,
        "toRecipients": _recipients(_header_values(parsed, "to")),
        "ccRecipients": _recipients(_header_values(parsed, "cc")),
        "bccRecipients": _recipients(list(dict.fromkeys(bcc))),
        "internetMessageId": str(message.message_id),
    }
    reply_to = _recipients(_header_values(parsed, "reply-to"))
    if reply_to:
        draft["replyTo"] = reply_to
    author = _recipients(_header_values(parsed, "from"))
    if author:
        draft["from"] = author[0]
    custom = [
        {"name": str(name), "value": " ".join(str(value).split())}
        for name, value in parsed.items()
        if str(name).lower().startswith(_CUSTOM_PREFIX)
    ]
    if custom:
        draft["internetMessageHeaders"] = custom
    # In-Reply-To and References are no custom headers; their MAPI properties carry them.
    properties = [
        {"id": prop, "value": " ".join(str(parsed[header]).split())}
        for prop, header in (
            (IN_REPLY_TO_PROPERTY, "in-reply-to"),
            (REFERENCES_PROPERTY, "references"),
        )
        if parsed.get(header)
    ]
    if property_id is not None:
        properties.append({"id": property_id, "value": str(message.message_id)})
    if properties:
        draft["singleValueExtendedProperties"] = properties
    return JsonDraft(message=draft, attachments=tuple(attachments))


def upload_ranges(size: int, chunk: int = UPLOAD_CHUNK) -> list[tuple[int, int]]:
    """The byte ranges (first, last, inclusive) an upload of ``size`` bytes is sent in."""
    if chunk <= 0:
        raise ValueError("the upload chunk must be positive")
    return [(start, min(start + chunk, size) - 1) for start in range(0, size, chunk)]
