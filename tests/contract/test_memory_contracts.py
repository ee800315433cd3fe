"""The contract checks on the in-memory adapters, and proof that the checks can fail."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest

from serversync.model import (
    AddResult,
    Checkpoint,
    Created,
    Credentials,
    EmailActivity,
    EmailServerProfile,
    IncomingBatch,
    Mailbox,
    RecordRef,
    Secret,
)
from serversync.ports import IncomingMailSession, IncomingMailTransport, Repositories
from serversync.testing import (
    InMemoryIncomingTransport,
    InMemoryMailServer,
    InMemoryOutgoingTransport,
    InMemoryStorage,
    a_mailbox,
    a_profile,
)
from serversync.testing.contracts import (
    MailboxFixture,
    check_incoming_transport,
    check_outgoing_transport,
    check_repositories,
)


@attrs.define
class MemoryRepositoryHarness:
    storage: InMemoryStorage = attrs.Factory(InMemoryStorage)

    @property
    def repositories(self) -> Repositories:
        return self.storage

    async def seed(
        self,
        *,
        profiles: Sequence[EmailServerProfile] = (),
        mailboxes: Sequence[Mailbox] = (),
        activities: Sequence[EmailActivity] = (),
    ) -> None:
        for profile in profiles:
            self.storage.add_profile(profile)
        for mailbox in mailboxes:
            self.storage.add_mailbox(mailbox)
        for activity in activities:
            self.storage.put_activity(activity)


async def fresh_memory_store() -> MemoryRepositoryHarness:
    return MemoryRepositoryHarness()


@attrs.define
class MemoryIncomingHarness:
    server: InMemoryMailServer = attrs.Factory(InMemoryMailServer)
    transport: IncomingMailTransport = attrs.field(init=False)
    _count: int = 0

    def __attrs_post_init__(self) -> None:
        self.transport = InMemoryIncomingTransport(self.server)

    async def new_mailbox(self) -> MailboxFixture:
        self._count += 1
        address = f"contract{self._count}@memory.test"
        self.server.add_account(address, "right")
        return MailboxFixture(
            mailbox=a_mailbox(address),
            profile=a_profile(),
            credentials=Credentials(username=address, secret=Secret("right")),
            wrong_credentials=Credentials(username=address, secret=Secret("wrong")),
        )

    async def deliver(self, fixture: MailboxFixture, data: bytes) -> None:
        self.server.deliver(fixture.mailbox.email_address, data)


@attrs.define
class MemoryOutgoingHarness:
    server: InMemoryMailServer = attrs.Factory(InMemoryMailServer)
    refused_address: str | None = "refused@contract.test"

    def __attrs_post_init__(self) -> None:
        if self.refused_address is not None:
            self.server.refuse_recipient(self.refused_address)

    @property
    def transport(self) -> InMemoryOutgoingTransport:
        return InMemoryOutgoingTransport(self.server)

    async def new_mailbox(self) -> MailboxFixture:
        self.server.add_account("sender@memory.test", "right")
        return MailboxFixture(
            mailbox=a_mailbox("sender@memory.test"),
            profile=a_profile(),
            credentials=Credentials(username="sender@memory.test", secret=Secret("right")),
            wrong_credentials=Credentials(username="sender@memory.test", secret=Secret("nope")),
        )

    async def accepted(self) -> Sequence[tuple[tuple[str, ...], bytes]]:
        return [(m.recipients, m.data) for m in self.server.outbox]


async def test_in_memory_storage_keeps_the_repository_contract() -> None:
    await check_repositories(fresh_memory_store)


async def test_in_memory_transport_keeps_the_incoming_contract() -> None:
    await check_incoming_transport(MemoryIncomingHarness())


async def test_in_memory_transport_keeps_the_outgoing_contract() -> None:
    await check_outgoing_transport(MemoryOutgoingHarness())


# --- deliberately broken adapters: the checks must catch each of them ----------------------


class _Delegating:
    """Forwards every repository call to a real in-memory store, except what a test breaks."""

    def __init__(self) -> None:
        self.inner = InMemoryStorage()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class NoDedupeStorage(_Delegating):
    async def add_incoming(
        self, activity: EmailActivity, *, queues: Collection[RecordRef] = ()
    ) -> AddResult:
        # Forgets the organisation-wide (Message-ID, direction) key.
        self.inner._activities[activity.id] = activity
        self.inner._inserted[activity.id] = len(self.inner._inserted)
        return Created(activity_id=activity.id)


class DoubleClaimStorage(_Delegating):
    async def claim_pending_send(self, *args: Any, **kwargs: Any) -> Any:
        claims = await self.inner.claim_pending_send(*args, **kwargs)
        # Hands the same emails out again, as a store without row locks would.
        for claim in claims:
            self.inner._activities[claim.activity.id] = attrs.evolve(
                claim.activity, status=claim.activity.status.PENDING_SEND
            )
        return claims


class StuckLeaseStorage(_Delegating):
    async def try_acquire_lease(self, key: str, **kwargs: Any) -> bool:
        return True  # everyone gets every lease


@attrs.define
class _Wrapped:
    store: _Delegating
    harness: MemoryRepositoryHarness

    @property
    def repositories(self) -> Repositories:
        return self.store

    async def seed(self, **rows: Any) -> None:
        await self.harness.seed(**rows)


@pytest.mark.parametrize(
    ("broken", "complaint"),
    [
        (NoDedupeStorage, "AlreadyExists"),
        (DoubleClaimStorage, "claim it twice"),
        (StuckLeaseStorage, "another owner"),
    ],
)
async def test_repository_contract_catches_a_broken_store(
    broken: type[_Delegating], complaint: str
) -> None:
    async def factory() -> Any:
        store = broken()
        return _Wrapped(store, MemoryRepositoryHarness(storage=store.inner))

    with pytest.raises(AssertionError, match=complaint):
        await check_repositories(factory)


class _ForgetfulSession:
    """Ignores the cursor: lists every message every time."""

    def __init__(self, inner: IncomingMailSession) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def list_new(
        self, folder: str, checkpoint: Checkpoint | None, *, limit: int
    ) -> IncomingBatch:
        return await self._inner.list_new(folder, None, limit=limit)


class ForgetfulTransport:
    def __init__(self, inner: IncomingMailTransport) -> None:
        self._inner = inner

    @asynccontextmanager
    async def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AsyncIterator[IncomingMailSession]:
        async with self._inner.open(mailbox, profile, credentials) as session:
            yield _ForgetfulSession(session)


async def test_incoming_contract_catches_a_transport_that_ignores_cursors() -> None:
    harness = MemoryIncomingHarness()
    harness.transport = ForgetfulTransport(harness.transport)
    with pytest.raises(AssertionError, match="nothing is new"):
        await check_incoming_transport(harness)


async def test_outgoing_contract_catches_a_transport_that_drops_mail() -> None:
    harness = MemoryOutgoingHarness()

    class Dropping(MemoryOutgoingHarness):
        async def accepted(self) -> Sequence[tuple[tuple[str, ...], bytes]]:
            return list(await super().accepted())[:-1]

    dropping = Dropping(server=harness.server, refused_address=None)
    with pytest.raises(AssertionError, match="the server got"):
        await check_outgoing_transport(dropping)
