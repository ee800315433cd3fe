"""The quarantine on the SQL store, in SQLite and PostgreSQL: the migration that adds it to a
store of the first schema, and emails the store cannot hold failing as those messages alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection, inspect

from serversync import (
    IncomingFilteringMethod,
    OutcomeKind,
    RunStatus,
    Workload,
)
from serversync.adapters.storage.sql import _database
from serversync.errors import ConfigurationError
from serversync.sql import SqlDirectory, SqlStorage, schema_head
from serversync.testing import InMemoryWorld, a_mailbox, a_user, an_email
from tests.conftest import Postgres

pytestmark = pytest.mark.integration

ALICE = "alice@contoso.example"
JANE = "jane@fabrikam.example"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database without any schema, in each dialect."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    postgres: Postgres = request.getfixturevalue("postgres")
    return postgres.empty_database()


def _migrate(connection: Connection, revision: str) -> None:
    config = _database._alembic_config(connection)
    if revision == "0001" and inspect(connection).has_table("serversync_quarantine"):
        command.downgrade(config, revision)
    else:
        command.upgrade(config, revision)


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_a_store_of_the_first_schema_migrates_to_the_quarantine_and_back(
    database_url: str,
) -> None:
    engine = _database.connect(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_migrate, "0001")
        mailbox = a_mailbox(ALICE)
        await SqlStorage(engine).add_mailbox(mailbox)
    finally:
        await engine.dispose()

    with pytest.raises(ConfigurationError, match=rf"revision 0001, .* needs {schema_head()}"):
        await SqlStorage.open(database_url)
    store = await SqlStorage.open(database_url, upgrade=True)
    try:
        assert await store.get_mailbox(mailbox.id) == mailbox, "the upgrade keeps the rows"
        assert await store.list_quarantine() == []
        async with store.engine.begin() as connection:
            assert "serversync_quarantine" in await connection.run_sync(_tables)
            await connection.run_sync(_migrate, "0001")
            assert "serversync_quarantine" not in await connection.run_sync(_tables)
        assert await store.get_mailbox(mailbox.id) == mailbox, "the downgrade keeps the rest"
    finally:
        await store.aclose()


@pytest.fixture
async def sql_world(database_url: str) -> AsyncIterator[tuple[InMemoryWorld, SqlStorage]]:
    """Mail in memory; the CRM's rows and records in the SQL store."""
    world = InMemoryWorld()
    mailbox = world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    store = await SqlStorage.open(database_url, upgrade=True)
    await store.add_profile(world.profile)
    await store.add_mailbox(mailbox)
    directory = SqlDirectory(store)
    await directory.add(a_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES))
    yield world, store
    await store.aclose()


_NUL_EVERYWHERE = (
    b"From: ja\x00ne@fabrikam.example\r\nTo: alice@contoso.example, bob\x00@contoso.example\r\n"
    b"Subject: hostile\r\nMessage-ID: <everywhere@fabrikam.example>\r\n"
    b"References: <ref\x00@contoso.example>\r\n\r\nbody\r\n"
)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            an_email(
                sender=JANE,
                to=[ALICE],
                subject="hostile",
                message_id=f"<{'x' * 1200}@fabrikam.example>",
            ),
            "message_id has 1219 characters, more than the 1000",
        ),
        (
            an_email(
                sender=JANE,
                to=[ALICE],
                subject="hostile",
                message_id="<nul\x00inside@fabrikam.example>",
            ),
            "message_id holds a NUL character",
        ),
        (_NUL_EVERYWHERE, "holds a NUL character"),
    ],
    ids=["too-long", "nul-message-id", "nul-addresses-and-references"],
)
async def test_an_email_the_store_cannot_hold_is_quarantined_and_the_mailbox_goes_on(
    sql_world: tuple[InMemoryWorld, SqlStorage], message: bytes, reason: str
) -> None:
    world, store = sql_world
    world.deliver(ALICE, message)
    world.deliver(ALICE, an_email(sender=JANE, to=[ALICE], subject="fine"))

    async with world.engine(repositories=store, directory=SqlDirectory(store)) as engine:
        report = await engine.run_once(workloads=[Workload.INCOMING])
        entries = await engine.quarantine()

    assert report.mailboxes[0].status is RunStatus.SUCCEEDED, report.mailboxes[0].error
    hostile, fine = report.items()
    assert hostile.kind is OutcomeKind.FAILED
    assert hostile.error is not None
    assert hostile.error.error_type == "MalformedMessageError"
    assert reason in hostile.explanation
    assert fine.kind is OutcomeKind.TRACKED
    assert [a.subject for a in await store.activities()] == ["fine"]
    (entry,) = entries
    assert (entry.remote_id, entry.subject) == ("1", "hostile")
    assert entry.message_id == hostile.message_id
    assert entry.next_attempt_at == world.clock.now() + timedelta(minutes=15)
