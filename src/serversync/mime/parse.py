"""Parsing raw messages into :class:`ParsedHeaders` and :class:`ParsedMessage`.

Headers are parsed with the fast compat32 parser and only the fields relevance reads are
decoded; full MIME parsing with ``policy.default`` runs only for messages that are tracked,
since it costs many times the fetch.
"""

from __future__ import annotations

import base64
import hashlib
import quopri
from collections.abc import Iterable
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from email.utils import getaddresses, parsedate_to_datetime

import attrs

from serversync.errors import MalformedMessageError
from serversync.model import (
    AttachmentInfo,
    EmailAddress,
    MessageId,
    ParsedHeaders,
    ParsedMessage,
)
from serversync.relevance.threading import normalize_message_id, parse_message_ids

__all__ = [
    "derive_message_id",
    "ensure_message_id",
    "forwarded_message",
    "parse_headers",
    "parse_message",
]

_HEADER_PARSER = BytesHeaderParser(policy=policy.compat32)
_FULL_PARSER = BytesParser(policy=policy.default)


def _decode(value: object) -> str:
    """Decode RFC 2047 words; fall back to the raw text on broken encodings."""
    if value is None:
        return ""
    text = str(value)
    try:
        return str(make_header(decode_header(text)))
    except (UnicodeError, LookupError, ValueError, TypeError):
        return text


def _unfold(text: str) -> str:
    return " ".join(text.split())


def _addresses(msg: Message, *names: str) -> tuple[EmailAddress, ...]:
    values: list[str] = []
    for name in names:
        values.extend(str(v) for v in (msg.get_all(name) or []))
    result: list[EmailAddress] = []
    for display, address in getaddresses(values):
        address = address.strip()
        if "@" not in address:
            continue
        result.append(EmailAddress(address, _unfold(_decode(display))))
    return tuple(result)


def _date(msg: Message) -> datetime | None:
    raw = msg.get("date")
    if raw is None:
        return None
    try:
        parsed = parsedate_to_datetime(str(raw))
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _headers_from(msg: Message) -> ParsedHeaders:
    if not msg.keys():
        raise MalformedMessageError("message has no header fields", reason="no header fields")
    senders = _addresses(msg, "from")
    auto_submitted = msg.get("auto-submitted")
    thread_index = msg.get("thread-index")
    return ParsedHeaders(
        message_id=normalize_message_id(_opt(msg.get("message-id"))),
        subject=_unfold(_decode(msg.get("subject"))),
        sender=senders[0] if senders else None,
        reply_to=_addresses(msg, "reply-to"),
        to=_addresses(msg, "to"),
        cc=_addresses(msg, "cc"),
        bcc=_addresses(msg, "bcc"),
        date=_date(msg),
        in_reply_to=parse_message_ids(_ids_text(msg.get("in-reply-to"))),
        references=parse_message_ids(_ids_text(msg.get("references"))),
        conversation_index=_unfold(str(thread_index)) if thread_index is not None else None,
        auto_submitted=_unfold(str(auto_submitted)) if auto_submitted is not None else None,
        defects=tuple(type(d).__name__ for d in msg.defects),
    )


def _ids_text(value: object) -> str | None:
    """A msg-id list header; some mailers wrongly RFC 2047-encode long ones, so decode."""
    if value is None:
        return None
    text = str(value)
    return _decode(text) if "=?" in text else text


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def parse_headers(data: bytes) -> ParsedHeaders:
    """Parse a header block (or a whole message, whose body is ignored).

    Raises :class:`MalformedMessageError` when nothing usable is there; never another
    exception.
    """
    try:
        msg = _HEADER_PARSER.parsebytes(data)
        return _headers_from(msg)
    except MalformedMessageError:
        raise
    except Exception as exc:  # the stdlib parser can fail in many ways on hostile input
        raise MalformedMessageError(
            f"cannot parse message headers: {exc}", reason=type(exc).__name__
        ) from exc


