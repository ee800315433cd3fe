"""Appointment, contact and task sync on the SQL store: the migration to its tables, and
SyncEngine with records and filters in SqlActRecords, mappings and sync states in
SqlStorage, Exchange in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection, inspect

from serversync import (
    ActDeliveryMethod,
    ActEntity,
    RecordRef,
    RunStatus,
    ServerType,
    TestStatus,
    Workload,
)
from serversync.adapters.storage.sql import _database
from serversync.sql import SqlActRecords, SqlStorage
from serversync.testing import InMemoryWorld, a_mailbox, a_profile, a_sync_filter
from tests.conftest import Postgres

pytestmark = pytest.mark.integration

ALICE = "alice@contoso.example"
_ACT_TABLES = {
    "serversync_act_mappings",
    "serversync_act_records",
    "serversync_act_states",
    "serversync_act_sync_filters",
}


@pytest.fixture(params=["sqlite", "postgresql"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStorage]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'act.db'}"
    else:
        postgres: Postgres = request.getfixturevalue("postgres")
        url = postgres.fresh_database()
    async with await SqlStorage.open(url, upgrade=request.param == "sqlite") as opened:
        yield opened


def _migrate(connection: Connection, revision: str, *, down: bool = False) -> None:
    config = _database._alembic_config(connection)
    if down:
        command.downgrade(config, revision)
    else:
        command.upgrade(config, revision)


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    postgres: Postgres = request.getfixturevalue("postgres")
    return postgres.empty_database()


async def test_a_store_of_the_quarantine_schema_migrates_to_act_and_back(empty_url: str) -> None:
    url = empty_url
    engine = _database.connect(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_migrate, "0002")
            assert not _ACT_TABLES & await connection.run_sync(_tables)
        mailbox = a_mailbox(ALICE)
        await SqlStorage(engine).add_mailbox(mailbox)
    finally:
        await engine.dispose()

    async with await SqlStorage.open(url, upgrade=True) as store:
        assert await store.get_mailbox(mailbox.id) == mailbox, "the upgrade keeps the rows"
        assert await store.list_mappings(RecordRef("systemuser", "x"), ActEntity.TASK) == []
        async with store.engine.begin() as connection:
            assert await connection.run_sync(_tables) >= _ACT_TABLES
            await connection.run_sync(_migrate, "0002", down=True)
            left = await connection.run_sync(_tables)
        assert not _ACT_TABLES & left
        assert "serversync_quarantine" in left
        assert await store.get_mailbox(mailbox.id) == mailbox, "the downgrade keeps the rest"


async def test_act_sync_runs_both_ways_on_the_sql_repositories(storage: SqlStorage) -> None:
    world = InMemoryWorld(profile=a_profile(server_type=ServerType.EXCHANGE_SERVER))
    mailbox = world.add_user(
        ALICE,
        act_delivery_method=ActDeliveryMethod.SERVER_SIDE_SYNC,
        act_status=TestStatus.SUCCESS,
    )
    alice = mailbox.owner
    assert alice is not None
    records = SqlActRecords(storage, clock=world.clock)
    await records.add_sync_filter(a_sync_filter(alice, ActEntity.CONTACT))
    ada = await records.add_act_record(ActEntity.CONTACT, alice, {"last_name": "Lovelace"})

    async def sync() -> None:
        async with world.engine(act_records=records, act_mappings=storage) as running:
            (report,) = await running.sync_mailbox(mailbox.id, workloads=[Workload.ACT])
        assert report.status is RunStatus.SUCCEEDED, report.error

    await sync()
    (item,) = world.exchange.items(ALICE, ActEntity.CONTACT)
    assert item.fields["last_name"] == "Lovelace"
    (mapping,) = await storage.list_mappings(alice, ActEntity.CONTACT)
    assert mapping.is_linked
    assert (mapping.record, mapping.exchange_entry_id) == (ada.ref, item.key.item_id)
    assert await storage.load_act_state(mailbox.id, ActEntity.CONTACT) is not None

    world.clock.advance(timedelta(minutes=5))
    world.exchange.add_item(ALICE, ActEntity.CONTACT, {"last_name": "Hopper"})
    await records.update_act_record(ada.ref, {"job_title": "Analyst"}, expected_version=ada.version)
    world.clock.advance(timedelta(minutes=5))
    await sync()

    names = sorted(str(r.fields["last_name"]) for r in await records.list_act_records())
    assert names == ["Hopper", "Lovelace"], "an Outlook contact becomes a CRM record"
    synced = world.exchange.item(ALICE, ActEntity.CONTACT, item.key.item_id)
    assert synced is not None
    assert synced.fields.get("job_title") == "Analyst", "a CRM edit reaches Exchange"
    mappings = await storage.list_mappings(alice, ActEntity.CONTACT)
    assert len([m for m in mappings if m.is_linked]) == 2
