"""A message's header block from its Graph properties, without downloading the message.

A message that came through transport has ``internetMessageHeaders`` (Graph returns them
only under ``$select``) and they are used as they are. One that never did (a Sent Items copy,
a draft) has none; its block is then written from the properties: From, Sender, To, Cc, Bcc,
Reply-To, Subject, Date, Message-ID, and In-Reply-To and References from their MAPI
properties when they were read.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr
from typing import Any, Final

__all__ = [
    "HEADER_SELECT",
    "IN_REPLY_TO_PROPERTY",
    "MAPI_HEADER_PROPERTIES",
    "REFERENCES_PROPERTY",
    "header_block",
    "parse_graph_time",
]

HEADER_SELECT: Final = (
    "id",
    "internetMessageId",
    "conversationId",
    "conversationIndex",
    "subject",
    "from",
    "sender",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "receivedDateTime",
    "sentDateTime",
    "isDraft",
    "parentFolderId",
    "categories",
    "internetMessageHeaders",
)
"""The message properties the header phase selects: what relevance reads."""

IN_REPLY_TO_PROPERTY: Final = "String 0x1042"
REFERENCES_PROPERTY: Final = "String 0x1039"
MESSAGE_ID_PROPERTY: Final = "String 0x1035"
MAPI_HEADER_PROPERTIES: Final = (IN_REPLY_TO_PROPERTY, REFERENCES_PROPERTY, MESSAGE_ID_PROPERTY)
"""PidTagInReplyToId, PidTagInternetReferences and PidTagInternetMessageId: threading
headers for messages without ``internetMessageHeaders``."""


def parse_graph_time(value: Any) -> datetime | None:
    """A Graph ``DateTimeOffset`` (``2026-03-02T09:00:00Z``)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _one_line(value: str) -> str:
    """A value that cannot start another header: its line breaks become folding."""
    lines = value.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    folded = [lines[0]]
    folded += [line if line[:1] in (" ", "\t") else " " + line for line in lines[1:] if line]
    return "\r\n".join(folded)


def _line(name: str, value: str) -> bytes:
    return f"{name}: {_one_line(value)}\r\n".encode("utf-8", "surrogateescape")


def _text(value: str) -> str:
    flat = " ".join(value.split())
    return flat if flat.isascii() else Header(flat, "utf-8").encode()


def _address(recipient: Any) -> str | None:
    email = recipient.get("emailAddress") if isinstance(recipient, dict) else None
    if not isinstance(email, dict) or not email.get("address"):
        return None
    address = str(email["address"])
    name = " ".join(str(email.get("name") or "").split())
    if name and name != address:
        return formataddr((name if name.isascii() else _text(name), address))
    return address


def _addresses(recipients: Any) -> str | None:
    found = [a for a in (_address(r) for r in recipients or ()) if a]
    return ", ".join(found) if found else None


def _from_properties(
    row: Mapping[str, Any], extended: Mapping[str, str]
) -> list[tuple[str, str | None]]:
    sent = parse_graph_time(row.get("sentDateTime")) or parse_graph_time(
        row.get("receivedDateTime")
    )
    author = _address(row.get("from"))
    sender = _address(row.get("sender"))
    subject = row.get("subject")
    return [
        ("From", author or sender),
        ("Sender", sender if sender != author else None),
        ("To", _addresses(row.get("toRecipients"))),
        ("Cc", _addresses(row.get("ccRecipients"))),
        ("Bcc", _addresses(row.get("bccRecipients"))),
        ("Reply-To", _addresses(row.get("replyTo"))),
        ("Subject", _text(subject) if isinstance(subject, str) and subject else None),
        ("Date", format_datetime(sent) if sent is not None else None),
        ("Message-ID", row.get("internetMessageId") or extended.get(MESSAGE_ID_PROPERTY)),
        ("In-Reply-To", extended.get(IN_REPLY_TO_PROPERTY)),
        ("References", extended.get(REFERENCES_PROPERTY)),
        ("Thread-Index", row.get("conversationIndex")),
    ]


def extended_properties(row: Mapping[str, Any]) -> dict[str, str]:
    """A row's expanded ``singleValueExtendedProperties``, by id (compared without case)."""
    found: dict[str, str] = {}
    for prop in row.get("singleValueExtendedProperties") or ():
        if isinstance(prop, dict) and prop.get("id") and prop.get("value") is not None:
            found[str(prop["id"]).lower()] = str(prop["value"])
    return found


def header_block(row: Mapping[str, Any]) -> bytes:
    """The header block of a Graph message row, ending with the empty line that ends one."""
    headers = [
        h for h in row.get("internetMessageHeaders") or () if isinstance(h, dict) and h.get("name")
    ]
    if headers:
        lines = [_line(str(h["name"]), str(h.get("value") or "")) for h in headers]
    else:
        extended = {
            key: value
            for key in MAPI_HEADER_PROPERTIES
            if (value := extended_properties(row).get(key.lower()))
        }
        lines = [
            _line(name, str(value)) for name, value in _from_properties(row, extended) if value
        ]
    return b"".join(lines) + b"\r\n"
