"""Appointment, contact and task sync through SyncEngine with the SQL ACT repositories:
records and filters in SqlActRecords, mappings and sync states in SqlStorage, Exchange in
memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from serversync import ActDeliveryMethod, ActEntity, RunStatus, ServerType, TestStatus, Workload
from serversync.sql import SqlActRecords, SqlStorage
from serversync.testing import InMemoryWorld, a_profile, a_sync_filter
from tests.conftest import Postgres

pytestmark = pytest.mark.integration

ALICE = "alice@contoso.example"


@pytest.fixture(params=["sqlite", "postgresql"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStorage]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'act.db'}"
    else:
        postgres: Postgres = request.getfixturevalue("postgres")
        url = postgres.fresh_database()
    async with await SqlStorage.open(url, upgrade=request.param == "sqlite") as opened:
        yield opened


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
