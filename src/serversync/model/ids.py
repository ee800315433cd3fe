"""Identifiers. Each is a distinct type so a ``MailboxId`` cannot be passed as an ``ActivityId``.

Hosts choose the representation (Dataverse GUIDs, database integers rendered as text, ...);
serversync only compares them, so every id is a ``str`` at run time.
"""

from __future__ import annotations

import enum
from typing import NewType

import attrs

__all__ = [
    "ActivityId",
    "ClaimToken",
    "EntityName",
    "MailboxId",
    "MappingId",
    "MessageId",
    "ProfileId",
    "QueueItemId",
    "RecordRef",
    "TrackingFolderId",
]

MailboxId = NewType("MailboxId", str)
"""Id of a :class:`~serversync.model.Mailbox`."""
ProfileId = NewType("ProfileId", str)
"""Id of an :class:`~serversync.model.EmailServerProfile`."""
ActivityId = NewType("ActivityId", str)
"""Id of an :class:`~serversync.model.EmailActivity`."""
QueueItemId = NewType("QueueItemId", str)
"""Id of a :class:`~serversync.model.QueueItem`."""
MappingId = NewType("MappingId", str)
"""Id of an :class:`~serversync.model.ExchangeSyncIdMapping`."""
TrackingFolderId = NewType("TrackingFolderId", str)
"""Id of a :class:`~serversync.model.MailboxTrackingFolder`."""
ClaimToken = NewType("ClaimToken", str)
"""Proof that one engine holds the send claim on an email."""
MessageId = NewType("MessageId", str)
"""An RFC 5322 msg-id with its angle brackets, e.g. ``<abc@example.com>``."""


class EntityName(enum.StrEnum):
    """Logical names of the CRM tables serversync refers to (Dataverse spelling)."""

    SYSTEMUSER = "systemuser"
    QUEUE = "queue"
    CONTACT = "contact"
    ACCOUNT = "account"
    LEAD = "lead"
    EMAIL = "email"
    APPOINTMENT = "appointment"
    TASK = "task"
    TEAM = "team"
    BUSINESSUNIT = "businessunit"
    EQUIPMENT = "equipment"
    UNRESOLVED_ADDRESS = "unresolvedaddress"


@attrs.frozen
class RecordRef:
    """A reference to one CRM record: its table's logical name and its id."""

    entity: str
    id: str

    def __str__(self) -> str:
        return f"{self.entity}:{self.id}"
