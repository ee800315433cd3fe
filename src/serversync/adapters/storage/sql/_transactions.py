"""Running each repository call as one transaction, as cheaply as the database allows.

PostgreSQL runs through the async engine (asyncpg). SQLite through ``aiosqlite`` costs a
hop between the event loop and the driver's thread for every cursor, statement, fetch,
close, BEGIN and COMMIT: eight for a one-row read, each a thread wake-up on both sides,
which made an idle mailbox's poll cost 90 ms of CPU. A file-backed SQLite store therefore
runs each call whole on a thread of its own, over the synchronous driver: one hop a call.

The call itself stays an ``async`` function of a connection (so both dialects share one
code path); on SQLite its awaits complete at once, and it is driven to its end on the
database thread.

A call whose caller is cancelled (a deadline, a workload that ends) runs to its end all the
same, and its transaction commits or rolls back whole: on SQLite in the database thread, on
PostgreSQL in a task of its own. Cancelling asyncpg mid-statement would make SQLAlchemy
terminate the connection, and asyncpg then leaves an error on a future nobody reads. Calls
made after one was abandoned start once it has ended, as on SQLite's one thread: a lease
released after its renewal was cancelled is not taken again by that renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, cast

import attrs
from sqlalchemy import Connection, create_engine, event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from serversync.adapters.storage.sql._database import configure_sqlite_connection

__all__ = ["Operation", "Transactions"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
Operation = Callable[[AsyncConnection], Awaitable[_T]]
"""One repository call's database work, given its connection."""

# Concurrent upserts of one new key collide once at most; a few rounds settle any race.
_ROUNDS = 5


class Transactions:
    """Runs operations as read or write transactions on ``engine``'s database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._thread: _SqliteThread | None = None
        # Transactions on the async engine, kept until they end (their callers may be gone).
        self._in_flight: set[asyncio.Task[Any]] = set()
        # Those whose callers were cancelled: the calls after them wait for them.
        self._abandoned: set[asyncio.Task[Any]] = set()
        url = engine.url
        if engine.dialect.name == "sqlite" and url.database not in (None, "", ":memory:"):
            self._thread = _SqliteThread(
                url.set(drivername="sqlite+pysqlite").render_as_string(hide_password=False)
            )

    async def read(self, operation: Operation[_T]) -> _T:
        """Run ``operation`` in a transaction that only reads (deferred on SQLite)."""
        if self._thread is not None:
            return await self._thread.run(operation, write=False)
        return await self._run_whole(operation, write=False)

    async def write(self, operation: Operation[_T], *, retry: bool = False) -> _T:
        """Run ``operation`` in a transaction that writes (it takes SQLite's write lock at
        its start, so a read-then-write never fails half-way on a lock upgrade). With
        ``retry``, run it again when a concurrent insert won a key (upserts)."""
        for round_ in range(_ROUNDS if retry else 1):
            try:
                if self._thread is not None:
                    return await self._thread.run(operation, write=True)
                return await self._run_whole(operation, write=True)
            except IntegrityError:
                if not retry or round_ == _ROUNDS - 1:
                    raise
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        """Let transactions whose callers were cancelled end, then close the SQLite thread's
        connection and stop the thread."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))
        if self._thread is not None:
            await self._thread.aclose()

    async def _run_whole(self, operation: Operation[_T], *, write: bool) -> _T:
        """Run ``operation`` in a task of its own, which a cancelled caller leaves to finish
        (commit or roll back) instead of interrupting it mid-statement."""
        task = asyncio.ensure_future(self._on_engine(operation, write, set(self._abandoned)))
        self._in_flight.add(task)
        task.add_done_callback(self._ended)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                self._abandoned.add(task)
            raise

    async def _on_engine(
        self, operation: Operation[_T], write: bool, earlier: set[asyncio.Task[Any]]
    ) -> _T:
        if earlier:
            await asyncio.wait(earlier)
        if write:
            async with self._engine.begin() as connection:
                return await operation(connection)
        async with self._engine.connect() as connection:
            return await operation(connection)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._in_flight.discard(task)
        self._abandoned.discard(task)
        if not task.cancelled():
            # Read here: a caller that was cancelled never reads the outcome.
            task.exception()


