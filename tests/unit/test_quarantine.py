"""Poison-message quarantine over the in-memory world: a message that cannot be fetched,
parsed or stored is recorded, the mailbox goes on, later cycles retry it on its schedule,
and it is given up (tagged Undeliverable) after its attempts, or released when it succeeds."""

from __future__ import annotations

from datetime import timedelta

import pytest

from serversync import (
    ConnectionFailedError,
    ErrorRecord,
    ErrorScope,
    ImapCheckpoint,
    IncomingFilteringMethod,
    ItemOutcome,
    Mailbox,
    MailboxId,
    MessageId,
    MessageRejectedError,
    OutcomeKind,
    PermanentError,
    QuarantinedMessage,
    RetryPolicy,
    RunReport,
    RunStatus,
    SyncSettings,
    Workload,
)
from serversync.model import INBOX
from serversync.planning import quarantine_after_failure
from serversync.testing import FakeClock, InMemoryWorld, SimulatedCrash, a_profile, an_email

ALICE = "alice@contoso.example"
JANE = "jane@fabrikam.example"
TRACKED = "$ServerSyncTracked"
UNDELIVERABLE = "$ServerSyncUndeliverable"
CYCLE = timedelta(minutes=5)
RETRY = timedelta(minutes=15)
NO_HEADERS = b"\r\n\r\nno headers at all"


def _world(**settings: object) -> tuple[InMemoryWorld, Mailbox]:
    world = InMemoryWorld(settings=SyncSettings(**settings))  # type: ignore[arg-type]
    mailbox = world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    return world, mailbox


def _message(n: int) -> bytes:
    return an_email(
        sender=JANE, to=[ALICE], subject=f"order {n}", message_id=f"<order-{n}@fabrikam.example>"
    )


async def _cycle(world: InMemoryWorld) -> RunReport:
    async with world.engine() as engine:
        return await engine.run_once(workloads=[Workload.INCOMING])


def _items(report: RunReport) -> list[tuple[str | None, OutcomeKind]]:
    return [(i.subject, i.kind) for i in report.items()]


async def _quarantine(world: InMemoryWorld) -> tuple[QuarantinedMessage, ...]:
    async with world.engine() as engine:
        return await engine.quarantine()


async def _last_uid(world: InMemoryWorld, mailbox: Mailbox) -> int | None:
    checkpoint = await world.storage.load_checkpoint(mailbox.id, INBOX)
    return checkpoint.last_uid if isinstance(checkpoint, ImapCheckpoint) else None


def _keywords(world: InMemoryWorld, folder: str = INBOX) -> dict[int, frozenset[str]]:
    return {m.uid: m.keywords for m in world.server.messages(ALICE, folder)}


async def test_a_message_that_cannot_be_fetched_is_quarantined_and_the_mailbox_goes_on() -> None:
    world, mailbox = _world()
    for n in range(3):
        world.deliver(ALICE, _message(n))
    refused = MessageRejectedError("the server refuses to return it", server_code="NO")
    world.server.faults.fail_next("fetch_message", refused, skip=1)

    report = await _cycle(world)

    assert report.mailboxes[0].status is RunStatus.SUCCEEDED, "one message must not fail all"
    assert _items(report) == [
        ("order 0", OutcomeKind.TRACKED),
        ("order 1", OutcomeKind.FAILED),
        ("order 2", OutcomeKind.TRACKED),
    ]
    failed = next(i for i in report.items() if i.kind is OutcomeKind.FAILED)
    assert "attempt 1 of 5" in failed.explanation
    assert await _last_uid(world, mailbox) == 3, "the cursor moves past the quarantined message"
    (entry,) = await _quarantine(world)
    now = world.clock.now()
    assert entry == QuarantinedMessage(
        mailbox_id=mailbox.id,
        folder=INBOX,
        remote_id="2",
        received_at=entry.received_at,
        message_id=MessageId("<order-1@fabrikam.example>"),
        subject="order 1",
        sender=JANE,
        explanation=entry.explanation,
        error=entry.error,
        attempts=1,
        first_failed_at=now,
        last_failed_at=now,
        next_attempt_at=now + RETRY,
    )
    assert entry.received_at is not None
    assert entry.error.error_type == "MessageRejectedError"
    assert entry.error.server_code == "NO"
    assert entry.explanation.startswith("cannot fetch the message")
    assert _keywords(world) == {1: {TRACKED}, 2: frozenset(), 3: {TRACKED}}


