"""Lease renewal: a long workload keeps its mailbox lease; one whose lease another engine
took over stops at the next message or email, keeps its progress and leaves the state alone.

The fake clock only moves when a test moves it; the engine looks at it every
``lease_check_interval`` of real time (5 ms here).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import attrs

from serversync import (
    EmailStatus,
    ImapCheckpoint,
    IncomingFilteringMethod,
    Mailbox,
    RunReport,
    RunStatus,
    Schedule,
    SkipReason,
    StorageConflictError,
    SyncEngine,
    SyncSettings,
    Workload,
)
from serversync.model import INBOX, MailboxId, WorkloadState
from serversync.testing import (
    InMemoryStorage,
    InMemoryWorld,
    a_contact,
    a_pending_email,
    a_profile,
)
from serversync.testing import an_email as email

from .engine_support import Gate, SlowServer, wait_for

ALICE = "alice@contoso.example"
CUSTOMER = "jane@fabrikam.example"
LEASE = timedelta(seconds=60)  # renewed every 20 s
SETTINGS = SyncSettings(
    schedule=Schedule(lease_duration=LEASE, lease_check_interval=timedelta(milliseconds=5))
)


def _world(messages: int = 0, *, batch: int = 100) -> tuple[InMemoryWorld, Mailbox, SlowServer]:
    limits = attrs.evolve(SETTINGS.limits, incoming_batch_size=batch)
    world = InMemoryWorld(settings=attrs.evolve(SETTINGS, limits=limits))
    alice = world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    for n in range(messages):
        world.deliver(ALICE, email(to=[ALICE], subject=f"message {n}"))
    _RECORDERS[world] = _LeaseRecorder(world.storage)
    return world, alice, SlowServer(world)


class _LeaseRecorder:
    """The world's store, noting the key of every lease acquisition or renewal."""

    def __init__(self, inner: InMemoryStorage) -> None:
        self.inner = inner
        self.keys: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def try_acquire_lease(
        self, key: str, *, owner: str, now: datetime, until: datetime
    ) -> bool:
        self.keys.append(key)
        return await self.inner.try_acquire_lease(key, owner=owner, now=now, until=until)

    async def acquire_workload_lease(
        self,
        mailbox_id: MailboxId,
        workload: Workload,
        *,
        key: str,
        owner: str,
        now: datetime,
        until: datetime,
    ) -> tuple[bool, WorkloadState | None]:
        self.keys.append(key)
        return await self.inner.acquire_workload_lease(
            mailbox_id, workload, key=key, owner=owner, now=now, until=until
        )


_RECORDERS: dict[InMemoryWorld, _LeaseRecorder] = {}


def _engine(world: InMemoryWorld, **overrides: Any) -> SyncEngine:
    return world.engine(repositories=_RECORDERS[world], **overrides)


def _lease_calls(world: InMemoryWorld) -> int:
    """Acquisitions and renewals of mailbox leases (not of the profile's connection slots,
    which a running workload holds too)."""
    return sum(1 for key in _RECORDERS[world].keys if not key.startswith("profile:"))


async def _steal(world: InMemoryWorld, key: str) -> bool:
    """Another engine takes the lease, as it may once the lease expired."""
    now = world.clock.now()
    return await _RECORDERS[world].try_acquire_lease(
        key, owner="engine-b", now=now, until=now + timedelta(minutes=10)
    )


