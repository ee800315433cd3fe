"""The Exchange sync id mappings and ACT sync states serversync keeps for appointment,
contact and task sync: part of :class:`~serversync.sql.SqlStorage`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from serversync.adapters._ports_docs import documented_by
from serversync.errors import StorageConflictError
from serversync.model import ExchangeSyncIdMapping, MailboxId, MappingId, RecordRef
from serversync.model.act import ActEntity, ActSyncState
from serversync.ports import ExchangeSyncIdMappingRepository

from ._codec import dump, load, micros
from ._rows import upsert
from ._schema import act_mappings, act_states
from ._transactions import Transactions

__all__ = ["SqlExchangeMappings"]


def _mapping_columns(mapping: ExchangeSyncIdMapping) -> dict[str, Any]:
    linked = mapping.is_linked
    never_linked = not mapping.exchange_entry_id or not mapping.record.id
    return {
        "owner": str(mapping.owner),
        "entity": mapping.record.entity,
        "linked_record": str(mapping.record) if linked else None,
        "linked_item": mapping.exchange_entry_id if linked else None,
        "failed_at": micros(mapping.last_sync_error_occurred_on) if never_linked else None,
        "data": dump(mapping),
    }


@documented_by(ExchangeSyncIdMappingRepository)
class SqlExchangeMappings:
    """:class:`~serversync.ports.ExchangeSyncIdMappingRepository` over the
    ``serversync_act_mappings`` and ``serversync_act_states`` tables; the database's unique
    constraints decide between concurrent links."""

    _db: Transactions

    async def list_mappings(
        self, owner: RecordRef, entity: ActEntity
    ) -> Sequence[ExchangeSyncIdMapping]:
        query = (
            select(act_mappings.c.data)
            .where(act_mappings.c.owner == str(owner), act_mappings.c.entity == entity.value)
            .order_by(act_mappings.c.id)
        )

        async def read(c: AsyncConnection) -> list[ExchangeSyncIdMapping]:
            rows = await c.execute(query)
            return [load(r.data, ExchangeSyncIdMapping) for r in rows]

        return await self._db.read(read)

    async def save_mapping(self, mapping: ExchangeSyncIdMapping) -> None:
        values = _mapping_columns(mapping)

        async def write(c: AsyncConnection) -> None:
            # An upsert on the id alone: any IntegrityError left is a second link.
            if c.dialect.name == "postgresql":
                pg = postgresql.insert(act_mappings).values(id=mapping.id, **values)
                await c.execute(pg.on_conflict_do_update(index_elements=["id"], set_=values))
            else:
                lite = sqlite.insert(act_mappings).values(id=mapping.id, **values)
                await c.execute(lite.on_conflict_do_update(index_elements=["id"], set_=values))

        try:
            await self._db.write(write)
        except IntegrityError as exc:
            raise StorageConflictError(
                f"mapping {mapping.id}: {mapping.record} or its Exchange item is already "
                f"linked for {mapping.owner}"
            ) from exc

    async def delete_mapping(self, mapping_id: MappingId) -> None:
        statement = delete(act_mappings).where(act_mappings.c.id == mapping_id)

        async def write(c: AsyncConnection) -> None:
            await c.execute(statement)

        await self._db.write(write)

    async def purge_failed_mappings(self, *, older_than: datetime) -> int:
        statement = delete(act_mappings).where(act_mappings.c.failed_at < micros(older_than))

        async def write(c: AsyncConnection) -> int:
            return int((await c.execute(statement)).rowcount)

        return await self._db.write(write)

    async def load_act_state(self, mailbox_id: MailboxId, entity: ActEntity) -> ActSyncState | None:
        query = select(act_states.c.data).where(
            act_states.c.mailbox_id == mailbox_id, act_states.c.entity == entity.value
        )

        async def read(c: AsyncConnection) -> Any:
            return await c.scalar(query)

        text = await self._db.read(read)
        return None if text is None else load(text, ActSyncState)

    async def save_act_state(self, state: ActSyncState) -> None:
        key = {"mailbox_id": state.mailbox_id, "entity": state.entity.value}
        data = dump(state)
        await self._db.write(lambda c: upsert(c, act_states, key, {"data": data}), retry=True)