async def test_a_quarantined_message_is_retried_on_schedule_and_stored_once_when_it_succeeds() -> (
    None
):
    world, _ = _world()
    world.deliver(ALICE, _message(1))
    world.server.faults.fail_next("fetch_message", MessageRejectedError("busy item"), times=2)

    first = await _cycle(world)
    assert _items(first) == [("order 1", OutcomeKind.FAILED)]

    world.clock.advance(CYCLE)
    early = await _cycle(world)
    assert _items(early) == [], "not retried before its next attempt time"
    world.clock.advance(CYCLE)
    assert _items(await _cycle(world)) == []

    world.clock.advance(CYCLE)  # 15 minutes after the failure
    second = await _cycle(world)
    assert _items(second) == [("order 1", OutcomeKind.FAILED)]
    assert "attempt 2 of 5" in next(second.items()).explanation
    (entry,) = await _quarantine(world)
    assert entry.attempts == 2
    assert entry.first_failed_at == world.clock.now() - RETRY
    assert entry.next_attempt_at == world.clock.now() + RETRY

    for _ in range(3):
        world.clock.advance(CYCLE)
        third = await _cycle(world)
    assert _items(third) == [("order 1", OutcomeKind.TRACKED)]
    assert "from the quarantine, attempt 3" in next(third.items()).explanation
    assert await _quarantine(world) == (), "released once it succeeded"
    assert [a.subject for a in world.storage.activities()] == ["order 1"]
    assert _keywords(world) == {1: {TRACKED}}

    world.clock.advance(RETRY)
    assert _items(await _cycle(world)) == [], "a released message is not tried again"
    assert len(world.storage.activities()) == 1


async def test_a_message_stored_but_not_tagged_is_released_as_a_duplicate_on_retry() -> None:
    world, _ = _world()
    world.deliver(ALICE, _message(1))
    world.server.faults.fail_next("mark", MessageRejectedError("STORE refused"))

    first = await _cycle(world)

    (failed,) = first.items()
    assert failed.kind is OutcomeKind.FAILED
    assert failed.explanation.startswith("cannot process the message")
    assert len(world.storage.activities()) == 1, "the email was stored before tagging failed"

    world.clock.advance(RETRY)
    second = await _cycle(world)

    (retried,) = second.items()
    assert retried.kind is OutcomeKind.DUPLICATE, "dedupe keeps the retry from storing it twice"
    assert len(world.storage.activities()) == 1
    assert _keywords(world) == {1: {TRACKED}}
    assert await _quarantine(world) == ()


async def test_a_message_that_never_parses_is_given_up_after_five_attempts() -> None:
    world, _ = _world()
    world.deliver(ALICE, NO_HEADERS)
    world.deliver(ALICE, _message(1))

    first = await _cycle(world)
    assert _items(first) == [(None, OutcomeKind.FAILED), ("order 1", OutcomeKind.TRACKED)]

    attempts_seen = [1]
    for attempt in range(2, 6):
        world.clock.advance(RETRY)
        report = await _cycle(world)
        (outcome,) = report.items()
        assert outcome.kind is OutcomeKind.FAILED
        assert outcome.error is not None
        assert outcome.error.error_type == "MalformedMessageError"
        (entry,) = await _quarantine(world)
        attempts_seen.append(entry.attempts)
        if attempt < 5:
            assert UNDELIVERABLE not in _keywords(world)[1], "tagged only when given up"
    assert attempts_seen == [1, 2, 3, 4, 5]
    assert "given up after 5 attempts, tagged Undeliverable" in outcome.explanation
    assert entry.given_up
    assert entry.given_up_at == world.clock.now()
    assert entry.next_attempt_at is None
    assert _keywords(world) == {1: {UNDELIVERABLE}, 2: {TRACKED}}

    world.clock.advance(timedelta(hours=2))
    assert _items(await _cycle(world)) == [], "a given-up message is not tried again"
    assert await _quarantine(world) == (entry,), "it stays listed as given up"


