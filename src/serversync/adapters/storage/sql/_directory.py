"""A record directory in the same database, for hosts (and the CLI) without their own."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import final

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from serversync.adapters._ports_docs import documented_by
from serversync.adapters.storage._sender_records import sender_record
from serversync.model import CrmRecord, RecordRef, SenderRecordRequest
from serversync.model.messages import normalize_address
from serversync.ports import RecordCreator, RecordDirectory

from ._codec import dump, load, storable
from ._rows import next_value, upsert
from ._schema import records
from ._storage import ORDER_COUNTER, SqlStorage, _rows, _scalars
from ._transactions import Transactions

__all__ = ["SqlDirectory"]

# Every incoming poll reads its mailbox owner's record: the statement is built once.
_RECORD = select(records.c.data).where(records.c.ref == bindparam("ref"))


@final
@documented_by(RecordDirectory, RecordCreator)
class SqlDirectory:
    """:class:`~serversync.ports.RecordDirectory` (and
    :class:`~serversync.ports.RecordCreator`) over the ``serversync_records`` table.

    Hosts whose CRM records live elsewhere implement the port on their own tables instead.
    """

    def __init__(self, storage: SqlStorage) -> None:
        self._storage = storage

    @property
    def _db(self) -> Transactions:
        return self._storage.transactions

    async def add(self, record: CrmRecord) -> None:
        """Store or replace a record; its address resolves to it from now on."""
        await self._db.write(lambda c: self._write(c, record), retry=True)

    async def _write(self, c: AsyncConnection, record: CrmRecord) -> None:
        values = {
            "address": record.email_address,
            "seq": await next_value(c, ORDER_COUNTER),
            "data": dump(record),
        }
        await upsert(c, records, {"ref": str(record.ref)}, values)

    async def create_sender_record(self, request: SenderRecordRequest) -> CrmRecord:
        async def write(c: AsyncConnection) -> CrmRecord:
            text = await c.scalar(
                select(records.c.data)
                .where(records.c.address == request.email_address)
                .order_by(records.c.seq)
                .limit(1)
            )
            if text is not None:
                return load(text, CrmRecord)
            record = sender_record(request)
            await self._write(c, record)
            return record

        return await self._db.write(write, retry=True)

    async def list_records(self) -> Sequence[CrmRecord]:
        """Every record, in the order they were added."""
        query = select(records.c.data).order_by(records.c.seq)
        texts = await self._db.read(lambda c: _scalars(c, query))
        return [load(text, CrmRecord) for text in texts]

    async def find_by_addresses(
        self, addresses: Collection[str]
    ) -> Mapping[str, Sequence[CrmRecord]]:
        wanted = sorted({normalize_address(a) for a in storable(addresses)})
        if not wanted:
            return {}
        found: dict[str, list[CrmRecord]] = {}
        query = (
            select(records.c.address, records.c.data)
            .where(records.c.address.in_(wanted))
            .order_by(records.c.seq)
        )
        for row in await self._db.read(lambda c: _rows(c, query)):
            found.setdefault(row.address, []).append(load(row.data, CrmRecord))
        return {address: tuple(found_records) for address, found_records in found.items()}

    async def get_record(self, ref: RecordRef) -> CrmRecord | None:
        parameters = {"ref": str(ref)}
        text = await self._db.read(lambda c: c.scalar(_RECORD, parameters))
        return None if text is None else load(text, CrmRecord)
