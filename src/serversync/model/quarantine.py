"""Poison messages: incoming messages that could not be fetched, parsed or stored."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import attrs

from serversync.model.ids import MailboxId, MessageId
from serversync.model.messages import RemoteMessageRef
from serversync.model.outcomes import ErrorRecord

__all__ = ["QuarantineCount", "QuarantinedMessage"]


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


@attrs.frozen(kw_only=True)
class QuarantineCount:
    """A mailbox's quarantine at a glance: ``waiting`` messages still to be tried again (the
    earliest at ``next_attempt_at``) and ``given_up`` ones, tagged Undeliverable."""

    waiting: int = 0
    given_up: int = 0
    next_attempt_at: datetime | None = None

    @property
    def total(self) -> int:
        """Every quarantined message of the mailbox."""
        return self.waiting + self.given_up

    @classmethod
    def of(cls, messages: Iterable[QuarantinedMessage]) -> QuarantineCount:
        """The count of ``messages`` (all of one mailbox)."""
        waiting = given_up = 0
        earliest: datetime | None = None
        for message in messages:
            due = message.next_attempt_at
            # Without a next try it will never run again: as good as given up.
            if message.given_up or due is None:
                given_up += 1
                continue
            waiting += 1
            if earliest is None or due < earliest:
                earliest = due
        return cls(waiting=waiting, given_up=given_up, next_attempt_at=earliest)
