"""Creating CRM records: the optional half of the host's record directory."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from serversync.model import CrmRecord, SenderRecordRequest

__all__ = ["RecordCreator"]


@runtime_checkable
class RecordCreator(Protocol):
    """A :class:`~serversync.ports.RecordDirectory` that can also create contacts and leads.

    The engine creates records only through a directory that offers this, and only when
    the organisation and the accepting user ask for it
    (:func:`serversync.relevance.auto_create.sender_record_to_create`).
    """

    async def create_sender_record(self, request: SenderRecordRequest) -> CrmRecord:
        """Create the contact or lead of ``request`` and return it as the directory will
        find it by address from now on.

        When a record with that address exists already (created by another engine
        meanwhile), return it instead of creating a second.
        """
        ...