async def test_a_long_workload_renews_its_lease_and_keeps_it() -> None:
    world, alice, slow = _world(messages=1)
    slow.fetch_gate = gate = Gate()
    key = f"{alice.id}/incoming"
    async with _engine(world, engine_id="engine-a", transports=slow.transports()) as engine:
        run = asyncio.create_task(engine.run_once(workloads=[Workload.INCOMING]))
        await gate.reached.wait()
        assert _lease_calls(world) == 1, "acquired once, not renewed yet"
        for seconds, renewals in ((15, 0), (30, 1), (45, 1), (60, 2), (75, 2), (90, 3)):
            world.clock.advance(timedelta(seconds=15))
            await wait_for(lambda n=renewals: _lease_calls(world) == 1 + n)  # type: ignore[misc]
            holder = await world.storage.get_lease_holder(key, now=world.clock.now())
            assert holder == "engine-a", f"still held after {seconds} s"
        # 90 s in: the first lease (60 s) would have expired; the renewed one has not.
        assert not await _steal(world, key)
        gate.opened.set()
        report = await run
    (only,) = report.mailboxes
    assert only.status is RunStatus.SUCCEEDED
    assert [i.subject for i in only.items] == ["message 0"]
    assert await world.storage.get_lease_holder(key, now=world.clock.now()) is None, "released"
    state = await world.storage.get_workload_state(alice.id, Workload.INCOMING)
    assert state is not None
    assert state.next_run_at == world.clock.now() + timedelta(minutes=5)


async def test_a_short_workload_does_not_renew_and_stops_the_renewal_when_done() -> None:
    world, _, slow = _world(messages=2)
    async with _engine(world, transports=slow.transports()) as engine:
        report = await engine.run_once(workloads=[Workload.INCOMING])
        assert report.mailboxes[0].status is RunStatus.SUCCEEDED
        world.clock.advance(timedelta(minutes=3))
        await asyncio.sleep(0.03)  # several looks at the clock, had anything kept looking
    assert _lease_calls(world) == 1
    current = asyncio.current_task()
    assert [t for t in asyncio.all_tasks() if t is not current] == []


async def test_an_incoming_workload_that_lost_its_lease_stops_at_the_next_message() -> None:
    # Header batches of two: the first one's tracked messages are fetched and stored
    # together, the messages under way when the lease is lost.
    world, alice, slow = _world(messages=3, batch=2)
    slow.fetch_gate = gate = Gate()
    key = f"{alice.id}/incoming"
    async with _engine(world, engine_id="engine-a", transports=slow.transports()) as engine:
        run = asyncio.create_task(engine.run_once(workloads=[Workload.INCOMING]))
        await gate.reached.wait()
        # The engine stalled past its lease; another engine took the mailbox over.
        world.clock.advance(LEASE + timedelta(seconds=1))
        assert await _steal(world, key)
        await wait_for(lambda: _lease_calls(world) == 3)  # the renewal attempt was refused
        gate.opened.set()
        report: RunReport = await run

    (only,) = report.mailboxes
    assert only.status is RunStatus.FAILED
    assert only.error is not None
    assert only.error.error_type == "LeaseLostError"
    assert "another engine took the lease over" in only.error.message
    under_way = ["message 0", "message 1"]
    assert [i.subject for i in only.items] == under_way, "the messages under way finished"
    assert [a.subject for a in world.storage.activities()] == under_way
    checkpoint = await world.storage.load_checkpoint(alice.id, INBOX)
    assert isinstance(checkpoint, ImapCheckpoint)
    assert checkpoint.last_uid == 2, "the progress made is recorded"
    assert await world.storage.get_workload_state(alice.id, Workload.INCOMING) is None, (
        "no state written over the new owner's"
    )
    assert await world.storage.get_lease_holder(key, now=world.clock.now()) == "engine-b"

    # The new owner goes on from the checkpoint: nothing lost, nothing twice.
    async with _engine(world, engine_id="engine-b") as other:
        after = await other.run_once(workloads=[Workload.INCOMING])
    assert [i.subject for i in after.items()] == ["message 2"]
    assert sorted(a.subject for a in world.storage.activities()) == [
        "message 0",
        "message 1",
        "message 2",
    ]


