"""The quarantine part of ``check_repositories`` catches stores that break its promises."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import attrs
import pytest

from serversync.model import MailboxId, QuarantinedMessage
from serversync.ports import Repositories
from serversync.testing import InMemoryStorage
from serversync.testing.contracts import check_repositories
from tests.contract.test_memory_contracts import MemoryRepositoryHarness


class _Delegating:
    """A real in-memory store, but for the one quarantine method a test breaks."""

    def __init__(self) -> None:
        self.inner = InMemoryStorage()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class AppendingStore(_Delegating):
    """Keeps every version of an entry instead of replacing it."""

    def __init__(self) -> None:
        super().__init__()
        self.versions: list[QuarantinedMessage] = []

    async def quarantine(self, message: QuarantinedMessage) -> None:
        self.versions.append(message)
        await self.inner.quarantine(message)

    async def list_quarantine(
        self, mailbox_id: MailboxId | None = None
    ) -> Sequence[QuarantinedMessage]:
        listed = await self.inner.list_quarantine(mailbox_id)
        kept = {(q.mailbox_id, q.folder, q.remote_id) for q in listed}
        return sorted(
            (q for q in self.versions if (q.mailbox_id, q.folder, q.remote_id) in kept),
            key=lambda q: (q.mailbox_id, q.first_failed_at, q.folder, q.remote_id),
        )


class GivenUpIsDueStore(_Delegating):
    """Forgets that a given-up entry is never due (a query on the time alone)."""

    async def due_quarantine(
        self, mailbox_id: MailboxId, *, now: datetime, limit: int
    ) -> Sequence[QuarantinedMessage]:
        entries = await self.inner.list_quarantine(mailbox_id)
        due = [q for q in entries if q.given_up or (q.next_attempt_at or now) <= now]
        return due[:limit]


class FolderBlindStore(_Delegating):
    """Keys entries by mailbox and remote id only, forgetting the folder."""

    async def release_quarantine(self, mailbox_id: MailboxId, folder: str, remote_id: str) -> bool:
        released = False
        for entry in await self.inner.list_quarantine(mailbox_id):
            if entry.remote_id == remote_id:
                released |= await self.inner.release_quarantine(mailbox_id, entry.folder, remote_id)
        return released


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
        (AppendingStore, "replacing an entry must not add one"),
        (GivenUpIsDueStore, "nothing is due yet"),
        (FolderBlindStore, "same remote id in another folder alone"),
    ],
)
async def test_the_quarantine_contract_catches_a_broken_store(
    broken: type[_Delegating], complaint: str
) -> None:
    async def factory() -> Any:
        store = broken()
        return _Wrapped(store, MemoryRepositoryHarness(storage=store.inner))

    with pytest.raises(AssertionError, match=complaint):
        await check_repositories(factory)
