"""A header batch's tracked messages are fetched and stored together, and judged as if they
had been stored one by one."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import attrs
import pytest

from serversync import (
    ConnectionFailedError,
    CorrelationMethod,
    EmailDirection,
    ImapCheckpoint,
    Mailbox,
    OutcomeKind,
    RunReport,
    RunStatus,
    Workload,
)
from serversync.engine._optional import offered
from serversync.model import INBOX, EmailActivity
from serversync.ports import BatchIncomingRepository
from serversync.relevance.conversation import base_conversation_index_hash
from serversync.testing import (
    FaultPoint,
    InMemoryStorage,
    InMemoryWorld,
    SimulatedCrash,
    a_contact,
    a_sent_email,
    an_email,
)

ALICE = "alice@contoso.example"
JANE = "jane@fabrikam.example"
QUOTE = "<quote@contoso.example>"


async def run(world: InMemoryWorld) -> RunReport:
    async with world.engine() as engine:
        return await engine.run_once(workloads=[Workload.INCOMING])


def _world() -> tuple[InMemoryWorld, Mailbox]:
    """Alice with the default filter (replies to CRM email) and one CRM email to Jane."""
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    world.add_record(a_contact(JANE))
    world.storage.put_activity(
        a_sent_email(sender_mailbox=alice, to=[JANE], subject="Quote", message_id=QUOTE)
    )
    return world, alice


def _reply(n: int, *, to: str = QUOTE, **fields: Any) -> bytes:
    return an_email(
        sender=JANE,
        to=[ALICE],
        subject=f"reply {n}",
        message_id=f"<reply-{n}@fabrikam.example>",
        in_reply_to=to,
        **fields,
    )


def _unrelated(n: int) -> bytes:
    return an_email(sender=JANE, to=[ALICE], subject=f"news {n}")


def _calls(world: InMemoryWorld, operation: str) -> int:
    calls = world.storage.faults.calls + world.server.faults.calls
    return calls.count((operation, FaultPoint.BEFORE))


def _incoming(world: InMemoryWorld) -> list[EmailActivity]:
    return [a for a in world.storage.activities() if a.direction is EmailDirection.INCOMING]


async def _last_uid(world: InMemoryWorld, mailbox: Mailbox) -> int | None:
    checkpoint = await world.storage.load_checkpoint(mailbox.id, INBOX)
    return checkpoint.last_uid if isinstance(checkpoint, ImapCheckpoint) else None


async def test_a_batch_tracked_messages_are_fetched_in_one_call_and_stored_in_one() -> None:
    world, alice = _world()
    for n in range(4):
        world.deliver(ALICE, _reply(n))
        world.deliver(ALICE, _unrelated(n))

    report = await run(world)

    kinds = [i.kind for i in report.items()]
    assert kinds == [OutcomeKind.TRACKED, OutcomeKind.NOT_RELEVANT] * 4, "in listing order"
    assert _calls(world, "fetch_messages") == 1
    assert _calls(world, "fetch_message") == 4, "only the tracked messages' bodies"
    assert _calls(world, "add_incoming_batch") == 1
    assert sorted(a.subject for a in _incoming(world)) == [f"reply {n}" for n in range(4)]
    assert await _last_uid(world, alice) == 8


async def test_a_reply_to_a_message_tracked_earlier_in_the_batch_correlates_with_it() -> None:
    world, _ = _world()
    world.deliver(ALICE, _reply(1))
    world.deliver(ALICE, _unrelated(1))
    # Answers reply 1, which becomes CRM email only once it is stored.
    world.deliver(ALICE, _reply(2, to="<reply-1@fabrikam.example>"))

    report = await run(world)

    assert [(i.subject, i.kind) for i in report.items()] == [
        ("reply 1", OutcomeKind.TRACKED),
        ("news 1", OutcomeKind.NOT_RELEVANT),
        ("reply 2", OutcomeKind.TRACKED),
    ]
    first, second = sorted(_incoming(world), key=lambda a: a.subject)
    assert second.correlation_method is CorrelationMethod.IN_REPLY_TO
    assert second.parent_activity_id == first.id
    assert _calls(world, "add_incoming") == 2


async def test_the_same_message_twice_in_a_batch_is_stored_once() -> None:
    world, _ = _world()
    world.deliver(ALICE, _reply(1))
    world.deliver(ALICE, _reply(1))

    report = await run(world)

    assert [i.kind for i in report.items()] == [OutcomeKind.TRACKED, OutcomeKind.DUPLICATE]
    assert len(_incoming(world)) == 1


async def test_conversation_indexes_of_a_batch_are_looked_up_in_one_query() -> None:
    world, alice = _world()
    threads = []
    for n in range(3):
        base = bytes([n] * 22)
        thread = a_sent_email(
            sender_mailbox=alice,
            to=[JANE],
            subject=f"Thread {n}",
            message_id=f"<thread-{n}@contoso.example>",
        )
        index = base_conversation_index_hash(base64.b64encode(base).decode())
        threads.append(attrs.evolve(thread, base_conversation_index_hash=index))
        world.storage.put_activity(threads[-1])
        reply_index = base64.b64encode(base + bytes([1, 2, 3, 4, 5])).decode()
        world.deliver(
            ALICE,
            an_email(
                sender=JANE,
                to=[ALICE],
                subject=f"thread {n}",
                headers=[("Thread-Index", reply_index)],
            ),
        )

    report = await run(world)

    assert [i.kind for i in report.items()] == [OutcomeKind.TRACKED] * 3
    replies = sorted(_incoming(world), key=lambda a: a.subject)
    assert [a.parent_activity_id for a in replies] == [t.id for t in threads]
    assert all(a.correlation_method is CorrelationMethod.CONVERSATION_INDEX for a in replies)
    assert _calls(world, "find_by_correlation_keys") == 1
    assert _calls(world, "find_correlation_candidates") == 0
    assert _calls(world, "add_incoming_batch") == 1


async def test_a_message_of_a_conversation_stored_earlier_in_the_batch_follows_it() -> None:
    world, alice = _world()
    base = bytes(range(22))
    thread = a_sent_email(
        sender_mailbox=alice, to=[JANE], subject="Thread", message_id="<thread@contoso.example>"
    )
    index = base_conversation_index_hash(base64.b64encode(base).decode())
    world.storage.put_activity(attrs.evolve(thread, base_conversation_index_hash=index))
    for n in range(2):
        reply_index = base64.b64encode(base + bytes([n, 1, 2, 3, 4])).decode()
        world.deliver(
            ALICE,
            an_email(
                sender=JANE, to=[ALICE], subject=f"re {n}", headers=[("Thread-Index", reply_index)]
            ),
        )

    await run(world)

    first, second = sorted(_incoming(world), key=lambda a: a.subject)
    assert first.parent_activity_id == thread.id
    assert second.parent_activity_id == first.id, "the newest email of the conversation"


async def test_a_store_failing_for_the_mailbox_leaves_the_group_to_the_next_cycle() -> None:
    world, alice = _world()
    for n in range(3):
        world.deliver(ALICE, _reply(n))
    world.storage.faults.fail_next("add_incoming_batch", ConnectionFailedError("database down"))

    first = await run(world)

    assert first.mailboxes[0].status is RunStatus.FAILED
    assert list(first.items()) == []
    assert _incoming(world) == []
    assert await _last_uid(world, alice) is None, "the cursor stays before the group"

    world.clock.advance(timedelta(minutes=5))
    second = await run(world)

    assert [i.kind for i in second.items()] == [OutcomeKind.TRACKED] * 3
    assert len(_incoming(world)) == 3


async def test_a_crash_after_a_group_was_stored_stores_nothing_twice() -> None:
    world, alice = _world()
    for n in range(3):
        world.deliver(ALICE, _reply(n))
    world.storage.faults.fail_next("add_incoming_batch", SimulatedCrash(), point=FaultPoint.AFTER)

    with pytest.raises(BaseExceptionGroup) as crashed:
        await run(world)
    assert crashed.group_contains(SimulatedCrash)
    assert len(_incoming(world)) == 3
    assert await _last_uid(world, alice) is None

    world.clock.advance(timedelta(minutes=11))  # the dead engine's lease expires
    report = await run(world)

    assert [i.kind for i in report.items()] == [OutcomeKind.DUPLICATE] * 3
    assert len(_incoming(world)) == 3
    assert await _last_uid(world, alice) == 3


class _Forwarding:
    """Forwards every attribute to another object, as the engine's lease guard does."""

    def __init__(self, inner: object) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_optional_ports_are_seen_through_objects_that_forward_attributes() -> None:
    store = InMemoryStorage()
    assert offered(store, BatchIncomingRepository) is store
    forwarding = _Forwarding(store)
    assert offered(forwarding, BatchIncomingRepository) is forwarding
    assert offered(_Forwarding(object()), BatchIncomingRepository) is None