def _text_of(part: EmailMessage) -> str:
    try:
        content = part.get_content()
    except (LookupError, UnicodeError, ValueError, AssertionError, KeyError):
        payload = part.get_payload(decode=True)
        raw = payload if isinstance(payload, bytes) else b""
        return raw.decode("utf-8", errors="replace")
    if isinstance(content, bytes):
        return content.decode("utf-8", errors="replace")
    return str(content)


def _attachments(parts: Iterable[EmailMessage]) -> tuple[AttachmentInfo, ...]:
    result = []
    for part in parts:
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else 0
        result.append(
            AttachmentInfo(
                filename=part.get_filename(),
                content_type=part.get_content_type(),
                size=size,
            )
        )
    return tuple(result)


def parse_message(data: bytes) -> ParsedMessage:
    """Parse a whole message: headers, text and HTML bodies, attachment descriptions.

    Undecodable bodies are decoded with replacement characters rather than rejected.
    Raises :class:`MalformedMessageError` and no other exception.
    """
    headers = parse_headers(data)
    try:
        msg = _FULL_PARSER.parsebytes(data)
        assert isinstance(msg, EmailMessage)
        text_part = msg.get_body(preferencelist=("plain",))
        html_part = msg.get_body(preferencelist=("html",))
        attachments = _attachments(msg.iter_attachments())
        return ParsedMessage(
            headers=headers,
            body_text=_text_of(text_part) if isinstance(text_part, EmailMessage) else None,
            body_html=_text_of(html_part) if isinstance(html_part, EmailMessage) else None,
            attachments=attachments,
        )
    except Exception as exc:  # hostile MIME structures break the stdlib in many ways
        raise MalformedMessageError(
            f"cannot parse message body: {exc}", reason=type(exc).__name__
        ) from exc


def derive_message_id(headers: ParsedHeaders) -> MessageId:
    """A stable Message-ID for a message that has none.

    Built from From, To, Cc, Date and Subject only, so the header phase and every mailbox
    that received the same message compute the same value.
    """
    parts = [
        headers.sender.address if headers.sender else "",
        ",".join(a.address for a in headers.to),
        ",".join(a.address for a in headers.cc),
        headers.date.isoformat() if headers.date else "",
        headers.subject,
    ]
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8", errors="replace")).hexdigest()
    return MessageId(f"<{digest[:40]}@serversync.invalid>")


def ensure_message_id(headers: ParsedHeaders) -> tuple[ParsedHeaders, MessageId]:
    """``headers`` with a Message-ID (derived when missing), and that id.

    Rules, dedupe and storage all see the same stable id for a message that has none.
    """
    if headers.message_id is not None:
        return headers, headers.message_id
    derived = derive_message_id(headers)
    return attrs.evolve(headers, message_id=derived), derived


def forwarded_message(data: bytes) -> bytes:
    """The first message attached to ``data`` (forwarded "as an attachment").

    Raises :class:`MalformedMessageError` when there is none.
    """
    try:
        msg = _FULL_PARSER.parsebytes(data)
        for part in msg.walk():
            if part.get_content_type() != "message/rfc822":
                continue
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            if not isinstance(inner, EmailMessage):
                continue
            encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
            # RFC 2046 forbids encoding message/rfc822, but some mailers base64 it anyway;
            # the stdlib then parses the encoded text as a headerless message.
            if encoding == "base64":
                return base64.b64decode(inner.as_bytes())
            if encoding == "quoted-printable":
                return quopri.decodestring(inner.as_bytes())
            return inner.as_bytes()
    except Exception as exc:  # hostile MIME structures break the stdlib in many ways
        raise MalformedMessageError(
            f"cannot read the forwarded message: {exc}", reason=type(exc).__name__
        ) from exc
    raise MalformedMessageError(
        "no message is attached (forward as an attachment)", reason="no attached message"
    )
