"""The ACT contract checks on the SQL store (SQLite and PostgreSQL), and two stores on one
database racing to link the same record or Exchange item."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path

import attrs
import pytest

from serversync.errors import StorageConflictError
from serversync.model import (
    ActEntity,
    Attendee,
    ConditionOperator,
    ExchangeSyncIdMapping,
    FieldCondition,
    FieldValue,
    FilterGroup,
    MappingId,
    RecordRef,
    Recurrence,
    RecurrenceKind,
    SyncFilter,
)
from serversync.sql import SqlActRecords, SqlStorage
from serversync.testing import (
    check_act_record_repository,
    check_exchange_sync_id_mapping_repository,
)
from tests.conftest import Postgres

StorageFactory = Callable[[], Awaitable[SqlStorage]]
_OWNER = RecordRef("systemuser", "race-owner")


@pytest.fixture(params=["sqlite", "postgresql"])
async def fresh_storage(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StorageFactory]:
    opened: list[SqlStorage] = []

    async def factory() -> SqlStorage:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / f'act-{len(opened)}.db'}"
        else:
            postgres: Postgres = request.getfixturevalue("postgres")
            url = postgres.fresh_database()
        storage = await SqlStorage.open(url, upgrade=request.param == "sqlite")
        opened.append(storage)
        return storage

    yield factory
    for storage in opened:
        await storage.aclose()


async def test_sql_storage_keeps_the_mapping_contract(fresh_storage: StorageFactory) -> None:
    await check_exchange_sync_id_mapping_repository(fresh_storage)


async def test_sql_act_records_keep_the_record_contract(fresh_storage: StorageFactory) -> None:
    async def factory() -> SqlActRecords:
        return SqlActRecords(await fresh_storage())

    await check_act_record_repository(factory)


async def test_act_records_keep_every_kind_of_field_value(fresh_storage: StorageFactory) -> None:
    records = SqlActRecords(await fresh_storage())
    fields: dict[str, FieldValue] = {
        "subject": "Weekly",
        "start": datetime(2030, 3, 4, 9, 0, tzinfo=UTC),
        "due": date(2030, 3, 5),
        "priority": 2,
        "percent": 0.5,
        "all_day": False,
        "location": None,
        "recurrence": Recurrence(
            kind=RecurrenceKind.WEEKLY, weekdays=(1, 3), start_date=date(2030, 3, 4), count=4
        ),
        "attendees": (Attendee(address="bob@contoso.example", optional=True),),
    }
    created = await records.create_act_record(ActEntity.APPOINTMENT, _OWNER, fields)
    (read,) = await records.get_act_records([created.ref])
    assert read == created
    assert dict(read.fields) == fields


async def test_sync_candidates_are_the_records_the_filters_select(
    fresh_storage: StorageFactory,
) -> None:
    records = SqlActRecords(await fresh_storage())
    other = RecordRef("systemuser", "someone-else")
    mine = [
        await records.add_act_record(ActEntity.CONTACT, _OWNER, {"last_name": f"Mine {n}"})
        for n in range(5)
    ]
    for n in range(5):
        await records.add_act_record(ActEntity.CONTACT, other, {"last_name": f"Theirs {n}"})
    owned = SyncFilter(
        id="mine",
        name="My contacts",
        owner=_OWNER,
        entity=ActEntity.CONTACT,
        criteria=FilterGroup(
            conditions=(
                FieldCondition(field="owner", operator=ConditionOperator.EQ_USERID),
                FieldCondition(field="last_name", operator=ConditionOperator.LIKE, value="mine%"),
            )
        ),
    )
    await records.add_sync_filter(owned)
    assert await records.list_sync_filters(_OWNER, ActEntity.CONTACT) == [owned]
    assert await records.list_sync_filters(_OWNER, ActEntity.TASK) == []

    found = await records.find_sync_candidates(
        ActEntity.CONTACT, [owned], modified_after=None, limit=3
    )
    assert [r.ref for r in found] == [r.ref for r in mine[:3]], "the limit counts matches"
    rest = await records.find_sync_candidates(
        ActEntity.CONTACT, [owned], modified_after=found[-1].modified_on, limit=50
    )
    assert {r.ref for r in rest} <= {r.ref for r in mine[3:]}


def _linked(n: int, *, record: str | None = None, item: str | None = None) -> ExchangeSyncIdMapping:
    return ExchangeSyncIdMapping(
        id=MappingId(f"race-{n}"),
        owner=_OWNER,
        record=RecordRef("contact", record or f"contact-{n}"),
        exchange_entry_id=item or f"item-{n}",
    )


async def _outcomes(stores: list[SqlStorage], mappings: list[ExchangeSyncIdMapping]) -> list[bool]:
    async def save(store: SqlStorage, mapping: ExchangeSyncIdMapping) -> bool:
        try:
            await store.save_mapping(mapping)
        except StorageConflictError:
            return False
        return True

    return list(await asyncio.gather(*(save(stores[n % 2], m) for n, m in enumerate(mappings))))


async def test_two_stores_link_one_record_and_one_item_once(
    fresh_storage: StorageFactory,
) -> None:
    first = await fresh_storage()
    second = await SqlStorage.open(first.engine.url.render_as_string(hide_password=False))
    stores = [first, second]
    try:
        same_record = [_linked(n, record="contested") for n in range(8)]
        assert sum(await _outcomes(stores, same_record)) == 1
        same_item = [_linked(10 + n, item="contested-item") for n in range(8)]
        assert sum(await _outcomes(stores, same_item)) == 1
        linked = await first.list_mappings(_OWNER, ActEntity.CONTACT)
        assert len(linked) == 2
        assert sum(m.record.id == "contested" for m in linked) == 1
        assert sum(m.exchange_entry_id == "contested-item" for m in linked) == 1
    finally:
        await second.aclose()


async def test_relinking_an_ended_mapping_to_a_linked_record_conflicts(
    fresh_storage: StorageFactory,
) -> None:
    storage = await fresh_storage()
    await storage.save_mapping(_linked(1, record="shared"))
    ended = attrs.evolve(_linked(2, record="shared"), is_unlinked_in_crm=True)
    await storage.save_mapping(ended)
    with pytest.raises(StorageConflictError):
        await storage.save_mapping(attrs.evolve(ended, is_unlinked_in_crm=False))
    stored = {m.id: m for m in await storage.list_mappings(_OWNER, ActEntity.CONTACT)}
    assert stored[ended.id] == ended, "a refused save changes nothing"
