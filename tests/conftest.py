"""Servers shared by every test folder (one throw-away PostgreSQL for the session) and the
Hypothesis settings."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from serversync.sql import SqlStorage
from tests.postgres_server import PostgresServer

_TEMPLATE = "serversync_template"

# The machines tests run on are shared and noisy: an example that runs slowly is not a
# failure (benchmarks measure speed), a wrong answer is.
hypothesis_settings.register_profile(
    "serversync", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# The long run: SERVERSYNC_HYPOTHESIS=long gives every property without its own
# max_examples (the parser fuzzing among them) 10,000 examples.
hypothesis_settings.register_profile(
    "long", parent=hypothesis_settings.get_profile("serversync"), max_examples=10_000
)
hypothesis_settings.load_profile(os.environ.get("SERVERSYNC_HYPOTHESIS", "serversync"))


class Postgres:
    """The session's PostgreSQL: fresh databases with the serversync schema in ~0.1 s each."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self._names = itertools.count(1)

    def fresh_database(self) -> str:
        """The URL of a new, empty database with the current schema."""
        return self.server.create_database(f"test_{next(self._names)}", template=_TEMPLATE)

    def empty_database(self) -> str:
        """The URL of a new database without any schema."""
        return self.server.create_database(f"bare_{next(self._names)}")


async def _migrate(url: str) -> None:
    storage = await SqlStorage.open(url, upgrade=True)
    await storage.aclose()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A running PostgreSQL and a migrated template database, for the whole session."""
    with PostgresServer() as server:
        template = server.create_database(_TEMPLATE)
        # A thread of its own: async tests may ask for this fixture while their loop runs.
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, _migrate(template)).result()
        yield Postgres(server)