async def test_a_given_up_message_moves_to_the_undeliverable_folder_when_the_profile_asks() -> None:
    world = InMemoryWorld(
        profile=a_profile(move_undelivered_emails=True),
        settings=SyncSettings(retry=RetryPolicy(quarantine_max_attempts=2)),
    )
    world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    world.deliver(ALICE, NO_HEADERS)

    await _cycle(world)
    assert [m.uid for m in world.server.messages(ALICE)] == [1], "still in the Inbox"
    world.clock.advance(RETRY)
    await _cycle(world)

    assert world.server.messages(ALICE) == []
    (moved,) = world.server.messages(ALICE, "Undeliverable")
    assert moved.data == NO_HEADERS
    assert moved.keywords == {UNDELIVERABLE}
    (entry,) = await _quarantine(world)
    assert entry.given_up
    assert entry.attempts == 2


async def test_a_quarantined_message_gone_from_the_server_is_released_with_a_note() -> None:
    world, _ = _world()
    world.deliver(ALICE, NO_HEADERS)
    await _cycle(world)
    assert len(await _quarantine(world)) == 1

    world.server.expunge(ALICE, 1)
    world.clock.advance(RETRY)
    report = await _cycle(world)

    (outcome,) = report.items()
    assert outcome.kind is OutcomeKind.SKIPPED
    assert outcome.explanation == "quarantined message released: no longer on the server"
    assert await _quarantine(world) == ()


async def test_a_reference_that_now_names_another_message_releases_the_entry() -> None:
    world, _ = _world()
    world.deliver(ALICE, _message(1))
    world.deliver(ALICE, _message(2))
    world.server.faults.fail_next("fetch_message", MessageRejectedError("refused"))
    await _cycle(world)
    (entry,) = await _quarantine(world)
    assert (entry.remote_id, entry.subject) == ("1", "order 1")

    # The server is rebuilt without it: "order 2" becomes UID 1 under a new UIDVALIDITY.
    world.server.expunge(ALICE, 1)
    world.server.change_uidvalidity(ALICE)
    world.clock.advance(RETRY)
    report = await _cycle(world)

    released, relisted = report.items()
    assert released.kind is OutcomeKind.SKIPPED
    assert "now names another message (<order-2@fabrikam.example>)" in released.explanation
    assert (relisted.subject, relisted.kind) == ("order 2", OutcomeKind.DUPLICATE)
    assert await _quarantine(world) == ()
    assert [a.subject for a in world.storage.activities()] == ["order 2"]


class _RefusingStore(PermanentError):
    """What a host's store raises for one email it refuses (a CRM plug-in failing, say)."""

    default_scope = ErrorScope.ITEM


async def test_an_email_the_store_refuses_alone_is_quarantined_and_stored_later() -> None:
    world, _ = _world()
    world.deliver(ALICE, _message(1))
    world.deliver(ALICE, _message(2))
    world.storage.faults.fail_next("add_incoming", _RefusingStore("plug-in failed"))

    first = await _cycle(world)

    assert _items(first) == [("order 1", OutcomeKind.FAILED), ("order 2", OutcomeKind.TRACKED)]
    failed = next(first.items())
    assert failed.explanation.startswith("cannot store the email: plug-in failed")
    assert failed.message_id == "<order-1@fabrikam.example>"
    assert failed.trace, "the decision that led to storing it is kept"
    assert _keywords(world) == {1: frozenset(), 2: {TRACKED}}, "not tagged before it is stored"

    world.clock.advance(RETRY)
    second = await _cycle(world)

    assert _items(second) == [("order 1", OutcomeKind.TRACKED)]
    assert sorted(a.subject for a in world.storage.activities()) == ["order 1", "order 2"]
    assert await _quarantine(world) == ()


async def test_a_store_failing_for_the_whole_mailbox_is_not_quarantined() -> None:
    world, mailbox = _world()
    world.deliver(ALICE, _message(1))
    world.storage.faults.fail_next("add_incoming", ConnectionFailedError("database down"))

    report = await _cycle(world)

    assert report.mailboxes[0].status is RunStatus.FAILED
    assert await _quarantine(world) == ()
    assert await world.storage.load_checkpoint(mailbox.id, INBOX) is None, (
        "the cursor stays before a message the store could not take for the mailbox"
    )


