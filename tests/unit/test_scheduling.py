"""Dynamics' cadence (spec §3.4, behaviour 7 of §12) and Process Email From, with a fake
clock and the in-memory world."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from serversync import (
    ActDeliveryMethod,
    EmailStatus,
    IncomingDeliveryMethod,
    IncomingFilteringMethod,
    Mailbox,
    MailboxId,
    MailboxRunReport,
    OutcomeKind,
    RunStatus,
    Schedule,
    SkipReason,
    SyncSettings,
    Workload,
)
from serversync.planning import cycle_interval, next_run_after_success
from serversync.testing import InMemoryWorld, a_contact, a_mailbox, a_pending_email, a_profile
from serversync.testing import an_email as email

from .engine_support import Recorder, SlowServer

ALICE = "alice@contoso.example"
CUSTOMER = "jane@fabrikam.example"
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


# -- behaviour 7: incoming, measured from the end of the cycle -------------------------------


async def test_incoming_is_postponed_five_minutes_from_the_end_of_a_long_cycle() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    world.deliver(ALICE, email(to=[ALICE], subject="first"))
    slow = SlowServer(world, list_delay=timedelta(minutes=3))
    start = world.clock.now()

    async with world.engine(transports=slow.transports()) as engine:
        first = await engine.run_once(workloads=[Workload.INCOMING])
        (report,) = first.mailboxes
        assert report.status is RunStatus.SUCCEEDED
        assert report.finished_at == start + timedelta(minutes=3), "the cycle took 3 minutes"
        state = await world.storage.get_workload_state(alice.id, Workload.INCOMING)
        assert state is not None
        assert state.next_run_at == start + timedelta(minutes=8), "5 minutes after the end"

        world.clock.advance(timedelta(minutes=4))  # 7 minutes after the start
        too_early = await engine.run_once(workloads=[Workload.INCOMING])
        assert too_early.mailboxes[0].skip_reason is SkipReason.NOT_DUE

        world.clock.advance(timedelta(minutes=1))  # 5 minutes after the end
        world.deliver(ALICE, email(to=[ALICE], subject="second"))
        due = await engine.run_once(workloads=[Workload.INCOMING])
    assert due.mailboxes[0].status is RunStatus.SUCCEEDED
    assert [i.subject for i in due.items()] == ["second"]


async def test_a_short_cycle_comes_back_five_minutes_later() -> None:
    world = InMemoryWorld()
    world.add_user(ALICE)
    async with world.engine() as engine:
        first = await engine.run_once(workloads=[Workload.INCOMING])
        world.clock.advance(timedelta(minutes=4, seconds=59))
        early = await engine.run_once(workloads=[Workload.INCOMING])
        world.clock.advance(timedelta(seconds=1))
        due = await engine.run_once(workloads=[Workload.INCOMING])
    assert first.mailboxes[0].status is RunStatus.SUCCEEDED
    assert early.mailboxes[0].skip_reason is SkipReason.NOT_DUE
    assert due.mailboxes[0].status is RunStatus.SUCCEEDED


async def test_intervals_can_be_set_in_seconds() -> None:
    schedule = Schedule(incoming_interval=timedelta(seconds=20))
    world = InMemoryWorld(settings=SyncSettings(schedule=schedule))
    alice = world.add_user(ALICE)
    async with world.engine() as engine:
        await engine.run_once(workloads=[Workload.INCOMING])
        state = await world.storage.get_workload_state(alice.id, Workload.INCOMING)
        assert state is not None
        assert state.next_run_at == world.clock.now() + timedelta(seconds=20)
        world.clock.advance(timedelta(seconds=20))
        again = await engine.run_once(workloads=[Workload.INCOMING])
    assert again.mailboxes[0].status is RunStatus.SUCCEEDED


# -- behaviour 7: outgoing every 5 minutes ---------------------------------------------------


async def test_outgoing_picks_pending_send_emails_every_five_minutes() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    world.add_record(a_contact(CUSTOMER))
    first = a_pending_email(sender_mailbox=alice, to=[CUSTOMER], subject="first")
    world.storage.put_activity(first)

    async with world.engine() as engine:
        sent = await engine.run_once(workloads=[Workload.OUTGOING])
        assert [s.subject.split(" CRM:")[0] for s in sent.sends()] == ["first"]
        second = a_pending_email(sender_mailbox=alice, to=[CUSTOMER], subject="second")
        world.storage.put_activity(second)

        world.clock.advance(timedelta(minutes=4, seconds=59))
        waiting = await engine.run_once(workloads=[Workload.OUTGOING])
        assert waiting.mailboxes[0].skip_reason is SkipReason.NOT_DUE
        pending = await world.storage.get_activity(second.id)
        assert pending is not None
        assert pending.status is EmailStatus.PENDING_SEND, "queued emails wait for the cycle"

        world.clock.advance(timedelta(seconds=1))
        picked = await engine.run_once(workloads=[Workload.OUTGOING])
    assert [s.subject.split(" CRM:")[0] for s in picked.sends()] == ["second"]
    assert len(world.server.outbox) == 2


# -- ACT: 5-12 minutes, 5-15 with incoming ---------------------------------------------------


def _act_mailbox(n: int, **fields: Any) -> Mailbox:
    return a_mailbox(
        f"user{n}@contoso.example",
        act_delivery_method=ActDeliveryMethod.SERVER_SIDE_SYNC,
        **fields,
    )


def _act_interval(mailbox: Mailbox, schedule: Schedule | None = None) -> timedelta:
    return cycle_interval(
        Workload.ACT, a_profile(), schedule=schedule or Schedule(), mailbox=mailbox
    )


def test_act_waits_five_to_fifteen_minutes_when_the_mailbox_also_receives_mail() -> None:
    intervals = [_act_interval(_act_mailbox(n)) for n in range(300)]
    assert all(timedelta(minutes=5) <= i <= timedelta(minutes=15) for i in intervals)
    # Spread over the whole range, not bunched: mailboxes do not all run at once.
    assert min(intervals) < timedelta(minutes=6)
    assert max(intervals) > timedelta(minutes=14)
    assert len(set(intervals)) == len(intervals)


@pytest.mark.parametrize(
    "fields",
    [
        {"incoming_delivery_method": IncomingDeliveryMethod.NONE},
        {"incoming_delivery_method": IncomingDeliveryMethod.FORWARD_MAILBOX},
        {"enabled_for_incoming": False},
    ],
)
def test_act_waits_five_to_twelve_minutes_without_incoming(fields: dict[str, object]) -> None:
    intervals = [_act_interval(_act_mailbox(n, **fields)) for n in range(300)]
    assert all(timedelta(minutes=5) <= i <= timedelta(minutes=12) for i in intervals)
    assert min(intervals) < timedelta(minutes=6)
    assert max(intervals) > timedelta(minutes=11)


def test_act_interval_is_fixed_per_mailbox() -> None:
    mailbox = _act_mailbox(7)
    assert _act_interval(mailbox) == _act_interval(attrs.evolve(mailbox))
    at = next_run_after_success(
        Workload.ACT, a_profile(), finished_at=NOW, schedule=Schedule(), mailbox=mailbox
    )
    assert at == NOW + _act_interval(mailbox)


_INTERVAL_IN_A_NEW_PROCESS = """
from datetime import timedelta
from serversync import ActDeliveryMethod, Schedule, Workload
from serversync.planning import cycle_interval
from serversync.testing import a_mailbox, a_profile
method = ActDeliveryMethod.SERVER_SIDE_SYNC
box = a_mailbox("user7@contoso.example", act_delivery_method=method)
every = cycle_interval(Workload.ACT, a_profile(), schedule=Schedule(), mailbox=box)
print(every // timedelta(microseconds=1))
"""


def test_act_interval_is_the_same_in_every_process() -> None:
    results = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", _INTERVAL_IN_A_NEW_PROCESS],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            timeout=60,
        )
        results.add(int(out.stdout))
    (microseconds,) = results
    assert timedelta(microseconds=microseconds) == _act_interval(_act_mailbox(7))


def test_act_range_is_configurable_down_to_seconds() -> None:
    schedule = Schedule(
        act_min_interval=timedelta(seconds=10),
        act_max_interval=timedelta(seconds=20),
        act_max_interval_with_incoming=timedelta(seconds=30),
    )
    without = [
        _act_interval(_act_mailbox(n, enabled_for_incoming=False), schedule) for n in range(50)
    ]
    with_incoming = [_act_interval(_act_mailbox(n), schedule) for n in range(50)]
    assert all(timedelta(seconds=10) <= i <= timedelta(seconds=20) for i in without)
    assert all(timedelta(seconds=10) <= i <= timedelta(seconds=30) for i in with_incoming)


def test_a_fixed_act_interval_when_the_range_is_empty() -> None:
    schedule = Schedule(
        act_min_interval=timedelta(minutes=7),
        act_max_interval=timedelta(minutes=7),
        act_max_interval_with_incoming=timedelta(minutes=7),
    )
    assert {_act_interval(_act_mailbox(n), schedule) for n in range(20)} == {timedelta(minutes=7)}


def test_profile_minimum_polling_interval_lengthens_act() -> None:
    profile = a_profile(min_polling_interval=timedelta(minutes=30))
    interval = cycle_interval(Workload.ACT, profile, schedule=Schedule(), mailbox=_act_mailbox(1))
    assert interval == timedelta(minutes=30)


def test_act_interval_needs_the_mailbox() -> None:
    with pytest.raises(ValueError, match="mailbox"):
        next_run_after_success(Workload.ACT, a_profile(), finished_at=NOW, schedule=Schedule())


@pytest.mark.parametrize(
    "fields",
    [
        {"act_min_interval": timedelta(minutes=13)},
        {"act_max_interval_with_incoming": timedelta(minutes=4)},
        {"lease_renewal_fraction": 0.0},
        {"lease_renewal_fraction": 1.0},
        {"incoming_interval": timedelta(0)},
    ],
)
def test_inconsistent_schedules_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - attrs validators raise plain ValueError
        Schedule(**fields)  # type: ignore[arg-type]


# -- run_forever sleeps until the next workload is due ---------------------------------------


async def test_run_forever_wakes_when_the_next_workload_is_due() -> None:
    schedule = Schedule(incoming_interval=timedelta(seconds=10), idle_sleep=timedelta(minutes=1))
    world = InMemoryWorld(settings=SyncSettings(schedule=schedule))
    world.add_user(ALICE)
    runs = _StopAfter(world, 3)

    async with world.engine(observer=runs) as engine, asyncio.timeout(5):
        await engine.run_forever(stop=runs.stop)
    # Each run comes 10 seconds after the previous one, not after the 1-minute idle sleep.
    assert runs.gaps() == [timedelta(seconds=10)] * 2
    assert runs.statuses() == [RunStatus.SUCCEEDED] * 3


async def test_run_forever_sleeps_the_idle_pause_when_nothing_is_due_soon() -> None:
    schedule = Schedule(idle_sleep=timedelta(seconds=30))
    world = InMemoryWorld(settings=SyncSettings(schedule=schedule))
    world.add_user(ALICE)
    runs = _StopAfter(world, 3)

    async with world.engine(observer=runs) as engine, asyncio.timeout(5):
        await engine.run_forever(stop=runs.stop)
    assert runs.gaps() == [timedelta(seconds=30)] * 2
    assert runs.statuses() == [RunStatus.SUCCEEDED, RunStatus.SKIPPED, RunStatus.SKIPPED]


async def test_run_forever_is_not_woken_by_workloads_that_cannot_run() -> None:
    schedule = Schedule(incoming_interval=timedelta(seconds=10), idle_sleep=timedelta(minutes=1))
    world = InMemoryWorld(settings=SyncSettings(schedule=schedule))
    world.add_user(ALICE)
    world.add_user("bob@contoso.example")
    world.server.set_password("bob@contoso.example", "revoked")  # disabled in the first run
    # Bob's back-off ends after 5 minutes; from then on his next run lies in the past.
    runs = _StopAfter(world, 40, mailbox=MailboxId(f"mailbox:{ALICE}"))

    async with world.engine(observer=runs) as engine, asyncio.timeout(5):
        await engine.run_forever(stop=runs.stop)
    assert runs.gaps() == [timedelta(seconds=10)] * 39
    assert runs.statuses() == [RunStatus.SUCCEEDED] * 40


class _StopAfter(Recorder):
    """Notes when each incoming run ended; sets ``stop`` after ``count`` of them."""

    def __init__(self, world: InMemoryWorld, count: int, mailbox: MailboxId | None = None) -> None:
        super().__init__()
        self.stop = asyncio.Event()
        self._world = world
        self._count = count
        self._mailbox = mailbox
        self.ended: list[tuple[datetime, RunStatus]] = []

    def mailbox_run_finished(self, report: MailboxRunReport) -> None:
        if report.workload is not Workload.INCOMING:
            return
        if self._mailbox is not None and report.mailbox_id != self._mailbox:
            return
        self.ended.append((self._world.clock.now(), report.status))
        if len(self.ended) == self._count:
            self.stop.set()

    def gaps(self) -> list[timedelta]:
        times = [t for t, _ in self.ended]
        return [b - a for a, b in itertools.pairwise(times)]

    def statuses(self) -> list[RunStatus]:
        return [s for _, s in self.ended]


# -- Process Email From: the later of the profile's and the mailbox's dates ------------------


@pytest.mark.parametrize(
    ("profile_days_ago", "mailbox_days_ago", "tracked"),
    [
        (3, 1, ["recent"]),  # the mailbox's date is later
        (1, 3, ["recent"]),  # the profile's date is later
        (3, None, ["middle", "recent"]),  # only the profile has one
        (None, 3, ["middle", "recent"]),  # only the mailbox has one
        (None, None, ["old", "middle", "recent"]),
    ],
)
async def test_process_email_from_is_the_later_of_profile_and_mailbox(
    profile_days_ago: int | None, mailbox_days_ago: int | None, tracked: list[str]
) -> None:
    now = NOW

    def ago(days: int | None) -> datetime | None:
        return None if days is None else now - timedelta(days=days)

    world = InMemoryWorld(profile=a_profile(process_emails_received_after=ago(profile_days_ago)))
    world.add_user(
        ALICE,
        filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES,
        process_email_received_after=ago(mailbox_days_ago),
    )
    for subject, days in (("old", 4), ("middle", 2), ("recent", 0.5)):
        world.server.deliver(
            ALICE,
            email(to=[ALICE], subject=subject),
            received_at=now - timedelta(days=days),
        )
    async with world.engine() as engine:
        report = await engine.run_once(workloads=[Workload.INCOMING])
    kept = [i.subject for i in report.items() if i.kind is OutcomeKind.TRACKED]
    skipped = [i for i in report.items() if i.kind is OutcomeKind.SKIPPED]
    assert kept == tracked
    assert len(skipped) == 3 - len(tracked)
    assert all(i.explanation == "received before Process Email From" for i in skipped)
    assert sorted(a.subject for a in world.storage.activities()) == sorted(tracked)
