"""Size limits (security defaults): an incoming message over ``Limits.max_message_size`` is
quarantined as too large, without downloading it when the server announced its size; an
outgoing email over it fails for good, with the reason; and mailbox health shows each
mailbox's quarantine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from serversync import (
    EmailStatus,
    IncomingBatch,
    IncomingFilteringMethod,
    Limits,
    MessageTooLargeError,
    OutcomeKind,
    QuarantineCount,
    RetryPolicy,
    SyncSettings,
    Workload,
)
from serversync.adapters.transports import memory
from serversync.mime import compose
from serversync.testing import InMemoryWorld, a_mailbox, a_pending_email, an_email

ALICE = "alice@contoso.example"
JANE = "jane@fabrikam.example"
UNDELIVERABLE = "$ServerSyncUndeliverable"
LIMIT = 4_000


def _world(limit: int | None = LIMIT) -> InMemoryWorld:
    return InMemoryWorld(settings=SyncSettings(limits=Limits(max_message_size=limit)))


def _fetches(world: InMemoryWorld) -> int:
    return sum(1 for operation, _ in world.server.faults.calls if operation == "fetch_message")


async def test_an_incoming_message_over_the_limit_is_quarantined_without_being_downloaded() -> None:
    world = _world()
    alice = world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    world.deliver(ALICE, an_email(sender=JANE, to=[ALICE], subject="small"))
    world.deliver(ALICE, an_email(sender=JANE, to=[ALICE], subject="big", body="x" * LIMIT))

    async with world.engine() as engine:
        report = await engine.run_once(workloads=[Workload.INCOMING])
        (entry,) = await engine.quarantine()
        health = await engine.health(alice.id)

    assert [(i.subject, i.kind) for i in report.items()] == [
        ("small", OutcomeKind.TRACKED),
        ("big", OutcomeKind.FAILED),
    ]
    assert _fetches(world) == 1, "only the small message was downloaded"
    failed = list(report.items())[1]
    assert failed.error is not None
    assert failed.error.error_type == "MessageTooLargeError"
    assert "too large" in failed.explanation
    assert f"more than the {LIMIT} allowed" in failed.explanation
    assert entry.given_up, "its size will not change: given up at once, not retried"
    assert entry.attempts == 1
    assert UNDELIVERABLE in world.server.messages(ALICE)[1].keywords
    (incoming,) = [h for h in health if h.workload is Workload.INCOMING]
    assert incoming.quarantined == QuarantineCount(waiting=0, given_up=1)
    assert incoming.blocked_by is None, "the mailbox goes on"


async def test_a_message_whose_size_was_not_announced_is_checked_once_downloaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = _world()
    world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    world.deliver(ALICE, an_email(sender=JANE, to=[ALICE], subject="big", body="y" * LIMIT))
    listed = memory._IncomingSession.list_new

    async def list_without_sizes(self: Any, *args: Any, **kwargs: Any) -> IncomingBatch:
        batch = await listed(self, *args, **kwargs)
        return attrs.evolve(batch, refs=tuple(attrs.evolve(r, size=None) for r in batch.refs))

    # A server that lists messages without their sizes.
    monkeypatch.setattr(memory._IncomingSession, "list_new", list_without_sizes)
    async with world.engine() as engine:
        report = await engine.run_once(workloads=[Workload.INCOMING])
    (item,) = report.items()
    assert item.kind is OutcomeKind.FAILED
    assert item.error is not None
    assert item.error.error_type == "MessageTooLargeError"
    assert not world.storage.activities()


async def test_without_a_limit_a_large_message_is_tracked() -> None:
    world = _world(limit=None)
    world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    world.deliver(ALICE, an_email(sender=JANE, to=[ALICE], subject="big", body="x" * LIMIT))
    async with world.engine() as engine:
        report = await engine.run_once(workloads=[Workload.INCOMING])
    assert [i.kind for i in report.items()] == [OutcomeKind.TRACKED]


async def test_an_outgoing_email_over_the_limit_fails_for_good_with_the_reason() -> None:
    world = _world()
    alice = world.add_user(ALICE)
    big = a_pending_email(sender_mailbox=alice, to=[JANE], subject="big", body="z" * LIMIT)
    small = a_pending_email(sender_mailbox=alice, to=[JANE], subject="small")
    world.storage.put_activity(big)
    world.storage.put_activity(small)

    async with world.engine() as engine:
        report = await engine.run_once(workloads=[Workload.OUTGOING])

    (run,) = report.mailboxes
    sends = {s.activity_id: s for s in run.sends}
    assert sends[small.id].status is EmailStatus.SENT
    failed = sends[big.id]
    assert failed.status is EmailStatus.FAILED, "no retry: its size will not change"
    assert failed.error is not None
    assert failed.error.error_type == "MessageTooLargeError"
    assert "Limits.max_message_size" in failed.error.message
    assert len(world.server.outbox) == 1, "only the small email went out"
    stored = await world.storage.get_mailbox(alice.id)
    assert stored is not None
    assert stored.enabled_for_outgoing, "one email failing does not disable the mailbox"


def test_compose_refuses_a_message_over_the_limit() -> None:
    email = a_pending_email(
        sender_mailbox=a_mailbox(ALICE), to=[JANE], subject="big", body="z" * 100
    )
    now = datetime(2026, 1, 5, tzinfo=UTC)
    assert compose(email, sender_address=ALICE, now=now, max_message_size=None).data
    with pytest.raises(MessageTooLargeError) as refused:
        compose(email, sender_address=ALICE, now=now, max_message_size=100)
    assert refused.value.limit == 100
    assert refused.value.size > 100


def test_the_message_size_limit_is_validated() -> None:
    assert Limits().max_message_size == 50 * 1024 * 1024
    with pytest.raises(ValueError, match="max_message_size"):
        Limits(max_message_size=0)


async def test_health_counts_each_mailboxs_quarantine_and_its_next_try() -> None:
    world = InMemoryWorld(settings=SyncSettings(retry=RetryPolicy(quarantine_max_attempts=5)))
    alice = world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    bob = world.add_user("bob@contoso.example")
    world.deliver(ALICE, b"\r\n\r\nno headers at all")
    world.deliver(ALICE, b"\r\n\r\nno headers either")
    async with world.engine() as engine:
        await engine.run_once(workloads=[Workload.INCOMING])
        health = await engine.health()
    counts = {(h.mailbox_id, h.workload): h.quarantined for h in health}
    expected_next = world.clock.now() + timedelta(minutes=15)
    assert counts[(alice.id, Workload.INCOMING)] == QuarantineCount(
        waiting=2, given_up=0, next_attempt_at=expected_next
    )
    assert counts[(bob.id, Workload.INCOMING)] == QuarantineCount()
    assert counts[(alice.id, Workload.OUTGOING)] is None, "only incoming has a quarantine"
