"""The end of a workload run: with a store offering ``finish_workload_run`` the new state is
saved as the leases are given back, in one call; a store without it gets the separate calls,
with the same state saved and the same leases freed."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from serversync import IncomingFilteringMethod, Mailbox, RunStatus, Workload
from serversync.model import ProfileId
from serversync.ports import WorkloadRunEndRepository
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
