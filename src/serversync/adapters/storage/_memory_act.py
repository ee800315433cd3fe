"""In-memory CRM appointments, contacts and tasks, sync filters, Exchange mappings and ACT
sync states: the ACT repositories of :class:`~serversync.testing.InMemoryStorage`."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import attrs

from serversync.act.filters import in_sync_scope
from serversync.adapters._faults import FaultPlan, FaultPoint
from serversync.adapters._ports_docs import documented_by
from serversync.errors import StorageConflictError
from serversync.model import ExchangeSyncIdMapping, MailboxId, MappingId, RecordRef
from serversync.model.act import (
    ActEntity,
    ActRecord,
    ActSyncState,
    FieldValue,
    FieldValues,
    SyncFilter,
)
from serversync.ports import ActRecordRepository, Clock, ExchangeSyncIdMappingRepository

__all__ = ["InMemoryActRecords", "InMemoryExchangeMappings"]


class _Faults:
    faults: FaultPlan

    def _act_before(self, operation: str) -> None:
        self.faults.check(operation, FaultPoint.BEFORE)

    def _act_after(self, operation: str) -> None:
        self.faults.check(operation, FaultPoint.AFTER)


@documented_by(ActRecordRepository)
class InMemoryActRecords(_Faults):
    """:class:`~serversync.ports.ActRecordRepository` over dicts, plus host-side helpers to
    put, edit and read records and filters as a user of the CRM would."""

    _clock: Clock | None

    def _init_act_records(self) -> None:
        self._act_records: dict[RecordRef, ActRecord] = {}
        self._sync_filters: list[SyncFilter] = []
        self._act_numbers = itertools.count(1)

    def _act_now(self) -> datetime:
        # Without a clock the storage is a plain store; the host's records carry their times.
        return self._clock.now() if self._clock is not None else datetime.now(UTC)

    def _next_version(self) -> str:
        return str(next(self._act_numbers))

    # -- host-side helpers ------------------------------------------------------------------

    def add_sync_filter(self, sync_filter: SyncFilter) -> None:
        """Store or replace (by id) a user's synchronization filter."""
        self._sync_filters = [f for f in self._sync_filters if f.id != sync_filter.id]
        self._sync_filters.append(sync_filter)

    def put_act_record(self, record: ActRecord) -> ActRecord:
        """Store or replace a record as the host would; returns it."""
        self._act_records[record.ref] = record
        return record

    def add_act_record(
        self,
        entity: ActEntity,
        owner: RecordRef,
        fields: FieldValues,
        *,
        organizer: str | None = None,
        series: RecordRef | None = None,
        original_start: datetime | None = None,
    ) -> ActRecord:
        """Create a record as a CRM user would (new id, version and ``modified_on`` now)."""
        number = self._next_version()
        record = ActRecord(
            ref=RecordRef(entity.value, f"{entity.value}-{number}"),
            owner=owner,
            fields=dict(fields),
            version=number,
            modified_on=self._act_now(),
            organizer=organizer,
            series=series,
            original_start=original_start,
        )
        return self.put_act_record(record)

    def edit_act_record(self, ref: RecordRef, changes: FieldValues) -> ActRecord:
        """Change a record as a CRM user would (new version, ``modified_on`` now)."""
        record = self._act_records[ref]
        return self.put_act_record(self._changed(record, changes))

    def act_record(self, ref: RecordRef) -> ActRecord | None:
        """The stored record, or ``None``."""
        return self._act_records.get(ref)

    def act_records(self, entity: ActEntity | None = None) -> list[ActRecord]:
        """Every stored record (of ``entity``), in creation order."""
        return [r for r in self._act_records.values() if entity is None or r.entity is entity]

    def _changed(self, record: ActRecord, changes: FieldValues) -> ActRecord:
        fields: dict[str, FieldValue] = dict(record.fields)
        fields.update(changes)
        organizer = changes.get("organizer", record.organizer)
        return attrs.evolve(
            record,
            fields=fields,
            version=self._next_version(),
            modified_on=self._act_now(),
            organizer=organizer if isinstance(organizer, str) else record.organizer,
        )

    # -- ActRecordRepository ----------------------------------------------------------------

    async def list_sync_filters(self, user: RecordRef, entity: ActEntity) -> Sequence[SyncFilter]:
        self._act_before("list_sync_filters")
        return [f for f in self._sync_filters if f.owner == user and f.entity is entity]

    async def find_sync_candidates(
        self,
        entity: ActEntity,
        filters: Sequence[SyncFilter],
        *,
        modified_after: datetime | None,
        limit: int,
    ) -> Sequence[ActRecord]:
        self._act_before("find_sync_candidates")
        found = [
            r
            for r in self._act_records.values()
            if r.entity is entity
            and (modified_after is None or r.modified_on > modified_after)
            and any(in_sync_scope(r, [f], f.owner) for f in filters)
        ]
        found.sort(key=lambda r: (r.modified_on, r.ref.id))
        return found[:limit]

    async def get_act_records(self, refs: Sequence[RecordRef]) -> Sequence[ActRecord]:
        self._act_before("get_act_records")
        return [self._act_records[ref] for ref in refs if ref in self._act_records]

    async def create_act_record(
        self,
        entity: ActEntity,
        owner: RecordRef,
        fields: FieldValues,
        *,
        series: RecordRef | None = None,
        original_start: datetime | None = None,
    ) -> ActRecord:
        self._act_before("create_act_record")
        organizer = fields.get("organizer")
        record = self.add_act_record(
            entity,
            owner,
            fields,
            organizer=organizer if isinstance(organizer, str) else None,
            series=series,
            original_start=original_start,
        )
        self._act_after("create_act_record")
        return record

    async def update_act_record(
        self, ref: RecordRef, changes: FieldValues, *, expected_version: str
    ) -> ActRecord:
        self._act_before("update_act_record")
        record = self._act_records.get(ref)
        if record is None:
            raise StorageConflictError(f"{ref} was deleted")
        if record.version != expected_version:
            raise StorageConflictError(
                f"{ref} changed meanwhile (version {record.version}, expected {expected_version})"
            )
        stored = self.put_act_record(self._changed(record, changes))
        self._act_after("update_act_record")
        return stored

    async def delete_act_record(self, ref: RecordRef) -> bool:
        self._act_before("delete_act_record")
        existed = self._act_records.pop(ref, None) is not None
        self._act_after("delete_act_record")
        return existed


