"""The SQL store beyond the contract: its schema migrations, and several stores (as several
processes would have) racing on one database."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection

from serversync.adapters.storage.sql._database import configure_sqlite_connection
from serversync.errors import ConfigurationError
from serversync.model import (
    ActivityId,
    Created,
    CrmRecord,
    EmailActivity,
    EmailDirection,
    EmailStatus,
    MessageId,
    RecordRef,
    SenderRecordRequest,
)
from serversync.sql import SqlDirectory, SqlStorage, schema_head
from serversync.testing import a_mailbox, a_pending_email
from tests.conftest import Postgres

pytestmark = pytest.mark.integration

_T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database without any schema, in each dialect."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    postgres: Postgres = request.getfixturevalue("postgres")
    return postgres.empty_database()


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[list[SqlStorage]]:
    """Four stores on one migrated database: four engine processes' view of it."""
    first = await SqlStorage.open(database_url, upgrade=True)
    opened = [first] + [await SqlStorage.open(database_url) for _ in range(3)]
    yield opened
    for store in opened:
        await store.aclose()


def _differences(connection: Connection) -> list[object]:
    from serversync.adapters.storage.sql._database import VERSION_TABLE
    from serversync.adapters.storage.sql._schema import metadata

    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return list(compare_metadata(context, metadata))


async def test_a_store_without_the_schema_names_the_upgrade_command(database_url: str) -> None:
    with pytest.raises(ConfigurationError, match="serversync db upgrade"):
        await SqlStorage.open(database_url)


async def test_migrations_build_exactly_the_schema_the_code_uses(database_url: str) -> None:
    store = await SqlStorage.open(database_url, upgrade=True)
    try:
        async with store.engine.connect() as connection:
            differences = await connection.run_sync(_differences)
        assert differences == [], f"a schema change lacks its migration: {differences}"
        again = await SqlStorage.open(database_url, upgrade=True)
        await again.aclose()
        reopened = await SqlStorage.open(database_url)
        await reopened.aclose()
        assert schema_head() == "0004"
    finally:
        await store.aclose()


async def test_sqlite_looks_conversation_indexes_up_on_their_index_after_analyze(
    tmp_path: Path,
) -> None:
    path = tmp_path / "analyzed.db"
    store = await SqlStorage.open(f"sqlite:///{path}", upgrade=True)
    await store.aclose()
    with contextlib.closing(sqlite3.connect(path)) as db:
        # Emails without a conversation index, as most are; then the statistics.
        db.executemany(
            "INSERT INTO serversync_activities (id, direction, status, message_id, data) "
            "VALUES (?, 1, 1, ?, '{}')",
            [(f"e{n}", f"<e{n}@analyzed.test>") for n in range(2000)],
        )
        db.commit()
        db.execute("ANALYZE")
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT data FROM serversync_activities "
            "WHERE conversation_index_hash IN (1, 2, 3) ORDER BY seq"
        ).fetchall()
    details = " ".join(str(row[-1]) for row in plan)
    assert "USING INDEX ix_serversync_activities_conversation_index_hash_present" in details, (
        f"the lookup scans the table: {details}"
    )


async def test_concurrent_upgrades_of_one_database_all_succeed(database_url: str) -> None:
    opened = await asyncio.gather(*(SqlStorage.open(database_url, upgrade=True) for _ in range(4)))
    for store in opened:
        await store.aclose()
    checked = await SqlStorage.open(database_url)
    await checked.aclose()


def test_connections_opening_a_new_sqlite_file_at_once_all_turn_it_to_wal(
    tmp_path: Path,
) -> None:
    """SQLite refuses all but one of several WAL switches racing on a new file at once,
    without waiting in its busy handler; about one round in five of four openers saw it."""
    failures: list[str] = []

    def open_and_configure(path: Path, start: threading.Barrier) -> None:
        connection = sqlite3.connect(path)
        try:
            start.wait()
            configure_sqlite_connection(connection)
            mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":
                failures.append(f"{path.name}: journal mode {mode}")
        except sqlite3.Error as exc:
            failures.append(f"{path.name}: {exc}")
        finally:
            connection.close()

    for round_ in range(50):
        path = tmp_path / f"new-{round_}.db"
        start = threading.Barrier(4)
        openers = [
            threading.Thread(target=open_and_configure, args=(path, start)) for _ in range(4)
        ]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join(timeout=60)

    assert failures == []


