"""Whatever both sides do between cycles, two ACT cycles leave them in agreement and a third
has nothing to write (hypothesis over the engine with the in-memory adapters)."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serversync import (
    ActAction,
    ActDeliveryMethod,
    ActEntity,
    ActSettings,
    RecordRef,
    RunStatus,
    ServerType,
    SyncSettings,
    TestStatus,
    Workload,
)
from serversync.act import fingerprint
from serversync.testing import InMemoryWorld, a_profile, a_sync_filter

ALICE = "alice@contoso.example"
FIELDS = ("last_name", "job_title", "company")
WRITES = {ActAction.CREATED_IN_CRM, ActAction.CREATED_IN_EXCHANGE, ActAction.UPDATED}

operations = st.lists(
    st.one_of(
        st.tuples(st.just("crm_add"), st.sampled_from(["A", "B", "C"])),
        st.tuples(st.just("exchange_add"), st.sampled_from(["D", "E"])),
        st.tuples(
            st.sampled_from(["crm_edit", "exchange_edit"]),
            st.integers(0, 5),
            st.sampled_from(FIELDS),
            st.sampled_from(["x", "y", ""]),
        ),
        st.tuples(st.sampled_from(["crm_delete", "exchange_delete"]), st.integers(0, 5)),
        st.tuples(st.just("sync"), st.integers(1, 90)),
    ),
    max_size=14,
)


def _apply(world: InMemoryWorld, owner: RecordRef, op: tuple[Any, ...]) -> None:
    records = world.storage.act_records(ActEntity.CONTACT)
    items = world.exchange.items(ALICE, ActEntity.CONTACT)
    kind = op[0]
    if kind == "crm_add":
        world.storage.add_act_record(ActEntity.CONTACT, owner, {"last_name": op[1]})
    elif kind == "exchange_add":
        world.exchange.add_item(ALICE, ActEntity.CONTACT, {"last_name": op[1]})
    elif kind == "crm_edit" and records:
        world.storage.edit_act_record(records[op[1] % len(records)].ref, {op[2]: op[3]})
    elif kind == "exchange_edit" and items:
        item = items[op[1] % len(items)]
        world.exchange.edit_item(ALICE, ActEntity.CONTACT, item.key.item_id, {op[2]: op[3]})
    elif kind == "crm_delete" and records:
        asyncio.run(world.storage.delete_act_record(records[op[1] % len(records)].ref))
    elif kind == "exchange_delete" and items:
        world.exchange.remove_item(ALICE, ActEntity.CONTACT, items[op[1] % len(items)].key.item_id)
    world.clock.advance(1)


async def _cycle(world: InMemoryWorld, mailbox_id: Any) -> list[ActAction]:
    world.clock.advance(60)
    async with world.engine() as engine:
        (report,) = await engine.sync_mailbox(mailbox_id, workloads=[Workload.ACT])
    assert report.status is RunStatus.SUCCEEDED, report.error
    return [o.action for o in report.act]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations)
def test_both_sides_converge_and_then_stay_quiet(ops: list[tuple[Any, ...]]) -> None:
    world = InMemoryWorld(
        profile=a_profile(server_type=ServerType.EXCHANGE_SERVER),
        settings=SyncSettings(act=ActSettings()),
    )
    mailbox = world.add_user(
        ALICE, act_delivery_method=ActDeliveryMethod.SERVER_SIDE_SYNC, act_status=TestStatus.SUCCESS
    )
    assert mailbox.owner is not None
    world.storage.add_sync_filter(a_sync_filter(mailbox.owner, ActEntity.CONTACT))

    for op in ops:
        if op[0] == "sync":
            asyncio.run(_cycle(world, mailbox.id))
        else:
            _apply(world, mailbox.owner, op)
    asyncio.run(_cycle(world, mailbox.id))
    asyncio.run(_cycle(world, mailbox.id))
    quiet = asyncio.run(_cycle(world, mailbox.id))
    assert not WRITES & set(quiet), f"a settled pair was written again: {quiet}"

    linked = [m for m in world.storage.mappings() if m.is_linked]
    for mapping in linked:
        record = world.storage.act_record(mapping.record)
        item = world.exchange.item(ALICE, ActEntity.CONTACT, mapping.exchange_entry_id)
        assert record is not None
        assert item is not None
        for field in FIELDS:
            assert fingerprint(record.fields.get(field)) == fingerprint(item.fields.get(field)), (
                field,
                record.fields,
                item.fields,
            )
    # Every record in the filter and every item is linked, unless a delete ended its link.
    ended = {m.record for m in world.storage.mappings() if not m.is_linked}
    for record in world.storage.act_records(ActEntity.CONTACT):
        assert record.ref in {m.record for m in linked} or record.ref in ended
    linked_items = {m.exchange_entry_id for m in linked}
    ended_items = {m.exchange_entry_id for m in world.storage.mappings() if not m.is_linked}
    for item in world.exchange.items(ALICE, ActEntity.CONTACT):
        assert item.key.item_id in linked_items | ended_items
