"""Fresh, migrated stores for the crash trials: SQLite files and PostgreSQL databases."""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serversync.sql import SqlStorage

__all__ = ["StoreMaker", "postgres_databases"]


async def postgres_databases(server: Any) -> Callable[[], str]:
    """Migrate a template database once; each call then copies it (about 0.1 s)."""
    template = await asyncio.to_thread(server.create_database, "crash_template")
    storage = await SqlStorage.open(template, upgrade=True)
    await storage.aclose()
    names = itertools.count(1)

    def new() -> str:
        url: str = server.create_database(f"crash_{next(names)}", template="crash_template")
        return url

    return new


class StoreMaker:
    """Fresh, migrated stores: a copy of a migrated SQLite file, or a new PostgreSQL database
    from ``new_postgres`` (a function returning the URL of a migrated, empty database)."""

    def __init__(self, workdir: Path, template: Path, new_postgres: Callable[[], str] | None):
        self._workdir = workdir
        self._template = template
        self._new_postgres = new_postgres
        self._count = 0

    @classmethod
    async def create(cls, workdir: Path, new_postgres: Callable[[], str] | None) -> StoreMaker:
        template = workdir / "template.db"
        storage = await SqlStorage.open(f"sqlite:///{template}", upgrade=True)
        await storage.aclose()
        return cls(workdir, template, new_postgres)

    async def fresh(self, kind: str) -> str:
        """The URL of a new store of ``kind`` (``sqlite`` or ``postgresql``)."""
        self._count += 1
        if kind == "sqlite":
            path = self._workdir / f"store-{self._count}.db"
            shutil.copyfile(self._template, path)
            return f"sqlite:///{path}"
        assert self._new_postgres is not None, "no PostgreSQL for a postgresql trial"
        return await asyncio.to_thread(self._new_postgres)
