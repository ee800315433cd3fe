"""The repository contract on the SQL store: SQLite and PostgreSQL, one code path."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import attrs
import pytest

from serversync.model import EmailActivity, EmailServerProfile, Mailbox
from serversync.ports import Repositories
from serversync.sql import SqlStorage
from serversync.testing.contracts import RepositoryHarness, check_repositories
from tests.conftest import Postgres


@attrs.define
class SqlRepositoryHarness:
    storage: SqlStorage

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
            await self.storage.add_profile(profile)
        for mailbox in mailboxes:
            await self.storage.add_mailbox(mailbox)
        for activity in activities:
            await self.storage.put_activity(activity)


StoreFactory = Callable[[], Awaitable[RepositoryHarness]]


@pytest.fixture(params=["sqlite", "postgresql"])
async def fresh_sql_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    opened: list[SqlStorage] = []

    async def factory() -> RepositoryHarness:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / f'store-{len(opened)}.db'}"
        else:
            postgres: Postgres = request.getfixturevalue("postgres")
            url = postgres.fresh_database()
        storage = await SqlStorage.open(url, upgrade=request.param == "sqlite")
        opened.append(storage)
        return SqlRepositoryHarness(storage)

    yield factory
    for storage in opened:
        await storage.aclose()


async def test_sql_storage_keeps_the_repository_contract(fresh_sql_store: StoreFactory) -> None:
    await check_repositories(fresh_sql_store)
