"""Store calls that miss the engine's storage deadline: the engine gives up on them, but each
runs to its end and its transaction commits (see docs/sql-storage.md).

An incoming email must be stored once all the same: the next cycle finds its Message-ID (the
one derived from the headers, for a message without one) and only marks it. An outgoing
email whose claim commits late is left claimed but unsent: when the claim expires, it is
given back (it has no Message-ID yet, so no attempt was made) and sent once."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

from serversync import (
    EmailStatus,
    ExpiredClaimPolicy,
    IncomingFilteringMethod,
    OutcomeKind,
    RunStatus,
    Workload,
)
from serversync.model import EmailActivity, MailboxId, RecordRef, SendClaim
from serversync.sql import SqlDirectory, SqlStorage
from serversync.testing import InMemoryWorld, a_pending_email, a_user, an_email
from tests.conftest import Postgres

pytestmark = pytest.mark.integration

ALICE = "alice@contoso.example"
JANE = "jane@fabrikam.example"
DEADLINE = timedelta(seconds=1)
HELD = 1.4  # seconds the other writer holds the lock: past the deadline, within two


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    postgres: Postgres = request.getfixturevalue("postgres")
    return postgres.fresh_database()


async def _hold_writes(storage: SqlStorage, locked: asyncio.Event) -> None:
    """Another writer: SQLite's write lock, or PostgreSQL's lock on the activities, for HELD s."""
    async with storage.engine.connect() as connection:
        await connection.begin()  # BEGIN IMMEDIATE on SQLite: the write lock
        if connection.dialect.name == "postgresql":
            await connection.exec_driver_sql("LOCK TABLE serversync_activities IN EXCLUSIVE MODE")
        locked.set()
        await asyncio.sleep(HELD)
        await connection.rollback()


class _StoreBehindAnotherWriter:
    """The SQL store, whose first email stored or claimed (alone or with the expired claims)
    waits for another writer."""

    def __init__(self, inner: SqlStorage) -> None:
        self._inner = inner
        self.writer: asyncio.Task[None] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def _behind_the_writer(self) -> None:
        if self.writer is None:
            locked = asyncio.Event()
            self.writer = asyncio.create_task(_hold_writes(self._inner, locked))
            await locked.wait()

    async def add_incoming(
        self, activity: EmailActivity, *, queues: Collection[RecordRef] = ()
    ) -> Any:
        await self._behind_the_writer()
        return await self._inner.add_incoming(activity, queues=queues)

    async def claim_pending_send(
        self, mailbox_id: MailboxId, *, owner: str, now: datetime, until: datetime, limit: int
    ) -> Sequence[SendClaim]:
        await self._behind_the_writer()
        return await self._inner.claim_pending_send(
            mailbox_id, owner=owner, now=now, until=until, limit=limit
        )

    async def claim_pending_send_unless_expired(
        self, mailbox_id: MailboxId, *, owner: str, now: datetime, until: datetime, limit: int
    ) -> tuple[Sequence[SendClaim], Sequence[SendClaim]]:
        await self._behind_the_writer()
        return await self._inner.claim_pending_send_unless_expired(
            mailbox_id, owner=owner, now=now, until=until, limit=limit
        )


@pytest.mark.parametrize(
    "message_id", ["<late-commit@fabrikam.example>", ""], ids=["message-id", "no-message-id"]
)
async def test_an_email_stored_after_the_engine_gave_up_on_it_is_not_stored_again(
    database_url: str, message_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    world = InMemoryWorld()
    mailbox = world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    store = await SqlStorage.open(database_url, upgrade=True)
    try:
        await store.add_profile(world.profile)
        await store.add_mailbox(mailbox)
        directory = SqlDirectory(store)
        await directory.add(a_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES))
        world.deliver(ALICE, an_email(sender=JANE, to=[ALICE], message_id=message_id))
        slow = _StoreBehindAnotherWriter(store)
        settings = attrs.evolve(
            world.settings, timeouts=attrs.evolve(world.settings.timeouts, storage=DEADLINE)
        )

        async with world.engine(
            repositories=slow, directory=directory, settings=settings
        ) as engine:
            first = await engine.run_once(workloads=[Workload.INCOMING])
            assert slow.writer is not None
            await slow.writer
            stored_late = await _stored(store)
            world.clock.advance(timedelta(hours=1))  # past any back-off
            second = await engine.run_once(workloads=[Workload.INCOMING])
        stored = await _stored(store)
    finally:
        await store.aclose()

    (failed,) = first.mailboxes
    assert failed.status is RunStatus.FAILED
    assert failed.error is not None
    assert failed.error.error_type == "OperationTimeoutError"
    # The report keeps the last error: a later call may also have waited for the lock.
    assert "storing an incoming email did not finish within 1 s" in caplog.text
    assert len(stored_late) == 1, "the abandoned call committed after the engine gave up"
    (again,) = second.mailboxes
    assert again.status is RunStatus.SUCCEEDED, again.error
    (item,) = second.items()
    assert item.kind is OutcomeKind.DUPLICATE, item.explanation
    assert item.activity_id == stored_late[0].id
    assert stored == stored_late, "stored once"


async def _stored(store: SqlStorage) -> list[EmailActivity]:
    # Polled: on PostgreSQL the abandoned call commits in its own task just after the lock.
    for _ in range(100):
        found = await store.activities()
        if found:
            return found
        await asyncio.sleep(0.02)
    return []


@pytest.mark.parametrize("policy", list(ExpiredClaimPolicy))
async def test_an_email_claimed_after_the_engine_gave_up_on_it_is_never_sent_twice(
    database_url: str, policy: ExpiredClaimPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    world = InMemoryWorld()
    mailbox = world.add_user(ALICE)
    email = a_pending_email(sender_mailbox=mailbox, to=[JANE], subject="Quote")
    store = await SqlStorage.open(database_url, upgrade=True)
    try:
        await store.add_profile(world.profile)
        await store.add_mailbox(mailbox)
        directory = SqlDirectory(store)
        await directory.add(a_user(ALICE))
        await store.put_activity(email)
        slow = _StoreBehindAnotherWriter(store)
        settings = attrs.evolve(
            world.settings,
            timeouts=attrs.evolve(world.settings.timeouts, storage=DEADLINE),
            retry=attrs.evolve(world.settings.retry, expired_claim_policy=policy),
        )

        async with world.engine(
            repositories=slow, directory=directory, settings=settings
        ) as engine:
            first = await engine.run_once(workloads=[Workload.OUTGOING])
            assert slow.writer is not None
            await slow.writer
            claimed_late = await _status_after_the_writer(store, email)
            second = await engine.run_once(workloads=[Workload.OUTGOING])
            world.clock.advance(settings.retry.send_claim_duration + timedelta(minutes=1))
            after_expiry = await engine.run_once(workloads=[Workload.OUTGOING])
        settled = next(a for a in await store.activities() if a.id == email.id)
    finally:
        await store.aclose()

    (failed,) = first.mailboxes
    assert failed.status is RunStatus.FAILED
    assert failed.error is not None
    assert failed.error.error_type == "OperationTimeoutError"
    # The report keeps the last error: a later call may also have waited for the lock.
    assert "claiming an email to send did not finish within 1 s" in caplog.text
    assert claimed_late is EmailStatus.SENDING, "the abandoned claim committed"
    assert list(second.sends()) == [], "a claim that has not expired is left alone"
    # Whatever the policy: the claim expired before the email had a Message-ID, so before
    # any attempt to send it; it is given back without doubt, then sent once.
    statuses = [r.status for r in after_expiry.sends()]
    assert statuses == [EmailStatus.PENDING_SEND, EmailStatus.SENT]
    assert settled.status is EmailStatus.SENT
    assert not settled.delivery_uncertain
    assert settled.delivery_attempts == 1, "the expired claim is no attempt"
    assert len(world.server.outbox) == 1, "sent once"


async def _status_after_the_writer(store: SqlStorage, email: EmailActivity) -> EmailStatus:
    # Polled: on PostgreSQL the abandoned call commits in its own task just after the lock.
    status = email.status
    for _ in range(100):
        status = next(a for a in await store.activities() if a.id == email.id).status
        if status is not EmailStatus.PENDING_SEND:
            break
        await asyncio.sleep(0.02)
    return status
