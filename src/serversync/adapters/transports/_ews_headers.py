"""A message's header block from its EWS item properties, without downloading the message.

A message that came through transport keeps its internet headers (``InternetMessageHeaders``)
and they are used as they are. A message that never did (a copy in Sent Items, a draft sent
from Outlook) has none; its header block is then written from the item's properties: From,
Sender, To, Cc, Bcc, Reply-To, Subject, Date, Message-ID, In-Reply-To, References and
Thread-Index.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr
from typing import Any, Final

__all__ = ["HEADER_FIELDS", "header_block"]

HEADER_FIELDS: Final = (
    "headers",
    "author",
    "sender",
    "to_recipients",
    "cc_recipients",
    "bcc_recipients",
    "reply_to",
    "subject",
    "datetime_sent",
    "datetime_received",
    "message_id",
    "in_reply_to",
    "references",
    "conversation_index",
)
"""The exchangelib item fields :func:`header_block` reads."""


def _one_line(value: str) -> str:
    """A value that cannot start another header: its line breaks become folding."""
    lines = value.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    folded = [lines[0]]
    folded += [line if line[:1] in (" ", "\t") else " " + line for line in lines[1:] if line]
    return "\r\n".join(folded)


def _line(name: str, value: str) -> bytes:
    return f"{name}: {_one_line(value)}\r\n".encode("utf-8", "surrogateescape")


def _text(value: str) -> str:
    """``value`` as a header may carry it: RFC 2047 encoded when it is not ASCII."""
    flat = " ".join(value.split())
    return flat if flat.isascii() else Header(flat, "utf-8").encode()


def _address(mailbox: Any) -> str | None:
    address = getattr(mailbox, "email_address", None)
    if not address:
        return None
    name = " ".join((getattr(mailbox, "name", None) or "").split())
    return formataddr((name, address)) if name and name != address else address


def _addresses(mailboxes: Iterable[Any] | None) -> str | None:
    found = [a for a in (_address(m) for m in mailboxes or ()) if a]
    return ", ".join(found) if found else None


def _from_properties(item: Any) -> list[tuple[str, str | None]]:
    sent: datetime | None = item.datetime_sent or item.datetime_received
    index = item.conversation_index
    author = _address(item.author) if item.author else None
    sender = _address(item.sender) if item.sender else None
    return [
        ("From", author or sender),
        ("Sender", sender if sender != author else None),
        ("To", _addresses(item.to_recipients)),
        ("Cc", _addresses(item.cc_recipients)),
        ("Bcc", _addresses(item.bcc_recipients)),
        ("Reply-To", _addresses(item.reply_to)),
        ("Subject", _text(item.subject) if item.subject else None),
        ("Date", format_datetime(sent) if sent is not None else None),
        ("Message-ID", item.message_id),
        ("In-Reply-To", item.in_reply_to),
        ("References", item.references),
        ("Thread-Index", base64.b64encode(index).decode("ascii") if index else None),
    ]


def header_block(item: Any) -> bytes:
    """The header block of an exchangelib message item fetched with :data:`HEADER_FIELDS`,
    ending with the empty line that ends a header block."""
    headers = [h for h in item.headers or () if h.name]
    if headers:
        lines = [_line(h.name, h.value or "") for h in headers]
    else:
        lines = [_line(name, value) for name, value in _from_properties(item) if value]
    return b"".join(lines) + b"\r\n"
