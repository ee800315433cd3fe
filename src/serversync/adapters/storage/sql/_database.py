"""Connecting to SQLite or PostgreSQL, and bringing the schema up to date with Alembic."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from serversync.errors import ConfigurationError

__all__ = [
    "PG_COMMAND_TIMEOUT",
    "configure_sqlite_connection",
    "connect",
    "current_revision",
    "head_revision",
    "upgrade",
    "url_with_driver",
]

VERSION_TABLE = "serversync_schema_version"

_SCRIPT_LOCATION = "serversync.adapters.storage.sql:_migrations"

_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}

# Serialises schema upgrades of several processes starting at once on one PostgreSQL.
_UPGRADE_LOCK = 0x5E5E_5C01

# How long a SQLite writer waits for another connection's lock.
_SQLITE_BUSY_TIMEOUT_MS = 30_000
_WAL_RETRY_PAUSE = 0.005

# asyncpg waits for a statement's answer for ever unless told otherwise. A call the engine
# abandoned at its storage deadline runs to its end, and the calls after it wait for it, so a
# statement stuck on a lock or on a server that stopped answering would hold them all. Five
# minutes is far past any statement serversync makes, schema upgrades included.
PG_COMMAND_TIMEOUT = 300.0


def url_with_driver(url: str) -> str:
    """``url`` with the async driver serversync uses (``sqlite://`` → ``sqlite+aiosqlite://``)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in _DRIVERS:
        raise ConfigurationError(f"serversync stores data in SQLite or PostgreSQL, not {backend}")
    return parsed.set(drivername=_DRIVERS[backend]).render_as_string(hide_password=False)


def connect(url: str, **engine_options: Any) -> AsyncEngine:
    """An engine for ``url``; no connection is made yet.

    On PostgreSQL a statement gets :data:`PG_COMMAND_TIMEOUT` seconds unless
    ``connect_args`` names another ``command_timeout`` (``None`` for no limit).
    """
    url = url_with_driver(url)
    if make_url(url).get_backend_name() == "postgresql":
        connect_args = {"command_timeout": PG_COMMAND_TIMEOUT}
        connect_args.update(engine_options.get("connect_args", {}))
        engine_options = {**engine_options, "connect_args": connect_args}
    engine = create_async_engine(url, **engine_options)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: AsyncEngine) -> None:
    event.listen(engine.sync_engine, "connect", configure_sqlite_connection)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Every transaction takes the write lock up front: a read-then-write transaction
        # (a claim, an upsert) can then never fail half-way on a lock upgrade.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def configure_sqlite_connection(dbapi_connection: Any, _record: Any = None) -> None:
    """Set up a new SQLite connection (either driver) the way every serversync store uses
    it; a listener of SQLAlchemy's ``connect`` event."""
    # serversync, not the driver, issues BEGIN (deferred, or IMMEDIATE for writes).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout makes a writer wait for the lock (another process, another
        # connection) instead of failing at once; WAL lets readers go on while one writes.
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        _use_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _use_wal(cursor: Any) -> None:
    # Turning a new file to WAL takes an exclusive lock without SQLite's busy handler: of
    # several connections opening a new file at once, all but one may get "database is
    # locked" straight away. The switch happens once in a file's life, so retrying briefly
    # settles it (on aiosqlite this sleeps in the event loop's thread, only in that race).
    deadline = time.monotonic() + _SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(_WAL_RETRY_PAUSE)


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", _SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_UPGRADE_LOCK})")
    command.upgrade(_alembic_config(connection), "head")


def _revision(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


async def upgrade(engine: AsyncEngine) -> None:
    """Create the schema, or migrate it to the newest revision; safe to run concurrently."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema revision of the database, or ``None`` when it has no serversync schema."""
    async with engine.connect() as connection:
        return await connection.run_sync(_revision)


def head_revision() -> str | None:
    """The newest schema revision this version of serversync knows."""
    config = Config()
    config.set_main_option("script_location", _SCRIPT_LOCATION)
    return ScriptDirectory.from_config(config).get_current_head()
