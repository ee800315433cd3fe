"""Mail transport ports: what an IMAP, POP3, EWS, Graph or in-memory adapter provides.

A transport is stateless and shareable (like an httpx transport); ``open`` returns an async
context manager for one authenticated session. Filtering, correlation, retries and statuses
live in the engine, never in adapters. Adapters raise only :mod:`serversync.errors` types.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from serversync.errors import SyncError
from serversync.model import (
    Checkpoint,
    Credentials,
    EmailServerProfile,
    IncomingBatch,
    Mailbox,
    OutgoingMessage,
    RawHeaders,
    RawMessage,
    RemoteFolder,
    RemoteMark,
    RemoteMessageRef,
)
from serversync.model.outcomes import SendReceipt

__all__ = [
    "BatchMessageSession",
    "IncomingMailSession",
    "IncomingMailTransport",
    "OutgoingMailSession",
    "OutgoingMailTransport",
    "SentFolderSession",
]


class IncomingMailSession(Protocol):
    """One open, authenticated connection to a mailbox for reading mail."""

    async def list_folders(self) -> Sequence[RemoteFolder]:
        """Every folder of the mailbox (for folder-level tracking rules)."""
        ...

    async def list_new(
        self, folder: str, checkpoint: Checkpoint | None, *, limit: int
    ) -> IncomingBatch:
        """Up to ``limit`` messages newer than ``checkpoint`` in ``folder``, oldest first.

        ``checkpoint`` is ``None`` on the first run. A cursor the server no longer honours
        (UIDVALIDITY changed) yields a batch with ``reset=True`` listed from the start.
        """
        ...

    async def fetch_headers(self, refs: Sequence[RemoteMessageRef]) -> Sequence[RawHeaders]:
        """The header blocks of ``refs``, in the same order, without bodies or \\Seen flags."""
        ...

    async def fetch_message(self, ref: RemoteMessageRef) -> RawMessage:
        """One whole message, without setting \\Seen. Its ``ref`` is ``ref``, with the
        arrival time filled in when the listing left it out and the server tells it."""
        ...

    async def mark(self, refs: Sequence[RemoteMessageRef], mark: RemoteMark) -> None:
        """Tag processed messages on the server (a keyword, category or folder move)."""
        ...


@runtime_checkable
class BatchMessageSession(Protocol):
    """An incoming session that can fetch several whole messages in one go (EWS: one
    GetItem for many items). The engine fetches a header batch's tracked messages with it
    when the session offers it, and calls ``fetch_message`` once a message otherwise."""

    async def fetch_messages(
        self, refs: Sequence[RemoteMessageRef]
    ) -> Sequence[RawMessage | SyncError]:
        """The whole messages at ``refs``, without setting \\Seen: one entry per ref, in order.

        A message that cannot be fetched alone (it vanished, the server refuses it) gets the
        error of scope ``item`` that ``fetch_message`` would raise, and the others are still
        fetched. When the session fails part-way (the connection drops), the messages
        fetched before are returned and the failing one and every later one get that error
        (of scope ``mailbox`` or wider); a failure before anything was fetched may be raised
        instead.
        """
        ...


@runtime_checkable
class SentFolderSession(Protocol):
    """An incoming session that can also store copies of sent mail (IMAP ``APPEND``).

    Offered by the IMAP and in-memory transports; the engine uses it when a profile names a
    :attr:`~serversync.model.EmailServerProfile.sent_folder`.
    """

    async def append_sent(self, folder: str, data: bytes) -> None:
        """Store ``data``, a message this mailbox sent, in the folder named ``folder``
        (created when missing), flagged as read and tagged as processed so that it is
        never taken for new mail."""
        ...


class IncomingMailTransport(Protocol):
    """Opens incoming sessions; one instance serves every mailbox of its kind."""

    def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AbstractAsyncContextManager[IncomingMailSession]:
        """Connect and authenticate; raise :class:`~serversync.errors.AuthenticationError` on
        bad credentials and a transient error when the server cannot be reached."""
        ...


class OutgoingMailSession(Protocol):
    """One open, authenticated connection for sending mail."""

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        """Hand one message to the server.

        Raises :class:`~serversync.errors.RecipientsRefusedError` when every recipient is
        refused; recipients refused alone are listed in the receipt.
        """
        ...


class OutgoingMailTransport(Protocol):
    """Opens outgoing sessions; one instance serves every mailbox of its kind."""

    def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AbstractAsyncContextManager[OutgoingMailSession]:
        """Connect and authenticate for sending."""
        ...