async def test_an_outgoing_workload_that_lost_its_lease_sends_no_further_email() -> None:
    world, alice, slow = _world()
    world.add_record(a_contact(CUSTOMER))
    emails = [
        a_pending_email(sender_mailbox=alice, to=[CUSTOMER], subject=f"email {n}") for n in range(3)
    ]
    for pending in emails:
        world.storage.put_activity(pending)
    slow.send_gate = gate = Gate()
    key = f"{alice.id}/outgoing"
    async with _engine(world, engine_id="engine-a", transports=slow.transports()) as engine:
        run = asyncio.create_task(engine.run_once(workloads=[Workload.OUTGOING]))
        await gate.reached.wait()
        world.clock.advance(LEASE + timedelta(seconds=1))
        assert await _steal(world, key)
        await wait_for(lambda: _lease_calls(world) == 3)
        gate.opened.set()
        report = await run

    (only,) = report.mailboxes
    assert only.status is RunStatus.FAILED
    assert only.error is not None
    assert only.error.error_type == "LeaseLostError"
    assert [s.status for s in only.sends] == [EmailStatus.SENT], "the email under way was sent"
    assert len(world.server.outbox) == 1
    statuses = []
    for pending in emails:
        stored = await world.storage.get_activity(pending.id)
        assert stored is not None
        statuses.append((stored.status, stored.delivery_attempts))
    assert statuses == [
        (EmailStatus.SENT, 1),
        (EmailStatus.PENDING_SEND, 0),
        (EmailStatus.PENDING_SEND, 0),
    ]
    assert await world.storage.get_workload_state(alice.id, Workload.OUTGOING) is None


async def test_a_lease_that_runs_out_while_the_store_refuses_renewals_stops_the_workload() -> None:
    world, alice, slow = _world(messages=3, batch=2)
    slow.fetch_gate = gate = Gate()
    # The mailbox lease and the connection slot are taken; every renewal after that fails.
    world.storage.faults.fail_next(
        "try_acquire_lease", StorageConflictError("deadlock"), times=10_000, skip=2
    )
    async with _engine(world, engine_id="engine-a", transports=slow.transports()) as engine:
        run = asyncio.create_task(engine.run_once(workloads=[Workload.INCOMING]))
        await gate.reached.wait()
        world.clock.advance(timedelta(seconds=25))
        await wait_for(lambda: _lease_calls(world) >= 3)  # failing renewals are retried
        assert not run.done(), "a failed renewal alone does not stop the workload"
        world.clock.advance(timedelta(seconds=36))  # past the lease's end
        calls = _lease_calls(world)
        await wait_for(lambda: _lease_calls(world) > calls)
        gate.opened.set()
        report = await run
    (only,) = report.mailboxes
    assert only.status is RunStatus.FAILED
    assert only.error is not None
    assert "ran out" in only.error.message
    assert [a.subject for a in world.storage.activities()] == ["message 0", "message 1"]
    assert await world.storage.get_workload_state(alice.id, Workload.INCOMING) is None


async def test_a_profile_connection_limit_holds_across_engines_sharing_a_store() -> None:
    world = InMemoryWorld(settings=SETTINGS, profile=a_profile(max_concurrent_connections=1))
    first = world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    second = world.add_user(CUSTOMER, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    world.deliver(ALICE, email(to=[ALICE], subject="for alice"))
    _RECORDERS[world] = _LeaseRecorder(world.storage)
    slow = SlowServer(world)
    slow.fetch_gate = gate = Gate()
    async with _engine(world, engine_id="engine-a", transports=slow.transports()) as a:
        held = asyncio.create_task(a.sync_mailbox(first.id, workloads=[Workload.INCOMING]))
        await gate.reached.wait()  # engine-a is inside the profile's only connection
        async with _engine(world, engine_id="engine-b") as b:
            (blocked,) = await b.sync_mailbox(second.id, workloads=[Workload.INCOMING])
        gate.opened.set()
        (done,) = await held
    assert blocked.status is RunStatus.SKIPPED
    assert blocked.skip_reason is SkipReason.PROFILE_CONNECTIONS_IN_USE
    assert done.status is RunStatus.SUCCEEDED
    async with _engine(world, engine_id="engine-b") as b:
        (later,) = await b.sync_mailbox(second.id, workloads=[Workload.INCOMING])
    assert later.status is RunStatus.SUCCEEDED, "the slot is free once engine-a is done"