class _SqliteThread:
    """A thread with its own synchronous engine on the same SQLite file.

    The thread keeps one connection open and takes calls from a queue, answering each on
    the caller's event loop: a pool checkout and check-in a call, and an executor's pair of
    chained futures, cost as much CPU as a one-row read itself.
    """

    def __init__(self, url: str) -> None:
        self._engine = create_engine(url, pool_size=1, max_overflow=0)
        event.listen(self._engine, "connect", configure_sqlite_connection)
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._connection: Connection | None = None

    async def run(self, operation: Operation[_T], *, write: bool) -> _T:
        future = self._submit(functools.partial(self._transaction, operation, write))
        return await future

    def _submit(self, call: Callable[[], _T]) -> asyncio.Future[_T]:
        if self._closed:
            raise RuntimeError("the SQLite store is closed")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._serve, name="serversync-sqlite", daemon=True
            )
            self._thread.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._calls.put(_Call(call, loop, future))
        return future

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            # A caller cancelled before its call started: the call is not made (as with an
            # executor's queued work). One cancelled later runs to its end.
            if call.future.cancelled():
                continue
            try:
                result = call.function()
            except BaseException as exc:  # handed to the caller, as an executor would
                call.answer(None, exc)
            else:
                call.answer(result, None)

    def _transaction(self, operation: Operation[_T], write: bool) -> _T:
        connection = self._connection
        if connection is None:
            connection = self._connection = self._engine.connect()
        # Straight to the driver: through SQLAlchemy, the BEGIN cost as much CPU as the
        # statement itself. The operation's first statement begins SQLAlchemy's own
        # transaction, so the commit below reaches the driver.
        driver = cast(sqlite3.Connection, connection.connection.driver_connection)
        try:
            driver.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            result = _drive(operation(cast(AsyncConnection, _Direct(connection))))
            connection.commit()
            if driver.in_transaction:
                driver.commit()  # the operation ran no statement through SQLAlchemy
        except BaseException:
            self._roll_back(connection)
            raise
        return result

    def _roll_back(self, connection: Connection) -> None:
        """Undo the failed call's transaction; a connection that cannot is replaced."""
        try:
            if connection.invalidated:
                raise RuntimeError("the connection was invalidated")
            connection.rollback()
            driver = connection.connection.driver_connection
            if driver is not None and driver.in_transaction:
                driver.rollback()
        except Exception:
            self._connection = None
            try:
                connection.close()
            except Exception:
                logger.debug("closing a failed SQLite connection failed", exc_info=True)

    def _dispose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
        self._engine.dispose()

    async def aclose(self) -> None:
        if self._closed:
            return
        if self._thread is None:
            self._closed = True
            self._engine.dispose()
            return
        # Connections belong to the thread that made them: dispose of them there.
        try:
            await self._submit(self._dispose)
        finally:
            self._closed = True
            self._calls.put(None)


@attrs.frozen
class _Call:
    """One call for the database thread, and where its answer goes."""

    function: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]

    def answer(self, result: Any, error: BaseException | None) -> None:
        # A closed loop raises RuntimeError: its caller is gone, nobody waits for the answer.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(_settle, self.future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _drive(coroutine: Awaitable[_T]) -> _T:
    """Run ``coroutine`` to its end; it may await nothing but :class:`_Direct` calls."""
    running = cast(Coroutine[Any, Any, _T], coroutine)
    try:
        running.send(None)
    except StopIteration as done:
        return cast(_T, done.value)
    running.close()
    raise RuntimeError("a SQLite store operation awaited something other than its connection")


class _Direct:
    """The part of :class:`AsyncConnection` the repositories use, answering at once."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @property
    def dialect(self) -> Any:
        return self._connection.dialect

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return self._connection.execute(statement, parameters)

    async def scalar(self, statement: Any, parameters: Any = None) -> Any:
        return self._connection.scalar(statement, parameters)
