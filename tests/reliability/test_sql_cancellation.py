"""Cancelling a store call in flight, as the engine does with a lease renewal when a workload
ends. Found in the crash trials' engine logs on PostgreSQL ("Future exception was never
retrieved ... unexpected connection_lost() call")."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

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
