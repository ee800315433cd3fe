"""A workload run's bookkeeping in fewer store calls, and without them.

At the end: with a store offering ``finish_workload_run`` the new state is saved as the
leases are given back, in one call. At the start of an incoming run: with a store offering
``load_incoming_run`` the folder rules, due quarantine and cursors are one read. A store
without them gets the separate calls, with the same outcome."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from serversync import IncomingFilteringMethod, Mailbox, RunStatus, Workload
from serversync.model import ProfileId
from serversync.ports import IncomingRunRepository, WorkloadRunEndRepository
from serversync.testing import InMemoryStorage, InMemoryWorld
from serversync.testing import an_email as email

ALICE = "alice@contoso.example"


class _Calls:
    """The world's store, counting calls; ``hide`` names methods it does not offer."""

    def __init__(self, inner: InMemoryStorage, *, hide: frozenset[str] = frozenset()) -> None:
        self.inner = inner
        self.hide = hide
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        if name in self.hide:
            raise AttributeError(name)
        attribute = getattr(self.inner, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return counted


async def _run(store: _Calls, world: InMemoryWorld, alice: Mailbox) -> None:
    async with world.engine(repositories=store) as engine:
        report = await engine.run_once()
    assert [r.status for r in report.mailboxes] == [RunStatus.SUCCEEDED] * 2, report
    now = world.clock.now()
    for workload in (Workload.INCOMING, Workload.OUTGOING):
        state = await world.storage.get_workload_state(alice.id, workload)
        assert state is not None, workload
        assert state.last_successful_sync_completed_on == now
        assert state.next_run_at == now + timedelta(minutes=5)
        holder = await world.storage.get_lease_holder(f"{alice.id}/{workload.value}", now=now)
        assert holder is None, f"the {workload.value} lease is given back"
    profile = await world.storage.get_profile(alice.profile_id or ProfileId("none"))
    assert profile is not None
    for slot in range(profile.max_concurrent_connections):
        key = f"profile:{profile.id}/connection:{slot}"
        assert await world.storage.get_lease_holder(key, now=now) is None, "slots given back"


def _world() -> tuple[InMemoryWorld, Mailbox]:
    world = InMemoryWorld()
    alice = world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    world.deliver(ALICE, email(to=[ALICE], subject="hello"))
    return world, alice


async def test_a_run_saves_its_state_with_the_leases_given_back_in_one_call() -> None:
    world, alice = _world()
    store = _Calls(world.storage)
    assert isinstance(store, WorkloadRunEndRepository)
    await _run(store, world, alice)
    assert store.calls["finish_workload_run"] == 2, store.calls
    assert store.calls["release_leases"] == 0, store.calls


async def test_a_store_without_the_combined_end_gets_the_separate_calls() -> None:
    world, alice = _world()
    store = _Calls(world.storage, hide=frozenset({"finish_workload_run"}))
    assert not isinstance(store, WorkloadRunEndRepository)
    await _run(store, world, alice)
    assert store.calls["finish_workload_run"] == 0, store.calls
    assert store.calls["release_leases"] == 2, store.calls


_START_READS = ("list_tracking_folders", "due_quarantine", "load_checkpoint")


async def _two_runs(store: _Calls, world: InMemoryWorld, alice: Mailbox) -> list[list[str | None]]:
    """The subjects stored by a run, then by a second one after new mail arrived."""
    subjects: list[list[str | None]] = []
    async with world.engine(repositories=store) as engine:
        for subject in ("second", "third"):
            report = await engine.sync_mailbox(alice.id, workloads=[Workload.INCOMING], force=True)
            subjects.append([i.subject for r in report for i in r.items])
            world.deliver(ALICE, email(to=[ALICE], subject=subject))
    return subjects


async def test_an_incoming_run_reads_its_rules_quarantine_and_cursors_in_one_call() -> None:
    world, alice = _world()
    store = _Calls(world.storage)
    assert isinstance(store, IncomingRunRepository)
    assert await _two_runs(store, world, alice) == [["hello"], ["second"]]
    assert store.calls["load_incoming_run"] == 2, store.calls
    assert not any(store.calls[name] for name in _START_READS), store.calls


async def test_a_store_without_the_combined_start_gets_the_separate_reads() -> None:
    world, alice = _world()
    store = _Calls(world.storage, hide=frozenset({"load_incoming_run"}))
    assert not isinstance(store, IncomingRunRepository)
    assert await _two_runs(store, world, alice) == [["hello"], ["second"]]
    assert [store.calls[name] for name in _START_READS] == [2, 2, 2], store.calls
