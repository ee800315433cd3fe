"""Parsing raw messages into :class:`ParsedHeaders` and :class:`ParsedMessage`.

Headers are parsed with the fast compat32 parser and only the fields relevance reads are
decoded; full MIME parsing with ``policy.default`` runs only for messages that are tracked,
since it costs many times the fetch.

Every message's header block is parsed, so that path has fast lanes for the common case,
each giving exactly what the general path gives and stepping aside for anything else: a
header block in plain ASCII with CRLF line ends is split into fields without the stdlib's
line-by-line feed parser, and address lists of plain ``name <address>`` and ``address``
items are read without its character-by-character address parser.
"""

from __future__ import annotations

import base64
import hashlib
import quopri
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from email.utils import getaddresses, parsedate_to_datetime

import attrs

from serversync.errors import MalformedMessageError
from serversync.mime._tree import header_fields, message_tree
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
    if "=?" not in text and text.isascii():
        return text  # nothing to decode
    try:
        return str(make_header(decode_header(text)))
    except (UnicodeError, LookupError, ValueError, TypeError):
        return text


def _unfold(text: str) -> str:
    return " ".join(text.split())


@attrs.frozen
class _Fields:
    """A header block's fields by lower-case name, with the values the compat32 parser
    gives (``str``, or ``Header`` for undecodable bytes), and its defects."""

    by_name: dict[str, list[object]]
    defects: tuple[str, ...] = ()

    @classmethod
    def of(cls, msg: Message) -> _Fields:
        by_name: dict[str, list[object]] = {}
        for name, value in msg.items():
            by_name.setdefault(name.lower(), []).append(value)
        return cls(by_name, tuple(type(d).__name__ for d in msg.defects))

    def get(self, name: str) -> object | None:
        values = self.by_name.get(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[object]:
        return self.by_name.get(name, [])


def _split_fields(data: bytes) -> _Fields | None:
    """The fields of a plain header block: ASCII, CRLF line ends, every line a field or the
    continuation of one. ``None`` for anything else (the feed parser reads those)."""
    end = data.find(b"\r\n\r\n")
    head = data[: end + 2] if end >= 0 else data
    if not head.endswith(b"\r\n"):
        return None
    # 8-bit bytes become surrogates, which header_fields refuses as it refuses all non-ASCII.
    fields = header_fields(head.decode("ascii", "surrogateescape"))
    if fields is None:
        return None
    by_name: dict[str, list[object]] = {}
    for name, value in fields:
        by_name.setdefault(name.lower(), []).append(value)
    return _Fields(by_name)


# Address list items the fast lane reads: "local@domain" or "Display Name <local@domain>",
# the display name made of words without dots or address specials.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDRESS = rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_BARE = re.compile(rf"\s*({_ADDRESS})\s*")
_NAMED = re.compile(rf"\s*([^\s<>@,.]+(?:\s+[^\s<>@,.]+)*)\s*<({_ADDRESS})>\s*")
_SPECIALS = re.compile(r'["()\\;:\[\]]')


def _plain_addresses(text: str) -> list[tuple[str, str]] | None:
    """``getaddresses([text])`` for plain lists, ``None`` for others."""
    if _SPECIALS.search(text):
        return None
    found = []
    for item in text.split(","):
        if not item.strip():
            continue  # getaddresses gives ("", ""), which is no address
        bare = _BARE.fullmatch(item)
        if bare is not None:
            found.append(("", bare.group(1)))
            continue
        named = _NAMED.fullmatch(item)
        if named is None:
            return None
        found.append((" ".join(named.group(1).split()), named.group(2)))
    return found


def _addresses(fields: _Fields, *names: str) -> tuple[EmailAddress, ...]:
    values: list[str] = []
    for name in names:
        values.extend(str(v) for v in fields.get_all(name))
    if not values:
        return ()
    joined = ", ".join(values)
    pairs: Sequence[tuple[str, str]] | None = _plain_addresses(joined) if joined.isascii() else None
    if pairs is None:
        pairs = getaddresses(values)
    result: list[EmailAddress] = []
    for display, address in pairs:
        address = address.strip()
        if "@" not in address:
            continue
        result.append(EmailAddress(address, _unfold(_decode(display))))
    return tuple(result)


def _date(msg: _Fields) -> datetime | None:
    raw = msg.get("date")
    if raw is None:
        return None
    try:
        parsed = parsedate_to_datetime(str(raw))
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _headers_from(msg: _Fields) -> ParsedHeaders:
    if not msg.by_name:
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
        defects=msg.defects,
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
        fields = _split_fields(data)
        if fields is None:
            fields = _Fields.of(_HEADER_PARSER.parsebytes(data))
        return _headers_from(fields)
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
        fast = _fast_message(headers, data)
    except Exception:  # the general path below decides, and reports what it finds
        fast = None
    if fast is not None:
        return fast
    try:
        # Not `or`: a message's truth is its number of headers.
        msg = message_tree(data, EmailMessage)
        if msg is None:
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


# -- the fast lane of parse_message ---------------------------------------------------------
#
# ``policy.default`` builds a structured header object for every field it is asked about
# (Content-Type alone is asked for several times a part): most of the cost of parsing a
# tracked message. The fast lane parses the MIME tree with compat32, whose fields are
# plain strings, and walks it as ``EmailMessage.get_body`` and ``iter_attachments`` do,
# giving the same bodies and attachments. It steps aside (``None``) for anything whose
# answer could differ: RFC 2047 or RFC 2231 encoded parameters, a ``start`` parameter of
# multipart/related, Content-IDs compared, non-ASCII header text.

_COMPAT_PARSER = BytesParser(policy=policy.compat32)
_BODY_TYPES = frozenset({"text/plain", "text/html", "multipart/related", "multipart/alternative"})


class _StepAside(Exception):
    """The fast lane cannot promise the general path's answer."""


_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`{|}~-]+")
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`{|}~-]+/[A-Za-z0-9!#$%&'*+.^_`{|}~-]+")
# Parameters after the first item: token=token or token="quoted", folding allowed. Anything
# else (an unquoted value with spaces or "=") the two policies read differently.
_PARAMETERS = re.compile(
    r"(?:\s*;\s*[A-Za-z0-9!#$%&\'+.^_`{|}~-]+\s*=\s*"
    r'(?:[A-Za-z0-9!#$%&\'*+.^_`{|}~-]+|"(?:[^"\\\r\n]|\\.)*"))*\s*;?\s*'
)
_ENCODINGS = frozenset({"7bit", "8bit", "binary", "base64", "quoted-printable"})


def _plain_field(part: Message, name: str, first: re.Pattern[str]) -> str | None:
    """A field whose value both policies read alike: ASCII, no RFC 2047 or 2231 encoding,
    its first item a clean token; else step aside."""
    # compat32 gives an email.header.Header, not a str, for a field with non-ASCII bytes.
    raw: object = part.get(name)
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.isascii() or "=?" in raw or "*" in raw:
        raise _StepAside
    head, separator, rest = raw.partition(";")
    if first.fullmatch(head.strip()) is None or _PARAMETERS.fullmatch(separator + rest) is None:
        raise _StepAside
    return raw


def _content_type(part: Message) -> str:
    _plain_field(part, "content-type", _MEDIA_TYPE)
    return part.get_content_type()


def _is_attachment(part: Message) -> bool:
    if _plain_field(part, "content-disposition", _TOKEN) is None:
        return False
    return part.get_content_disposition() == "attachment"


def _check_encoding(part: Message) -> None:
    raw: object = part.get("content-transfer-encoding")
    if raw is not None and (not isinstance(raw, str) or raw.lower() not in _ENCODINGS):
        raise _StepAside


def _find_body(root: Message, part: Message, preference: str) -> Message | None:
    """``EmailMessage.get_body((preference,))`` on compat32 parts."""
    if _is_attachment(part):
        return None
    maintype, _, subtype = _content_type(part).partition("/")
    if maintype == "text":
        return part if subtype == preference else None
    # As the stdlib does: "not root.is_multipart()", the root, not the part.
    if maintype != "multipart" or not root.is_multipart():
        return None
    if subtype == "related":
        if part.get_param("start"):
            raise _StepAside
        subparts = part.get_payload()
        if not isinstance(subparts, list) or not subparts:
            return None
        first = subparts[0]
        return _find_body(root, first, preference) if isinstance(first, Message) else None
    payload = part.get_payload()
    if not isinstance(payload, list):
        return None
    for sub in payload:
        if not isinstance(sub, Message):
            raise _StepAside
        found = _find_body(root, sub, preference)
        if found is not None:
            return found
    return None


def _fast_attachments(msg: Message) -> tuple[AttachmentInfo, ...] | None:
    """``EmailMessage.iter_attachments`` on compat32 parts, described."""
    maintype, _, subtype = _content_type(msg).partition("/")
    if maintype != "multipart" or subtype == "alternative":
        return ()
    payload = msg.get_payload()
    if not isinstance(payload, list):
        return ()
    parts = [part for part in payload if isinstance(part, Message)]
    if len(parts) != len(payload):
        raise _StepAside
    if subtype == "related":
        if msg.get_param("start") or not parts:
            raise _StepAside
        parts = parts[1:]
    else:
        chosen: list[Message] = []
        seen: list[str] = []
        for part in parts:
            kind = _content_type(part)
            sub = kind.partition("/")[2]
            if kind in _BODY_TYPES and not _is_attachment(part) and sub not in seen:
                seen.append(sub)
                continue
            chosen.append(part)
        parts = chosen
    result = []
    for part in parts:
        _check_encoding(part)
        body = part.get_payload(decode=True)
        filename = part.get_filename()
        if filename is not None and (
            "=?" in filename or not filename.isascii() or not filename.isprintable()
        ):
            raise _StepAside
        result.append(
            AttachmentInfo(
                filename=filename,
                content_type=_content_type(part),
                size=len(body) if isinstance(body, bytes) else 0,
            )
        )
    return tuple(result)


def _fast_text(part: Message) -> str:
    """``_text_of`` for a compat32 text part (``raw_data_manager``'s text content)."""
    _check_encoding(part)
    payload = part.get_payload(decode=True)
    raw = payload if isinstance(payload, bytes) else b""
    charset = part.get_param("charset", "ASCII")
    if (
        not isinstance(charset, str)
        or not charset.isascii()
        or (not charset.isalnum() and any(c.isspace() or not c.isprintable() for c in charset))
    ):
        raise _StepAside
    try:
        return raw.decode(charset, errors="replace")
    except (LookupError, UnicodeError, ValueError):
        return raw.decode("utf-8", errors="replace")


def _fast_message(headers: ParsedHeaders, data: bytes) -> ParsedMessage | None:
    try:
        msg = message_tree(data, Message)
        if msg is None:
            msg = _COMPAT_PARSER.parsebytes(data)
        text_part = _find_body(msg, msg, "plain")
        html_part = _find_body(msg, msg, "html")
        attachments = _fast_attachments(msg)
    except _StepAside:
        return None
    if attachments is None:
        return None
    try:
        body_text = _fast_text(text_part) if text_part is not None else None
        body_html = _fast_text(html_part) if html_part is not None else None
    except _StepAside:
        return None
    return ParsedMessage(
        headers=headers, body_text=body_text, body_html=body_html, attachments=attachments
    )


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
