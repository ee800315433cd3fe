"""Transactions and the few row operations both SQL repositories use."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import Table, and_, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ._schema import counters

__all__ = ["next_value", "retrying", "upsert"]

_T = TypeVar("_T")
# Concurrent upserts of one new key collide once at most; a few rounds settle any race.
_ROUNDS = 5


async def retrying(
    engine: AsyncEngine, operation: Callable[[AsyncConnection], Awaitable[_T]]
) -> _T:
    """Run ``operation`` in a transaction, again when a concurrent insert won a key."""
    for round_ in range(_ROUNDS):
        try:
            async with engine.begin() as connection:
                return await operation(connection)
        except IntegrityError:
            if round_ == _ROUNDS - 1:
                raise
    raise AssertionError("unreachable")


async def upsert(
    c: AsyncConnection, table: Table, key: dict[str, Any], values: dict[str, Any]
) -> None:
    """Update the row with ``key``, or insert it; a concurrent insert raises IntegrityError
    (run it through :func:`retrying`)."""
    condition = and_(*(table.c[name] == value for name, value in key.items()))
    result = await c.execute(update(table).where(condition).values(**values))
    if result.rowcount == 0:
        await c.execute(insert(table).values(**key, **values))


async def next_value(c: AsyncConnection, counter: str) -> int:
    """The next value of a named counter (1, 2, ...); the row stays locked until the
    transaction ends, so concurrent callers get distinct values."""
    value = await c.scalar(
        update(counters)
        .where(counters.c.name == counter)
        .values(value=counters.c.value + 1)
        .returning(counters.c.value)
    )
    if value is None:
        await c.execute(insert(counters).values(name=counter, value=1))
        return 1
    return int(value)
