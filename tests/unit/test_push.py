"""Push hints in run_forever, with the in-memory server's watches: a push runs the mailbox's
incoming workload at once, a lost watch comes back and syncs, a failing watch never disables
the mailbox, and watches are shared out between engines and bounded per profile."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta

import attrs
import pytest

from serversync import (
    AuthenticationError,
    ConnectionFailedError,
    Credentials,
    EmailServerProfile,
    ErrorRecord,
    IncomingFilteringMethod,
    IncomingMailSession,
    Mailbox,
    MailboxId,
    PushHint,
    PushSettings,
    Schedule,
    ServerType,
    SyncEngine,
    SyncSettings,
    SystemClock,
    Transports,
    Workload,
)
from serversync.testing import InMemoryIncomingTransport, InMemoryWorld, a_profile, an_email
from tests.unit.engine_support import Gate, Recorder, SlowServer, wait_for

ALICE = "alice@contoso.example"
BOB = "bob@contoso.example"
CAROL = "carol@contoso.example"

# Polls far apart: anything stored within the test's few seconds came through a push.
_SCHEDULE = Schedule(
    incoming_interval=timedelta(hours=1),
    outgoing_interval=timedelta(hours=1),
    idle_sleep=timedelta(hours=1),
    lease_duration=timedelta(seconds=3),
)
_PUSH = PushSettings(reconnect_min=timedelta(milliseconds=20), reconnect_max=timedelta(seconds=1))


def _world(*users: str, server_push: bool = True, **settings: object) -> InMemoryWorld:
    fields: dict[str, object] = {"schedule": _SCHEDULE, "push": _PUSH}
    fields.update(settings)
    world = InMemoryWorld(settings=SyncSettings(**fields))  # type: ignore[arg-type]
    world.server.push = server_push
    for user in users or (ALICE,):
        world.add_user(user, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    return world


@asynccontextmanager
async def _running(world: InMemoryWorld, **overrides: object) -> AsyncIterator[SyncEngine]:
    """An engine on the real clock in run_forever, stopped at the end of the block."""
    stop = asyncio.Event()
    parts: dict[str, object] = {"clock": SystemClock()}
    parts.update(overrides)
    async with world.engine(**parts) as engine:
        task = asyncio.create_task(engine.run_forever(stop=stop))
        try:
            yield engine
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)


def _mail(subject: str) -> bytes:
    return an_email(sender="jane@fabrikam.example", to=[ALICE], subject=subject)


def _subjects(world: InMemoryWorld) -> list[str]:
    return sorted(a.subject for a in world.storage.activities())


async def test_a_push_runs_the_incoming_workload_long_before_its_interval() -> None:
    world = _world()
    async with _running(world):
        await wait_for(lambda: world.server.watching(ALICE) == 1)
        world.deliver(ALICE, _mail("pushed"))
        await wait_for(lambda: _subjects(world) == ["pushed"], seconds=2)
    assert world.server.watching(ALICE) == 0, "the watch ends with run_forever"
    lease = f"mailbox:{ALICE}/incoming/push"
    assert await world.storage.get_lease_holder(lease, now=SystemClock().now()) is None


async def test_without_push_the_mailbox_is_only_polled() -> None:
    world = _world(server_push=False)
    async with _running(world):
        await asyncio.sleep(0.3)
        world.deliver(ALICE, _mail("waits for the poll"))
        await asyncio.sleep(0.5)
        assert _subjects(world) == [], "nothing wakes the mailbox before its interval"
        assert world.server.watching(ALICE) == 0


async def test_push_can_be_turned_off() -> None:
    world = _world(push=attrs.evolve(_PUSH, enabled=False))
    async with _running(world):
        await asyncio.sleep(0.3)
        assert world.server.watching(ALICE) == 0


async def test_a_dropped_watch_reconnects_and_syncs_what_arrived_meanwhile() -> None:
    world = _world()
    async with _running(world):
        await wait_for(lambda: world.server.watching(ALICE) == 1)
        world.server.drop_watches(ALICE)
        # Delivered while the watch is going down: its own hint is lost with the connection.
        world.deliver(ALICE, _mail("during the outage"))
        await wait_for(lambda: _subjects(world) == ["during the outage"], seconds=2)
        await wait_for(lambda: world.server.watching(ALICE) == 1)
        world.deliver(ALICE, _mail("after the reconnect"))
        await wait_for(lambda: len(_subjects(world)) == 2, seconds=2)


async def test_watch_failures_retry_and_never_touch_the_mailbox() -> None:
    world = _world()
    world.server.faults.fail_next("watch", ConnectionFailedError("connection refused"), times=3)
    async with _running(world):
        await wait_for(lambda: world.server.watching(ALICE) == 1, seconds=3)
        world.deliver(ALICE, _mail("pushed"))
        await wait_for(lambda: _subjects(world) == ["pushed"], seconds=2)
    state = await world.storage.get_workload_state(MailboxId(f"mailbox:{ALICE}"), Workload.INCOMING)
    assert state is not None
    assert state.consecutive_failures == 0


async def test_a_refused_login_stops_the_watch_but_not_the_mailbox() -> None:
    world = _world()
    world.server.faults.fail_next("watch", AuthenticationError("login refused"))
    async with _running(world):
        await asyncio.sleep(0.5)
        assert world.server.watching(ALICE) == 0, "no second try"
        mailbox = await world.storage.get_mailbox(MailboxId(f"mailbox:{ALICE}"))
        assert mailbox is not None
        assert mailbox.enabled_for(Workload.INCOMING), "the watch does not disable the mailbox"
        world.deliver(ALICE, _mail("polled"))
    async with world.engine() as engine:
        await engine.sync_mailbox(mailbox.id)
    assert _subjects(world) == ["polled"]


async def test_a_disabled_mailbox_is_no_longer_watched() -> None:
    schedule = attrs.evolve(_SCHEDULE, idle_sleep=timedelta(milliseconds=100))
    world = _world(schedule=schedule)
    async with _running(world):
        await wait_for(lambda: world.server.watching(ALICE) == 1)
        error = ErrorRecord.from_exception(AuthenticationError("revoked"))
        await world.storage.disable_workload(
            MailboxId(f"mailbox:{ALICE}"), Workload.INCOMING, error=error, at=SystemClock().now()
        )
        await wait_for(lambda: world.server.watching(ALICE) == 0)


async def test_one_engine_watches_a_mailbox_and_another_takes_over_when_it_stops() -> None:
    # Engines look at the watches after each run: run (and skip) often.
    world = _world(schedule=attrs.evolve(_SCHEDULE, idle_sleep=timedelta(milliseconds=100)))
    clock = SystemClock()
    lease = f"mailbox:{ALICE}/incoming/push"
    first_stop = asyncio.Event()
    async with world.engine(clock=clock, engine_id="first") as first:
        first_task = asyncio.create_task(first.run_forever(stop=first_stop))
        await wait_for(lambda: world.server.watching(ALICE) == 1)
        async with _running(world, engine_id="second"):
            await asyncio.sleep(0.2)
            assert world.server.watching(ALICE) == 1, "one watch per mailbox"
            assert await world.storage.get_lease_holder(lease, now=clock.now()) == "first"
            first_stop.set()
            await asyncio.wait_for(first_task, 5)
            # The second engine tries again a third of a lease later (1 s here).
            await wait_for(lambda: world.server.watching(ALICE) == 1, seconds=3)
            assert await world.storage.get_lease_holder(lease, now=clock.now()) == "second"
            world.deliver(ALICE, _mail("pushed to the second"))
            await wait_for(lambda: _subjects(world) == ["pushed to the second"], seconds=2)


@pytest.mark.parametrize(
    ("connections", "max_watchers", "watched"),
    [(4, 100, 2), (1, 100, 0), (10, 2, 2)],
)
async def test_watches_are_bounded_per_profile_and_per_engine(
    connections: int, max_watchers: int, watched: int
) -> None:
    world = InMemoryWorld(
        profile=a_profile(max_concurrent_connections=connections),
        settings=SyncSettings(
            schedule=_SCHEDULE, push=attrs.evolve(_PUSH, max_watchers=max_watchers)
        ),
    )
    world.server.push = True
    users = (ALICE, BOB, CAROL)
    for user in users:
        world.add_user(user, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    async with _running(world) as engine:
        await asyncio.sleep(0.3)
        assert sum(world.server.watching(u) for u in users) == watched
        # Polling still has its slots: a forced sync of every mailbox runs.
        for mailbox in await world.storage.list_mailboxes():
            (report,) = await engine.sync_mailbox(mailbox.id, workloads=[Workload.INCOMING])
            assert report.skip_reason is None, report


async def test_a_push_does_not_cut_a_failure_back_off_short() -> None:
    world = _world()
    runs = Recorder()
    # The cycle the watch's first hint starts fails: the workload backs off for 5 minutes.
    world.server.faults.fail_next("list_new", ConnectionFailedError("connection reset"))
    async with _running(world, observer=runs):
        await wait_for(lambda: world.server.watching(ALICE) == 1)
        await wait_for(lambda: any(r.error is not None for r in runs.runs))
        ran = [r for r in runs.runs if r.workload is Workload.INCOMING and r.skip_reason is None]
        world.deliver(ALICE, _mail("waits for the back-off"))
        await asyncio.sleep(0.5)
        again = [r for r in runs.runs if r.workload is Workload.INCOMING and r.skip_reason is None]
        assert again == ran, "no cycle during the back-off"
        assert _subjects(world) == []


class _GatedWithPush:
    """The slow server's incoming transport (fetches wait for a gate), with the in-memory
    server's push watches."""

    def __init__(self, slow: SlowServer) -> None:
        self._opener = slow.transports().incoming[ServerType.IMAP_SMTP]
        self._watcher = InMemoryIncomingTransport(slow.world.server)

    def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AbstractAsyncContextManager[IncomingMailSession]:
        return self._opener.open(mailbox, profile, credentials)

    async def watch(
        self,
        mailbox: Mailbox,
        profile: EmailServerProfile,
        credentials: Credentials | None,
        *,
        hint: Callable[[PushHint], None],
        refresh_every: timedelta,
    ) -> None:
        await self._watcher.watch(
            mailbox, profile, credentials, hint=hint, refresh_every=refresh_every
        )


