"""Poison messages: incoming messages that could not be fetched, parsed or stored."""

from __future__ import annotations

from datetime import datetime

import attrs

from serversync.model.ids import MailboxId, MessageId
from serversync.model.messages import RemoteMessageRef
from serversync.model.outcomes import ErrorRecord

__all__ = ["QuarantinedMessage"]


@attrs.frozen(kw_only=True)
class QuarantinedMessage:
    """An incoming message that failed alone, kept for later tries instead of blocking the
    mailbox.

    It is identified by (``mailbox_id``, ``folder``, ``remote_id``): where it lives on the
    server. ``message_id``, ``subject`` and ``sender`` are filled in when its headers could be
    read. ``error`` and ``explanation`` describe the latest failure; ``attempts`` counts every
    failed attempt, the first included. ``next_attempt_at`` is when the engine tries again;
    once the attempts are used up it is ``None`` and ``given_up_at`` says when the message was
    tagged Undeliverable on the server.
    """

    mailbox_id: MailboxId
    folder: str
    remote_id: str
    received_at: datetime | None = None
    message_id: MessageId | None = None
    subject: str | None = None
    sender: str | None = None
    explanation: str = ""
    error: ErrorRecord
    attempts: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    first_failed_at: datetime
    last_failed_at: datetime
    next_attempt_at: datetime | None = None
    given_up_at: datetime | None = None

    @property
    def given_up(self) -> bool:
        """Whether the engine stopped trying and tagged the message Undeliverable."""
        return self.given_up_at is not None

    @property
    def ref(self) -> RemoteMessageRef:
        """Where the message lives on the server."""
        return RemoteMessageRef(
            folder=self.folder, remote_id=self.remote_id, received_at=self.received_at
        )

    def is_due(self, now: datetime) -> bool:
        """Whether the engine tries it again in a cycle running at ``now``."""
        due_at = self.next_attempt_at
        return not self.given_up and due_at is not None and due_at <= now
