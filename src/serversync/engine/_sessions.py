"""Opening and closing transport sessions under deadlines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeVar

from serversync.settings import Timeouts

from ._context import deadline, logger

__all__ = ["session_of"]

S = TypeVar("S")


@asynccontextmanager
async def session_of(
    opener: AbstractAsyncContextManager[S], timeouts: Timeouts, what: str
) -> AsyncIterator[S]:
    """Enter ``opener`` under the connect deadline and leave it under the close deadline.

    A session that cannot close cleanly is abandoned with a warning: by then the work is
    recorded, and a failed logout must not turn a good cycle into a failed one.
    """
    session = await deadline(timeouts.connect, opener.__aenter__(), f"connecting to {what}")
    try:
        yield session
    except BaseException as exc:
        await _close(opener, exc, timeouts, what)
        raise
    await _close(opener, None, timeouts, what)


async def _close(
    opener: AbstractAsyncContextManager[S],
    exc: BaseException | None,
    timeouts: Timeouts,
    what: str,
) -> None:
    try:
        await deadline(
            timeouts.close,
            opener.__aexit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None),
            f"closing the session with {what}",
        )
    except Exception as close_error:
        logger.warning("abandoning the session with %s: %s", what, close_error)
