"""The few row operations both SQL repositories use."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Insert, Table, Update, and_, bindparam, insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ._schema import counters

__all__ = ["next_value", "upsert"]


async def upsert(
    c: AsyncConnection, table: Table, key: dict[str, Any], values: dict[str, Any]
) -> None:
    """Update the row with ``key``, or insert it; a concurrent insert raises IntegrityError
    (run it in a transaction that retries)."""
    parameters = {f"k_{name}": value for name, value in key.items()}
    parameters.update((f"v_{name}", value) for name, value in values.items())
    result = await c.execute(_update_by_key(table, tuple(key), tuple(values)), parameters)
    if result.rowcount == 0:
        await c.execute(_inserts(table), {**key, **values})


@functools.cache
def _update_by_key(table: Table, key: tuple[str, ...], values: tuple[str, ...]) -> Update:
    # Built once per shape: building a statement costs more than running it on SQLite.
    condition = and_(*(table.c[name] == bindparam(f"k_{name}") for name in key))
    return update(table).where(condition).values({name: bindparam(f"v_{name}") for name in values})


@functools.cache
def _inserts(table: Table) -> Insert:
    return insert(table)


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
