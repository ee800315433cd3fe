"""Mailbox health from ``SyncEngine.health()``: one value per mailbox and workload."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

from serversync import (
    ConfigurationError,
    ConnectionFailedError,
    MailboxHealth,
    MailboxId,
    RecordState,
    SkipReason,
    TestStatus,
    Workload,
)
from serversync.serialization import make_converter
from serversync.testing import InMemoryWorld, a_contact, a_pending_email

ALICE = "alice@contoso.example"
BOB = "bob@contoso.example"
CAROL = "carol@contoso.example"
CUSTOMER = "jane@fabrikam.example"


def _by_key(health: tuple[MailboxHealth, ...]) -> dict[tuple[MailboxId, Workload], MailboxHealth]:
    return {(h.mailbox_id, h.workload): h for h in health}


async def test_health_reports_every_workload_of_every_mailbox() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    bob = world.add_user(BOB)
    carol = world.add_user(CAROL, state=RecordState.INACTIVE)
    world.add_record(a_contact(CUSTOMER))
    for n in range(2):
        world.storage.put_activity(
            a_pending_email(sender_mailbox=carol, to=[CUSTOMER], subject=f"waiting {n}")
        )
    world.server.set_password(BOB, "changed")
    started = world.clock.now()

    async with world.engine(engine_id="engine-a") as engine:
        await engine.run_once()
        world.clock.advance(timedelta(minutes=1))
        health = await engine.health()

    assert [(h.mailbox_id, h.workload) for h in health] == [
        (box.id, workload) for box in (alice, bob, carol) for workload in Workload
    ]
    now = world.clock.now()
    assert {h.checked_at for h in health} == {now}
    by_key = _by_key(health)

    fine = by_key[(alice.id, Workload.INCOMING)]
    assert fine.enabled
    assert fine.test_status is TestStatus.NOT_RUN
    assert fine.blocked_by is None
    assert fine.last_success == started
    assert fine.last_sync_started_on == started
    assert fine.last_error is None
    assert fine.consecutive_failures == 0
    assert fine.next_run_at == started + timedelta(minutes=5)
    assert fine.lease_holder is None
    assert fine.backlog is None, "the incoming backlog is not known"
    assert not fine.failing
    assert fine.email_address == ALICE
    assert fine.profile_id == world.profile.id

    sending = by_key[(alice.id, Workload.OUTGOING)]
    assert sending.backlog == 0

    failed = by_key[(bob.id, Workload.INCOMING)]
    assert not failed.enabled
    assert failed.test_status is TestStatus.FAILURE
    assert failed.blocked_by is SkipReason.WORKLOAD_DISABLED
    assert failed.last_error is not None
    assert failed.last_error.error_type == "AuthenticationError"
    assert "login refused" in failed.last_error.message
    assert failed.last_error_at == started
    assert failed.consecutive_failures == 1
    assert failed.last_success is None
    assert failed.failing

    inactive = by_key[(carol.id, Workload.OUTGOING)]
    assert inactive.blocked_by is SkipReason.INACTIVE
    assert inactive.backlog == 2, "two emails wait to be sent"
    assert inactive.next_run_at is None, "never run"

    act = by_key[(alice.id, Workload.ACT)]
    assert act.blocked_by is SkipReason.DELIVERY_METHOD_NOT_SERVER_SIDE_SYNC


async def test_health_names_the_engine_holding_a_lease() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    now = world.clock.now()
    await world.storage.try_acquire_lease(
        f"{alice.id}/incoming", owner="engine-b", now=now, until=now + timedelta(minutes=10)
    )
    async with world.engine(engine_id="engine-a") as engine:
        report = await engine.run_once()
        health = _by_key(await engine.health(alice.id))
        assert report.mailboxes[0].skip_reason is SkipReason.LEASED_ELSEWHERE
        assert health[(alice.id, Workload.INCOMING)].lease_holder == "engine-b"
        assert health[(alice.id, Workload.OUTGOING)].lease_holder is None

        world.clock.advance(timedelta(minutes=10))
        later = _by_key(await engine.health(alice.id))
    assert later[(alice.id, Workload.INCOMING)].lease_holder is None, "the lease expired"


async def test_health_of_one_mailbox() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    world.add_user(BOB)
    world.server.faults.fail_next("connect", ConnectionFailedError("reset"))
    async with world.engine() as engine:
        await engine.sync_mailbox(alice.id)
        health = await engine.health(alice.id)
        with pytest.raises(ConfigurationError, match="no mailbox"):
            await engine.health(MailboxId("mailbox:nobody@contoso.example"))
    assert {h.mailbox_id for h in health} == {alice.id}
    incoming = _by_key(health)[(alice.id, Workload.INCOMING)]
    assert incoming.failing
    assert incoming.enabled, "a transient failure does not disable"
    assert incoming.consecutive_failures == 1


async def test_health_needs_an_open_engine() -> None:
    world = InMemoryWorld()
    with pytest.raises(RuntimeError, match="async with"):
        await world.engine().health()


def test_health_round_trips_through_the_converter() -> None:
    health = MailboxHealth(
        mailbox_id=MailboxId("mailbox:a@contoso.example"),
        email_address="a@contoso.example",
        profile_id=None,
        workload=Workload.OUTGOING,
        checked_at=InMemoryWorld().clock.now(),
        enabled=False,
        test_status=TestStatus.FAILURE,
        blocked_by=SkipReason.WORKLOAD_DISABLED,
        backlog=3,
    )
    converter = make_converter()
    assert converter.structure(converter.unstructure(health), MailboxHealth) == health


@pytest.mark.parametrize(
    ("fields", "failing"),
    [
        ({}, False),
        ({"consecutive_failures": 2}, True),
        ({"enabled": False, "test_status": TestStatus.FAILURE}, True),
        ({"enabled": False, "test_status": TestStatus.NOT_RUN}, False),  # switched off
    ],
)
def test_failing_means_failed_last_or_disabled_by_a_failure(
    fields: dict[str, object], failing: bool
) -> None:
    base = MailboxHealth(
        mailbox_id=MailboxId("m"),
        email_address="m@contoso.example",
        profile_id=None,
        workload=Workload.INCOMING,
        checked_at=InMemoryWorld().clock.now(),
        enabled=True,
        test_status=TestStatus.SUCCESS,
    )
    assert attrs.evolve(base, **fields).failing is failing  # type: ignore[arg-type]
