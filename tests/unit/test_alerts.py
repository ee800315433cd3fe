"""The profile-level alert (spec §5: more than half of a profile's mailboxes fail within an
hour), the Alert value and its delivery through the observer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from serversync import (
    ActDeliveryMethod,
    Alert,
    AlertKind,
    AlertLevel,
    AlertSettings,
    ConnectionFailedError,
    ErrorRecord,
    IncomingDeliveryMethod,
    Mailbox,
    MailboxId,
    OutgoingDeliveryMethod,
    ProfileId,
    RecordState,
    RetryPolicy,
    SyncSettings,
    Workload,
    WorkloadState,
)
from serversync.planning import profile_failure_alert
from serversync.serialization import make_converter
from serversync.testing import FaultPoint, InMemoryWorld, a_mailbox, a_profile

from .engine_support import Recorder

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
PROFILE = a_profile()
OTHER = a_profile(id=ProfileId("profile-2"), name="Other")
SETTINGS = AlertSettings()
ERROR = ErrorRecord(
    error_type="ConnectionFailedError", message="x", transient=True, scope="mailbox"
)


def _boxes(count: int, **fields: Any) -> list[Mailbox]:
    return [a_mailbox(f"user{n}@contoso.example", **fields) for n in range(count)]


def _failed(at: datetime) -> WorkloadState:
    return WorkloadState(consecutive_failures=1, last_error=ERROR, last_error_at=at)


def _states(
    boxes: list[Mailbox], failing: int, *, at: datetime = NOW
) -> dict[tuple[MailboxId, Workload], WorkloadState]:
    states = {(m.id, Workload.INCOMING): WorkloadState(next_run_at=NOW) for m in boxes}
    for mailbox in boxes[:failing]:
        states[(mailbox.id, Workload.INCOMING)] = _failed(at)
    return states


def _alert(
    boxes: list[Mailbox],
    states: dict[tuple[MailboxId, Workload], WorkloadState],
    *,
    settings: AlertSettings = SETTINGS,
    last_alert_at: datetime | None = None,
) -> Alert | None:
    return profile_failure_alert(
        PROFILE, boxes, states, now=NOW, settings=settings, last_alert_at=last_alert_at
    )


@pytest.mark.parametrize(("total", "failing"), [(4, 3), (3, 2), (1, 1), (10, 6)])
def test_more_than_half_failing_raises_the_profile_alert(total: int, failing: int) -> None:
    boxes = _boxes(total)
    alert = _alert(boxes, _states(boxes, failing))
    assert alert is not None
    assert alert.kind is AlertKind.PROFILE_MASS_FAILURE
    assert alert.level is AlertLevel.ERROR
    assert alert.profile_id == PROFILE.id
    assert alert.mailbox_id is None
    assert alert.workload is None
    assert alert.raised_at == NOW
    assert f"{failing} of the {total} mailboxes" in alert.message
    assert PROFILE.name in alert.message


@pytest.mark.parametrize(("total", "failing"), [(4, 2), (2, 1), (3, 1), (5, 0), (10, 5)])
def test_half_or_fewer_failing_raises_nothing(total: int, failing: int) -> None:
    boxes = _boxes(total)
    assert _alert(boxes, _states(boxes, failing)) is None


def test_failures_older_than_the_window_do_not_count() -> None:
    boxes = _boxes(4)
    hour_and_a_bit = NOW - timedelta(minutes=61)
    assert _alert(boxes, _states(boxes, 3, at=hour_and_a_bit)) is None
    assert _alert(boxes, _states(boxes, 3, at=NOW - timedelta(minutes=59))) is not None


def test_a_mailbox_counts_once_whichever_workloads_failed() -> None:
    boxes = _boxes(4)
    states = _states(boxes, 2)
    states[(boxes[0].id, Workload.OUTGOING)] = _failed(NOW)
    assert _alert(boxes, states) is None, "2 of 4 mailboxes, even with 3 failed workloads"
    states[(boxes[2].id, Workload.OUTGOING)] = _failed(NOW)
    assert _alert(boxes, states) is not None


def test_a_failure_that_was_followed_by_a_success_still_counts_within_the_hour() -> None:
    boxes = _boxes(2)
    recovered = WorkloadState(
        consecutive_failures=0,
        last_error=ERROR,
        last_error_at=NOW - timedelta(minutes=30),
        last_successful_sync_completed_on=NOW - timedelta(minutes=10),
    )
    states = {(m.id, Workload.INCOMING): recovered for m in boxes}
    assert _alert(boxes, states) is not None


def test_only_the_profiles_active_mailboxes_using_server_side_sync_count() -> None:
    failing = _boxes(3)
    healthy_elsewhere = [
        a_mailbox(f"other{n}@contoso.example", profile_id=OTHER.id) for n in range(10)
    ]
    inactive = [a_mailbox(f"gone{n}@contoso.example", state=RecordState.INACTIVE) for n in range(5)]
    unused = [
        a_mailbox(
            f"outlook{n}@contoso.example",
            incoming_delivery_method=IncomingDeliveryMethod.OUTLOOK,
            outgoing_delivery_method=OutgoingDeliveryMethod.NONE,
            act_delivery_method=ActDeliveryMethod.NONE,
        )
        for n in range(5)
    ]
    healthy = [a_mailbox("fine@contoso.example")]
    everyone = failing + healthy_elsewhere + inactive + unused + healthy
    states = _states(failing, 3)
    states.update(_states(healthy, 0))
    alert = _alert(everyone, states)
    assert alert is not None
    assert "3 of the 4 mailboxes" in alert.message


def test_no_mailboxes_no_alert() -> None:
    assert _alert([], {}) is None


def test_the_alert_is_not_repeated_within_the_window() -> None:
    boxes = _boxes(2)
    states = _states(boxes, 2)
    assert _alert(boxes, states, last_alert_at=NOW - timedelta(minutes=59)) is None
    assert _alert(boxes, states, last_alert_at=NOW - timedelta(minutes=60)) is not None


def test_share_and_window_are_settings() -> None:
    boxes = _boxes(10)
    strict = AlertSettings(mass_failure_share=0.2, mass_failure_window=timedelta(minutes=10))
    assert _alert(boxes, _states(boxes, 3), settings=strict) is not None
    old = _states(boxes, 10, at=NOW - timedelta(minutes=11))
    assert _alert(boxes, old, settings=strict) is None


@pytest.mark.parametrize("share", [0.0, 1.0, 1.5])
def test_the_share_is_a_fraction(share: float) -> None:
    with pytest.raises(ValueError, match="mass_failure_share"):
        AlertSettings(mass_failure_share=share)


def test_alerts_round_trip_through_the_converter() -> None:
    boxes = _boxes(1)
    alert = _alert(boxes, _states(boxes, 1))
    converter = make_converter()
    assert alert is not None
    assert converter.structure(converter.unstructure(alert), Alert) == alert


# -- the engine evaluates the rule after each run ----------------------------------------------


def _world() -> tuple[InMemoryWorld, list[Mailbox]]:
    world = InMemoryWorld()
    boxes = [world.add_user(f"user{n}@contoso.example") for n in range(4)]
    return world, boxes


async def _run(world: InMemoryWorld, recorder: Recorder) -> None:
    async with world.engine(observer=recorder) as engine:
        await engine.run_once()


async def test_the_engine_raises_the_profile_alert_after_a_run() -> None:
    world, _ = _world()
    world.server.faults.fail_next("connect", ConnectionFailedError("no route to host"), times=3)
    recorder = Recorder()
    await _run(world, recorder)
    (alert,) = recorder.alerts_of(AlertKind.PROFILE_MASS_FAILURE)
    assert alert.profile_id == world.profile.id
    assert "3 of the 4 mailboxes" in alert.message
    assert recorder.alerts_of(AlertKind.WORKLOAD_DISABLED) == [], "transient failures"


async def test_the_engine_stays_quiet_when_half_or_fewer_fail() -> None:
    world, _ = _world()
    world.server.faults.fail_next("connect", ConnectionFailedError("reset"), times=2)
    recorder = Recorder()
    await _run(world, recorder)
    assert recorder.alerts == []


async def test_one_engine_raises_the_profile_alert_once_an_hour() -> None:
    world, _ = _world()
    # Keep the failing workloads enabled throughout: the alert, not disabling, is tested.
    world.settings = SyncSettings(retry=RetryPolicy(max_transient_failures=100))
    recorder = Recorder()
    async with world.engine(observer=recorder) as engine:
        for _ in range(13):  # an hour of cycles, each failing for three mailboxes
            world.server.faults.fail_next("connect", ConnectionFailedError("reset"), times=3)
            await engine.run_once()
            world.clock.advance(timedelta(minutes=5))
        assert world.server.faults.calls.count(("connect", FaultPoint.BEFORE)) == 13 * 4
        assert len(recorder.alerts_of(AlertKind.PROFILE_MASS_FAILURE)) == 2
        raised = [a.raised_at for a in recorder.alerts_of(AlertKind.PROFILE_MASS_FAILURE)]
        assert raised[1] - raised[0] == timedelta(hours=1)


async def test_the_engine_uses_the_alert_settings() -> None:
    world, _ = _world()
    world.settings = SyncSettings(alerts=AlertSettings(mass_failure_share=0.2))
    world.server.faults.fail_next("connect", ConnectionFailedError("reset"), times=1)
    recorder = Recorder()
    await _run(world, recorder)
    assert len(recorder.alerts_of(AlertKind.PROFILE_MASS_FAILURE)) == 1


async def test_sync_mailbox_does_not_judge_the_profile_on_one_mailbox() -> None:
    world, boxes = _world()
    world.server.faults.fail_next("connect", ConnectionFailedError("reset"))
    recorder = Recorder()
    async with world.engine(observer=recorder) as engine:
        await engine.sync_mailbox(boxes[0].id)
    assert recorder.alerts == []