async def test_a_message_quarantined_just_before_a_crash_is_tried_once_per_cycle() -> None:
    world, mailbox = _world()
    world.deliver(ALICE, NO_HEADERS)
    # Die after the message was quarantined, before the cursor moved past it.
    world.storage.faults.fail_next("save_checkpoint", SimulatedCrash())

    with pytest.raises(BaseExceptionGroup) as crashed:
        await _cycle(world)
    assert crashed.group_contains(SimulatedCrash)
    assert await world.storage.load_checkpoint(mailbox.id, INBOX) is None
    (entry,) = await _quarantine(world)
    assert entry.attempts == 1

    world.clock.advance(RETRY)  # due again, and listed again: one attempt, not two
    report = await _cycle(world)

    assert _items(report) == [(None, OutcomeKind.FAILED)]
    (entry,) = await _quarantine(world)
    assert entry.attempts == 2
    assert await _last_uid(world, mailbox) == 1


async def test_an_operator_retries_a_given_up_message_and_discards_it() -> None:
    world, mailbox = _world(retry=RetryPolicy(quarantine_max_attempts=1))
    world.deliver(ALICE, NO_HEADERS)
    world.deliver(ALICE, NO_HEADERS)
    await _cycle(world)
    entries = await _quarantine(world)
    assert [(e.remote_id, e.given_up) for e in entries] == [("1", True), ("2", True)]

    async with world.engine() as engine:
        retried = await engine.retry_quarantined(mailbox.id, remote_id="1")
        assert [(e.remote_id, e.next_attempt_at, e.given_up) for e in retried] == [
            ("1", world.clock.now(), False)
        ]
        assert await engine.retry_quarantined(mailbox.id, folder="Archive") == ()

    world.clock.advance(CYCLE)
    report = await _cycle(world)
    (outcome,) = report.items()
    assert (outcome.remote_id, outcome.kind) == ("1", OutcomeKind.FAILED)
    first, second = await _quarantine(world)
    assert (first.attempts, first.given_up, first.given_up_at) == (2, True, world.clock.now())
    assert second.attempts == 1, "the other message was not retried"

    async with world.engine() as engine:
        discarded = await engine.discard_quarantined(mailbox.id, folder=INBOX, remote_id="2")
        assert [e.remote_id for e in discarded] == ["2"]
        assert [e.remote_id for e in await engine.quarantine(mailbox.id)] == ["1"]
        everything = await engine.discard_quarantined(None)
        assert [e.remote_id for e in everything] == ["1"]
        assert await engine.quarantine() == ()
    assert [m.uid for m in world.server.messages(ALICE)] == [1, 2], "discarding leaves the mail"


def _failed(**fields: object) -> ItemOutcome:
    values: dict[str, object] = {
        "mailbox_id": MailboxId("mailbox:alice@contoso.example"),
        "folder": INBOX,
        "remote_id": "7",
        "kind": OutcomeKind.FAILED,
        "explanation": "unreadable message: boom",
        "error": ErrorRecord(
            error_type="MalformedMessageError", message="boom", transient=False, scope="item"
        ),
    }
    values.update(fields)
    return ItemOutcome(**values)  # type: ignore[arg-type]


def test_a_later_failure_counts_an_attempt_and_keeps_what_was_known_of_the_message() -> None:
    policy = RetryPolicy(quarantine_max_attempts=3, quarantine_retry_interval=timedelta(hours=1))
    start = FakeClock().now()
    first = quarantine_after_failure(
        None,
        _failed(message_id=MessageId("<m@x>"), subject="hello", sender=JANE),
        received_at=start - timedelta(days=1),
        now=start,
        policy=policy,
    )
    assert (first.attempts, first.next_attempt_at, first.given_up) == (
        1,
        start + timedelta(hours=1),
        False,
    )

    later = start + timedelta(hours=1)
    # This time the headers could not be read at all: the entry keeps what it knew.
    second = quarantine_after_failure(
        first, _failed(explanation="unreadable headers"), received_at=None, now=later, policy=policy
    )
    assert second.attempts == 2
    assert (second.message_id, second.subject, second.sender) == ("<m@x>", "hello", JANE)
    assert second.received_at == first.received_at
    assert (second.first_failed_at, second.last_failed_at) == (start, later)
    assert second.explanation == "unreadable headers", "the latest failure is described"

    end = later + timedelta(hours=1)
    third = quarantine_after_failure(second, _failed(), received_at=None, now=end, policy=policy)
    assert (third.attempts, third.next_attempt_at, third.given_up_at) == (3, None, end)
    fourth = quarantine_after_failure(
        third, _failed(), received_at=None, now=end + timedelta(days=1), policy=policy
    )
    assert (fourth.attempts, fourth.given_up_at) == (4, end), "given up once, at its time"
