"""Stopping an engine (SIGTERM in the CLI): running workloads finish the item in hand, record
their progress and release their leases; nothing is lost or stored twice."""

from __future__ import annotations

import asyncio

from serversync import (
    BaseSyncObserver,
    IncomingFilteringMethod,
    ItemOutcome,
    Limits,
    OutcomeKind,
    RunStatus,
    SkipReason,
    SyncEngine,
    SyncSettings,
    Workload,
)
from serversync.testing import InMemoryWorld, an_email

ALICE = "alice@contoso.example"


class StopAfterFirstItem(BaseSyncObserver):
    """Asks the engine to stop as soon as one message was decided."""

    def __init__(self) -> None:
        self.engine: SyncEngine | None = None
        self.items: list[ItemOutcome] = []

    def item_processed(self, outcome: ItemOutcome) -> None:
        self.items.append(outcome)
        assert self.engine is not None
        self.engine.request_stop()


def _world_with_mail(count: int, *, batch: int = 100) -> InMemoryWorld:
    world = InMemoryWorld(settings=SyncSettings(limits=Limits(incoming_batch_size=batch)))
    world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    for n in range(count):
        world.deliver(
            ALICE, an_email(sender="jane@fabrikam.example", to=[ALICE], subject=f"order {n}")
        )
    return world


async def test_a_stop_ends_the_workload_after_the_items_in_hand() -> None:
    # Two header batches: the first one's tracked messages are stored together (the items
    # in hand when the stop comes, at their first outcome); the second is not started.
    world = _world_with_mail(5, batch=3)
    observer = StopAfterFirstItem()
    engine = world.engine(observer=observer, engine_id="stopping")
    observer.engine = engine
    async with engine:
        report = await engine.run_once(workloads=[Workload.INCOMING])
    (run,) = report.mailboxes
    assert run.status is RunStatus.STOPPED
    assert run.error is None, "a requested stop is not a failure"
    assert [i.kind for i in run.items] == [OutcomeKind.TRACKED] * 3, "exactly the items in hand"
    assert len(world.storage.activities()) == 3
    lease = f"{run.mailbox_id}/incoming"
    assert await world.storage.get_lease_holder(lease, now=world.clock.now()) is None, (
        "the lease is released"
    )
    state = await world.storage.get_workload_state(run.mailbox_id, Workload.INCOMING)
    assert state is not None
    assert state.consecutive_failures == 0, "a stop does not count as a failure"
    assert state.next_run_at is not None
    assert state.next_run_at <= world.clock.now(), "the workload is due again at once"

    async with world.engine(engine_id="next") as successor:
        again = await successor.run_once(workloads=[Workload.INCOMING])
    (rest,) = again.mailboxes
    assert rest.status is RunStatus.SUCCEEDED
    assert len(rest.items) == 2, "the next engine goes on where the stopped one ended"
    subjects = sorted(a.subject for a in world.storage.activities())
    assert subjects == [f"order {n}" for n in range(5)], "every message once"


async def test_a_stopping_engine_starts_no_new_workload() -> None:
    world = _world_with_mail(1)
    async with world.engine() as engine:
        engine.request_stop()
        assert engine.stopping
        report = await engine.run_once()
    assert {r.skip_reason for r in report.mailboxes} == {SkipReason.ENGINE_STOPPING}
    assert world.storage.activities() == []


async def test_run_forever_returns_once_its_stop_event_is_set() -> None:
    world = _world_with_mail(2)
    stop = asyncio.Event()
    async with world.engine() as engine:
        task = asyncio.create_task(engine.run_forever(stop=stop))
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, timeout=5)
        assert engine.stopping
    assert len(world.storage.activities()) == 2