async def test_a_push_during_a_cycle_runs_the_mailbox_again_after_it() -> None:
    world = _world()
    slow = SlowServer(world)
    transports = Transports.for_all(
        incoming=_GatedWithPush(slow), outgoing=slow.transports().outgoing[ServerType.IMAP_SMTP]
    )
    async with _running(world, transports=transports):
        await wait_for(lambda: world.server.watching(ALICE) == 1)
        await asyncio.sleep(0.2)  # the cycle the watch's first hint asked for
        gate = slow.fetch_gate = Gate()
        world.deliver(ALICE, _mail("first"))
        await wait_for(gate.reached.is_set)  # the cycle listed "first" and fetches it
        world.deliver(ALICE, _mail("second"))  # too late for that cycle's listing
        gate.opened.set()
        await wait_for(lambda: _subjects(world) == ["first", "second"], seconds=2)


@pytest.mark.parametrize(
    "fields",
    [
        {"refresh_every": timedelta(minutes=30)},
        {"refresh_every": timedelta(0)},
        {"reconnect_min": timedelta(minutes=10)},
        {"profile_connection_share": 1.0},
        {"max_watchers": -1},
    ],
)
def test_inconsistent_push_settings_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - attrs validators raise plain ValueError
        PushSettings(**fields)  # type: ignore[arg-type]
