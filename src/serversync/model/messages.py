"""Messages as they travel: remote references, raw bytes, parsed headers and bodies."""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

from serversync.model.ids import MessageId

__all__ = [
    "INBOX",
    "SENT",
    "AttachmentInfo",
    "EmailAddress",
    "OutgoingAttachment",
    "OutgoingMessage",
    "ParsedHeaders",
    "ParsedMessage",
    "RawHeaders",
    "RawMessage",
    "RemoteFolder",
    "RemoteMark",
    "RemoteMessageRef",
    "normalize_address",
]

INBOX = "INBOX"
"""The folder every incoming workload reads (IMAP spelling; adapters map it to their own)."""

SENT = "\\Sent"
"""The special use of the sent-items folder (RFC 6154)."""


def normalize_address(value: str) -> str:
    """An email address as serversync compares it: trimmed and lower-cased."""
    return value.strip().lower()


@attrs.frozen
class EmailAddress:
    """One mailbox address, lower-cased for comparison, with its display name."""

    address: str = attrs.field(converter=normalize_address)
    name: str = ""

    def __str__(self) -> str:
        return f"{self.name} <{self.address}>" if self.name else self.address


@attrs.frozen(kw_only=True)
class RemoteFolder:
    """A folder on the mail server; ``id`` is stable across renames where the server allows.

    ``special_use`` is the folder's role when the server says (RFC 6154: ``\\Sent``,
    ``\\Drafts`` ...; Exchange's well-known folders map to the same names).
    """

    id: str
    name: str
    parent_id: str | None = None
    special_use: str | None = None


@attrs.frozen(kw_only=True)
class RemoteMessageRef:
    """Where one message lives on the server (folder and server id, e.g. an IMAP UID)."""

    folder: str
    remote_id: str
    received_at: datetime | None = None
    """When the server received the message. A listing may leave it out (IMAP does unless
    Process Email From needs it); the whole message's ref then carries it."""
    size: int | None = None


@attrs.frozen(kw_only=True)
class RawHeaders:
    """The header block of a message, fetched without its body."""

    ref: RemoteMessageRef
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")


@attrs.frozen(kw_only=True)
class RawMessage:
    """A whole message as the server returned it."""

    ref: RemoteMessageRef
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")


class RemoteMark(enum.StrEnum):
    """How a processed message is tagged on the server after the store succeeded."""

    TRACKED = "tracked"
    UNDELIVERABLE = "undeliverable"


@attrs.frozen(kw_only=True)
class ParsedHeaders:
    """What relevance reads: decoded headers, addresses and threading ids."""

    message_id: MessageId | None
    subject: str = ""
    sender: EmailAddress | None = None
    reply_to: tuple[EmailAddress, ...] = ()
    to: tuple[EmailAddress, ...] = ()
    cc: tuple[EmailAddress, ...] = ()
    bcc: tuple[EmailAddress, ...] = ()
    date: datetime | None = None
    in_reply_to: tuple[MessageId, ...] = ()
    references: tuple[MessageId, ...] = ()
    conversation_index: str | None = None
    auto_submitted: str | None = None
    defects: tuple[str, ...] = ()

    @property
    def recipients(self) -> tuple[EmailAddress, ...]:
        """To, Cc and Bcc in that order."""
        return (*self.to, *self.cc, *self.bcc)

    @property
    def thread_ids(self) -> tuple[MessageId, ...]:
        """In-Reply-To first, then References newest first, without repeats."""
        seen: dict[MessageId, None] = {}
        for mid in (*self.in_reply_to, *reversed(self.references)):
            seen.setdefault(mid, None)
        return tuple(seen)


@attrs.frozen(kw_only=True)
class AttachmentInfo:
    """One attachment's description (the bytes stay in the message)."""

    filename: str | None
    content_type: str
    size: int


@attrs.frozen(kw_only=True)
class ParsedMessage:
    """A fully parsed message: its headers, text and HTML bodies and attachment descriptions."""

    headers: ParsedHeaders
    body_text: str | None = None
    body_html: str | None = None
    attachments: tuple[AttachmentInfo, ...] = ()


@attrs.frozen(kw_only=True)
class OutgoingAttachment:
    """A file to attach to an outgoing email, as the host's storage holds it."""

    filename: str
    content_type: str = "application/octet-stream"
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")


@attrs.frozen(kw_only=True)
class OutgoingMessage:
    """A composed message ready for a transport: envelope and serialized bytes."""

    message_id: MessageId
    sender: str
    recipients: tuple[str, ...]
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
