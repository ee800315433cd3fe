"""Ports for appointment, contact and task (ACT) sync.

Hosts implement :class:`ActRecordRepository` (their CRM appointments, contacts, tasks and
users' synchronization filters) and :class:`ExchangeSyncIdMappingRepository` (the mapping
rows and each mailbox's sync state). Adapters provide :class:`ExchangeItemsTransport` (EWS;
an in-memory one for tests). The engine decides everything else in pure code
(:mod:`serversync.act`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from serversync.model import Credentials, EmailServerProfile, Mailbox
from serversync.model.act import (
    ActEntity,
    ActRecord,
    ActSyncState,
    ExchangeItem,
    ExchangeItemChanges,
    ExchangeItemKey,
    FieldValues,
    SyncFilter,
)
from serversync.model.exchange import ExchangeSyncIdMapping
from serversync.model.ids import MailboxId, MappingId, RecordRef

__all__ = [
    "ActRecordRepository",
    "ExchangeItemsSession",
    "ExchangeItemsTransport",
    "ExchangeSyncIdMappingRepository",
]


class ActRecordRepository(Protocol):
    """The host's CRM appointments, contacts and tasks, and its users' sync filters."""

    async def list_sync_filters(self, user: RecordRef, entity: ActEntity) -> Sequence[SyncFilter]:
        """``user``'s synchronization filters for ``entity``, enabled or not."""
        ...

    async def find_sync_candidates(
        self,
        entity: ActEntity,
        filters: Sequence[SyncFilter],
        *,
        modified_after: datetime | None,
        limit: int,
    ) -> Sequence[ActRecord]:
        """Records of ``entity`` that may match one of ``filters``, modified after
        ``modified_after`` (all when ``None``), oldest ``modified_on`` first, at most ``limit``.

        A superset is allowed: the engine evaluates the filters again itself. ``filters`` is
        never empty.
        """
        ...

    async def get_act_records(self, refs: Sequence[RecordRef]) -> Sequence[ActRecord]:
        """The records of ``refs`` that still exist (a missing one was deleted)."""
        ...

    async def create_act_record(
        self,
        entity: ActEntity,
        owner: RecordRef,
        fields: FieldValues,
        *,
        series: RecordRef | None = None,
        original_start: datetime | None = None,
    ) -> ActRecord:
        """Create a record from an Exchange item (owned by ``owner``).

        An exception of a recurring appointment comes with ``series`` (the master record)
        and ``original_start`` (the occurrence it replaces). ``fields["organizer"]``, when
        present, is the appointment's organizer.
        """
        ...

    async def update_act_record(
        self, ref: RecordRef, changes: FieldValues, *, expected_version: str
    ) -> ActRecord:
        """Write ``changes`` if the record's version is still ``expected_version``.

        Raises :class:`~serversync.errors.StorageConflictError` when it changed meanwhile
        (the engine reads it again next cycle) and returns the record as stored.
        """
        ...

    async def delete_act_record(self, ref: RecordRef) -> bool:
        """Delete the record; ``False`` when it was already gone."""
        ...


class ExchangeSyncIdMappingRepository(Protocol):
    """``exchangesyncidmapping`` rows and each mailbox's ACT sync state."""

    async def list_mappings(
        self, owner: RecordRef, entity: ActEntity
    ) -> Sequence[ExchangeSyncIdMapping]:
        """Every mapping of ``owner`` for records of ``entity``, linked or not."""
        ...

    async def save_mapping(self, mapping: ExchangeSyncIdMapping) -> None:
        """Insert or replace the mapping with ``mapping.id``.

        At most one linked mapping exists per (owner, record) and per (owner, Exchange
        item): a second raises :class:`~serversync.errors.StorageConflictError`.
        """
        ...

    async def delete_mapping(self, mapping_id: MappingId) -> None:
        """Remove the mapping (nothing happens when it is gone)."""
        ...

    async def purge_failed_mappings(self, *, older_than: datetime) -> int:
        """Delete mappings whose last failure is older than ``older_than`` and that never
        linked; return how many (Dynamics keeps them 3 days)."""
        ...

    async def load_act_state(self, mailbox_id: MailboxId, entity: ActEntity) -> ActSyncState | None:
        """The mailbox's sync state for ``entity``; ``None`` before its first cycle."""
        ...

    async def save_act_state(self, state: ActSyncState) -> None:
        """Store the state, after everything it covers was applied."""
        ...


class ExchangeItemsSession(Protocol):
    """One open session to a user's Exchange calendar, contacts and tasks folders."""

    def held_fields(self, entity: ActEntity) -> frozenset[str]:
        """The fields of :data:`serversync.act.FIELDS` this Exchange holds for ``entity``.

        The engine synchronizes only these: it never sends the others, and never reads their
        absence as a change. An item written with any other field may be refused.
        """
        ...

    async def sync_items(
        self, entity: ActEntity, state: str | None, *, limit: int
    ) -> ExchangeItemChanges:
        """Changes in ``entity``'s default folder since ``state`` (all items when ``None``)."""
        ...

    async def get_items(self, entity: ActEntity, item_ids: Sequence[str]) -> Sequence[ExchangeItem]:
        """The items of ``item_ids`` that still exist, whole."""
        ...

    async def create_item(
        self,
        entity: ActEntity,
        fields: FieldValues,
        *,
        series_id: str | None = None,
        original_start: datetime | None = None,
        record: RecordRef | None = None,
    ) -> ExchangeItemKey:
        """Create an item (an appointment without attendees is saved, one with attendees is
        saved without sending invitations) and return its key.

        With ``series_id`` the item is the exception of that recurring master for the
        occurrence starting at ``original_start`` (EWS: the occurrence is fetched by its
        index and updated). ``record`` is the CRM record the item is made for: a transport
        may keep it on the item, and derive from it a key that makes a repeated create
        (after a lost answer) return the item made the first time (Graph's
        ``transactionId``).
        """
        ...

    async def update_item(
        self, entity: ActEntity, key: ExchangeItemKey, changes: FieldValues
    ) -> ExchangeItemKey:
        """Write ``changes`` if the item's change key is still ``key.change_key``.

        Raises :class:`~serversync.errors.StorageConflictError` when the item changed
        meanwhile; returns the new key.
        """
        ...

    async def delete_item(
        self, entity: ActEntity, item_id: str, *, send_cancellations: bool = False
    ) -> None:
        """Delete the item (moved to Deleted Items); nothing happens when it is gone."""
        ...


class ExchangeItemsTransport(Protocol):
    """Opens ACT sessions; one instance serves every mailbox."""

    def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AbstractAsyncContextManager[ExchangeItemsSession]:
        """Connect and authenticate (the profile's ACT impersonation applies)."""
        ...
