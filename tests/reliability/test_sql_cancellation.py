"""Cancelling a store call in flight, as the engine does with a lease renewal when a workload
ends. Found in the crash trials' engine logs on PostgreSQL ("Future exception was never
retrieved ... unexpected connection_lost() call")."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from serversync.adapters.storage.sql._database import PG_COMMAND_TIMEOUT, url_with_driver
from serversync.sql import SqlStorage
from tests.conftest import Postgres

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)


async def test_cancelling_a_lease_renewal_in_flight_leaves_no_unretrieved_error(
    postgres: Postgres,
) -> None:
    reported: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: reported.append(str(context.get("message"))))
    storage = await SqlStorage.open(postgres.fresh_database())
    rng = random.Random(7)

    async def renew_forever() -> None:
        while True:
            now = datetime.now(UTC)
            until = now + timedelta(seconds=1)
            await storage.try_acquire_lease("mailbox-1/incoming", owner="e", now=now, until=until)

    try:
        for _ in range(100):
            renewal: asyncio.Task[Any] = asyncio.ensure_future(renew_forever())
            await asyncio.sleep(rng.uniform(0, 0.01))
            renewal.cancel()
            with pytest.raises(asyncio.CancelledError):
                await renewal
        gc.collect()
        await asyncio.sleep(0.05)
    finally:
        await storage.aclose()
        loop.set_exception_handler(None)

    assert reported == [], f"{len(reported)} errors reported to the event loop"


async def test_a_lease_released_after_its_renewal_was_cancelled_stays_released(
    postgres: Postgres,
) -> None:
    """The engine cancels a workload's lease renewal, then releases the lease. The cancelled
    renewal runs to its end; it must not take the lease again after the release."""
    storage = await SqlStorage.open(postgres.fresh_database())
    rng = random.Random(11)
    key = "mailbox-1/incoming"
    problems: list[str] = []
    try:
        for round_ in range(100):
            now = datetime.now(UTC)
            if not await storage.try_acquire_lease(key, owner="e", now=now, until=now + HOUR):
                problems.append(f"round {round_}: the free lease could not be taken")
            renewal = asyncio.ensure_future(
                storage.try_acquire_lease(key, owner="e", now=now, until=now + HOUR)
            )
            await asyncio.sleep(rng.uniform(0, 0.002))
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
            await storage.release_lease(key, owner="e")
            await asyncio.sleep(0.01)  # time for a stray renewal to take the lease again
            if await storage.get_lease_holder(key, now=datetime.now(UTC)) is not None:
                problems.append(f"round {round_}: the released lease is held again")
                await storage.release_lease(key, owner="e")
    finally:
        await storage.aclose()

    assert problems == [], "\n".join(problems)


async def test_a_call_abandoned_on_a_lock_it_never_gets_ends_with_the_statement_timeout(
    postgres: Postgres,
) -> None:
    """An abandoned call runs to its end and the store waits for it on close; a statement
    stuck on a lock held elsewhere ends at asyncpg's command timeout, not when the lock goes."""
    url = postgres.fresh_database()
    holder = create_async_engine(url_with_driver(url))
    storage = await SqlStorage.open(url, connect_args={"command_timeout": 0.5})
    try:
        async with holder.begin() as other:
            await other.execute(text("LOCK TABLE serversync_leases IN ACCESS EXCLUSIVE MODE"))
            now = datetime.now(UTC)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await storage.try_acquire_lease(
                        "mailbox-1/incoming", owner="e", now=now, until=now + HOUR
                    )
            started = time.monotonic()
            await asyncio.wait_for(storage.aclose(), timeout=10)
            closed_after = time.monotonic() - started
            # The lock is still held here: the abandoned call did not wait for it.
            locks = await other.scalar(
                text(
                    "SELECT count(*) FROM pg_locks WHERE granted"
                    " AND mode = 'AccessExclusiveLock'"
                    " AND relation = 'serversync_leases'::regclass"
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())"
                )
            )
    finally:
        await storage.aclose()
        await holder.dispose()

    assert closed_after < 5, f"closing waited {closed_after:.1f} s for the abandoned call"
    assert locks == 1, "the other connection's table lock"


async def test_postgres_statements_have_a_command_timeout_unless_the_host_sets_one(
    postgres: Postgres,
) -> None:
    async def command_timeout(**options: Any) -> float | None:
        storage = await SqlStorage.open(postgres.fresh_database(), **options)
        try:
            async with storage.engine.connect() as connection:
                raw = await connection.get_raw_connection()
                driver: Any = raw.driver_connection
                # asyncpg keeps it in its connection's configuration only.
                return cast(float | None, driver._config.command_timeout)
        finally:
            await storage.aclose()

    assert await command_timeout() == PG_COMMAND_TIMEOUT
    assert await command_timeout(connect_args={"command_timeout": 7}) == 7
    assert await command_timeout(connect_args={"command_timeout": None}) is None