@documented_by(ExchangeSyncIdMappingRepository)
class InMemoryExchangeMappings(_Faults):
    """:class:`~serversync.ports.ExchangeSyncIdMappingRepository` over dicts, with the
    uniqueness a database's unique indexes give."""

    def _init_exchange_mappings(self) -> None:
        self._mappings: dict[MappingId, ExchangeSyncIdMapping] = {}
        self._act_states: dict[tuple[MailboxId, ActEntity], ActSyncState] = {}

    def mappings(self, owner: RecordRef | None = None) -> list[ExchangeSyncIdMapping]:
        """Every mapping (of ``owner``), in insertion order."""
        return [m for m in self._mappings.values() if owner is None or m.owner == owner]

    def act_states(self) -> Mapping[tuple[MailboxId, ActEntity], ActSyncState]:
        """Every saved ACT sync state."""
        return dict(self._act_states)

    async def list_mappings(
        self, owner: RecordRef, entity: ActEntity
    ) -> Sequence[ExchangeSyncIdMapping]:
        self._act_before("list_mappings")
        return [
            m for m in self._mappings.values() if m.owner == owner and m.record.entity == entity
        ]

    async def save_mapping(self, mapping: ExchangeSyncIdMapping) -> None:
        self._act_before("save_mapping")
        if mapping.is_linked:
            for other in self._mappings.values():
                if other.id == mapping.id or not other.is_linked or other.owner != mapping.owner:
                    continue
                if other.record == mapping.record:
                    raise StorageConflictError(
                        f"{mapping.record} is already linked for {mapping.owner} ({other.id})"
                    )
                if other.exchange_entry_id == mapping.exchange_entry_id:
                    raise StorageConflictError(
                        f"the Exchange item is already linked for {mapping.owner} ({other.id})"
                    )
        self._mappings[mapping.id] = mapping
        self._act_after("save_mapping")

    async def delete_mapping(self, mapping_id: MappingId) -> None:
        self._act_before("delete_mapping")
        self._mappings.pop(mapping_id, None)
        self._act_after("delete_mapping")

    async def purge_failed_mappings(self, *, older_than: datetime) -> int:
        self._act_before("purge_failed_mappings")
        doomed = [
            m.id
            for m in self._mappings.values()
            if (not m.exchange_entry_id or not m.record.id)
            and m.last_sync_error_occurred_on is not None
            and m.last_sync_error_occurred_on < older_than
        ]
        for mapping_id in doomed:
            del self._mappings[mapping_id]
        self._act_after("purge_failed_mappings")
        return len(doomed)

    async def load_act_state(self, mailbox_id: MailboxId, entity: ActEntity) -> ActSyncState | None:
        self._act_before("load_act_state")
        return self._act_states.get((mailbox_id, entity))

    async def save_act_state(self, state: ActSyncState) -> None:
        self._act_before("save_act_state")
        self._act_states[(state.mailbox_id, state.entity)] = state
        self._act_after("save_act_state")
