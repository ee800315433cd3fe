"""CRM appointments, contacts and tasks with users' sync filters, in the SQL store's
database, for hosts without their own CRM tables."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, final

import attrs
from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from serversync.act.filters import in_sync_scope
from serversync.adapters._ports_docs import documented_by
from serversync.errors import StorageConflictError
from serversync.model import RecordRef
from serversync.model.act import ActEntity, ActRecord, FieldValue, FieldValues, SyncFilter
from serversync.ports import ActRecordRepository, Clock

from ._codec import dump, load, micros, storable
from ._rows import upsert
from ._schema import act_records, act_sync_filters
from ._storage import SqlStorage

__all__ = ["SqlActRecords"]

# Candidates are read in pages of at least this many rows while the filters are applied.
_CANDIDATE_PAGE = 200


def _record_columns(record: ActRecord) -> dict[str, Any]:
    return {
        "entity": record.ref.entity,
        "owner": str(record.owner),
        "version": record.version,
        "modified_on": micros(record.modified_on),
        "data": dump(record),
    }


def _new_version() -> str:
    # Random, not a counter: a record deleted and created again never repeats a version,
    # and writers share no hot row.
    return uuid.uuid4().hex


@final
@documented_by(ActRecordRepository)
class SqlActRecords:
    """:class:`~serversync.ports.ActRecordRepository` over the ``serversync_act_records`` and
    ``serversync_act_sync_filters`` tables of a :class:`~serversync.sql.SqlStorage`'s database, plus
    host-side helpers to add records and filters as a CRM user would.

    For hosts without their own CRM tables (the CLI, the demo); a CRM implements the port on
    its own tables instead. ``clock`` gives ``modified_on`` (the system clock by default).
    """

    def __init__(self, storage: SqlStorage, *, clock: Clock | None = None) -> None:
        self._storage = storage
        self._clock = clock

    @property
    def _engine(self) -> AsyncEngine:
        return self._storage.engine

    def _now(self) -> datetime:
        return self._clock.now() if self._clock is not None else datetime.now(UTC)

    # -- host-side helpers ------------------------------------------------------------------

    async def add_sync_filter(self, sync_filter: SyncFilter) -> None:
        """Store or replace (by id) a user's synchronization filter."""
        values = {
            "owner": str(sync_filter.owner),
            "entity": sync_filter.entity.value,
            "data": dump(sync_filter),
        }
        await self._storage.transactions.write(
            lambda c: upsert(c, act_sync_filters, {"id": sync_filter.id}, values), retry=True
        )

    async def add_act_record(
        self,
        entity: ActEntity,
        owner: RecordRef,
        fields: FieldValues,
        *,
        organizer: str | None = None,
        series: RecordRef | None = None,
        original_start: datetime | None = None,
    ) -> ActRecord:
        """Create a record as a CRM user would (new id and version, ``modified_on`` now)."""
        record = ActRecord(
            ref=RecordRef(entity.value, str(uuid.uuid4())),
            owner=owner,
            fields=dict(fields),
            version=_new_version(),
            modified_on=self._now(),
            organizer=organizer,
            series=series,
            original_start=original_start,
        )
        async with self._engine.begin() as c:
            await c.execute(
                insert(act_records).values(ref=str(record.ref), **_record_columns(record))
            )
        return record

    async def list_act_records(self, entity: ActEntity | None = None) -> Sequence[ActRecord]:
        """Every stored record (of ``entity``), oldest ``modified_on`` first."""
        query = select(act_records.c.data).order_by(act_records.c.modified_on, act_records.c.ref)
        if entity is not None:
            query = query.where(act_records.c.entity == entity.value)
        async with self._engine.connect() as c:
            return [load(r.data, ActRecord) for r in await c.execute(query)]

    # -- ActRecordRepository ----------------------------------------------------------------

    async def list_sync_filters(self, user: RecordRef, entity: ActEntity) -> Sequence[SyncFilter]:
        async with self._engine.connect() as c:
            rows = await c.execute(
                select(act_sync_filters.c.data)
                .where(
                    act_sync_filters.c.owner == str(user),
                    act_sync_filters.c.entity == entity.value,
                )
                .order_by(act_sync_filters.c.id)
            )
            return [load(r.data, SyncFilter) for r in rows]

    async def find_sync_candidates(
        self,
        entity: ActEntity,
        filters: Sequence[SyncFilter],
        *,
        modified_after: datetime | None,
        limit: int,
    ) -> Sequence[ActRecord]:
        # The filters are evaluated here, page by page in (modified_on, ref) order, so the
        # result is exact and ``limit`` counts matching records only.
        found: list[ActRecord] = []
        after: tuple[int, str] | None = None
        page = max(limit, _CANDIDATE_PAGE)
        async with self._engine.connect() as c:
            while len(found) < limit:
                query = (
                    select(act_records.c.ref, act_records.c.modified_on, act_records.c.data)
                    .where(act_records.c.entity == entity.value)
                    .order_by(act_records.c.modified_on, act_records.c.ref)
                    .limit(page)
                )
                if modified_after is not None:
                    query = query.where(act_records.c.modified_on > micros(modified_after))
                if after is not None:
                    moment, ref = after
                    query = query.where(
                        or_(
                            act_records.c.modified_on > moment,
                            and_(act_records.c.modified_on == moment, act_records.c.ref > ref),
                        )
                    )
                rows = (await c.execute(query)).all()
                for row in rows:
                    record = load(row.data, ActRecord)
                    if any(in_sync_scope(record, [f], f.owner) for f in filters):
                        found.append(record)
                if len(rows) < page:
                    break
                after = (rows[-1].modified_on, rows[-1].ref)
        return found[:limit]

    async def get_act_records(self, refs: Sequence[RecordRef]) -> Sequence[ActRecord]:
        wanted = storable(str(ref) for ref in refs)
        if not wanted:
            return []
        async with self._engine.connect() as c:
            rows = await c.execute(
                select(act_records.c.ref, act_records.c.data).where(act_records.c.ref.in_(wanted))
            )
            stored = {row.ref: load(row.data, ActRecord) for row in rows}
        return [stored[str(ref)] for ref in refs if str(ref) in stored]

    async def create_act_record(
        self,
        entity: ActEntity,
        owner: RecordRef,
        fields: FieldValues,
        *,
        series: RecordRef | None = None,
        original_start: datetime | None = None,
    ) -> ActRecord:
        organizer = fields.get("organizer")
        return await self.add_act_record(
            entity,
            owner,
            fields,
            organizer=organizer if isinstance(organizer, str) else None,
            series=series,
            original_start=original_start,
        )

    async def update_act_record(
        self, ref: RecordRef, changes: FieldValues, *, expected_version: str
    ) -> ActRecord:
        async with self._engine.begin() as c:
            text = await c.scalar(
                select(act_records.c.data).where(act_records.c.ref == str(ref)).with_for_update()
            )
            if text is None:
                raise StorageConflictError(f"{ref} was deleted")
            record = load(text, ActRecord)
            if record.version != expected_version:
                raise StorageConflictError(
                    f"{ref} changed meanwhile (version {record.version}, "
                    f"expected {expected_version})"
                )
            changed = self._changed(record, changes)
            written = await c.execute(
                update(act_records)
                .where(act_records.c.ref == str(ref), act_records.c.version == expected_version)
                .values(**_record_columns(changed))
            )
            if written.rowcount != 1:
                raise StorageConflictError(f"{ref} changed meanwhile")
        return changed

    def _changed(self, record: ActRecord, changes: FieldValues) -> ActRecord:
        fields: dict[str, FieldValue] = dict(record.fields)
        fields.update(changes)
        organizer = changes.get("organizer", record.organizer)
        return attrs.evolve(
            record,
            fields=fields,
            version=_new_version(),
            # Never earlier than the last write, even when the clock stepped back.
            modified_on=max(self._now(), record.modified_on),
            organizer=organizer if isinstance(organizer, str) else record.organizer,
        )

    async def delete_act_record(self, ref: RecordRef) -> bool:
        async with self._engine.begin() as c:
            result = await c.execute(delete(act_records).where(act_records.c.ref == str(ref)))
        return bool(result.rowcount > 0)