async def test_one_incoming_email_wins_across_stores(stores: list[SqlStorage]) -> None:
    copies = [
        EmailActivity(
            id=ActivityId(f"copy-{n}"),
            direction=EmailDirection.INCOMING,
            status=EmailStatus.RECEIVED,
            message_id=MessageId("<same@race.test>"),
            received_on=_T0,
        )
        for n in range(12)
    ]
    results = await asyncio.gather(
        *(stores[n % len(stores)].add_incoming(copy) for n, copy in enumerate(copies))
    )
    winners = [r.activity_id for r in results if isinstance(r, Created)]
    assert len(winners) == 1
    assert {r.activity_id for r in results} == set(winners)
    assert len(await stores[0].activities()) == 1


async def test_claims_across_stores_hand_out_each_email_once(stores: list[SqlStorage]) -> None:
    sender = a_mailbox("sender@race.test")
    await stores[0].add_mailbox(sender)
    for n in range(30):
        await stores[0].put_activity(
            a_pending_email(sender_mailbox=sender, to=["x@race.test"], subject=f"race {n}")
        )
    until = _T0 + timedelta(minutes=10)

    async def drain(store: SqlStorage, owner: str) -> list[ActivityId]:
        taken: list[ActivityId] = []
        while claims := await store.claim_pending_send(
            sender.id, owner=owner, now=_T0, until=until, limit=3
        ):
            taken += [c.activity.id for c in claims]
        return taken

    batches = await asyncio.gather(*(drain(s, f"engine-{n}") for n, s in enumerate(stores)))
    taken = [activity_id for batch in batches for activity_id in batch]
    assert len(taken) == 30
    assert len(set(taken)) == 30, "an email was claimed twice"


async def test_leases_across_stores_have_one_holder(stores: list[SqlStorage]) -> None:
    until = _T0 + timedelta(minutes=5)
    for round_ in range(5):
        key = f"mailbox-{round_}/incoming"
        won = await asyncio.gather(
            *(
                s.try_acquire_lease(key, owner=f"engine-{n}", now=_T0, until=until)
                for n, s in enumerate(stores)
            )
        )
        assert won.count(True) == 1, f"round {round_}: {won}"
        holder = await stores[0].get_lease_holder(key, now=_T0)
        assert holder == f"engine-{won.index(True)}"


async def test_tracking_numbers_across_stores_are_distinct(stores: list[SqlStorage]) -> None:
    users = [RecordRef("systemuser", f"user-{n}") for n in range(6)]
    numbers = await asyncio.gather(
        *(stores[n % len(stores)].allocate_tracking_numbers(u) for n, u in enumerate(users * 2))
    )
    counters = [n.counter for n in numbers]
    assert sorted(counters) == list(range(1, 13)), "the counter grows by one per email"
    per_user: dict[RecordRef, set[int]] = {}
    for user, allocated in zip(users * 2, numbers, strict=True):
        per_user.setdefault(user, set()).add(allocated.user_number)
    assert all(len(found) == 1 for found in per_user.values()), "a user keeps one number"
    assert len({next(iter(found)) for found in per_user.values()}) == len(users)


async def test_the_directory_resolves_addresses_without_case(stores: list[SqlStorage]) -> None:
    directory = SqlDirectory(stores[0])
    contact = CrmRecord(ref=RecordRef("contact", "c1"), email_address="Ann@Example.test")
    account = CrmRecord(ref=RecordRef("account", "a1"), email_address="ann@example.test")
    await directory.add(contact)
    await directory.add(account)
    await directory.add(attrs.evolve(account, name="Renamed"))
    found = await SqlDirectory(stores[1]).find_by_addresses(["ANN@example.test", "x@y.test"])
    assert found == {"ann@example.test": (contact, attrs.evolve(account, name="Renamed"))}
    assert await directory.get_record(contact.ref) == contact
    assert await directory.get_record(RecordRef("contact", "missing")) is None


async def test_records_for_an_unknown_sender_are_created_once_across_stores(
    stores: list[SqlStorage],
) -> None:
    owner = RecordRef("systemuser", "u1")
    request = SenderRecordRequest(
        entity="contact", email_address="Pat@Unknown.example", name="Pat", owner=owner
    )
    created = await asyncio.gather(
        *(SqlDirectory(store).create_sender_record(request) for store in stores)
    )
    assert len({record.ref for record in created}) == 1, "every store answers the same record"
    (record,) = (await SqlDirectory(stores[0]).find_by_addresses(["pat@unknown.example"]))[
        "pat@unknown.example"
    ]
    assert record == created[0]
    assert (record.name, record.owner, record.ref.entity) == ("Pat", owner, "contact")
    # An existing record answers for its address: no lead is added next to the contact.
    lead = attrs.evolve(request, entity="lead")
    assert await SqlDirectory(stores[1]).create_sender_record(lead) == record
