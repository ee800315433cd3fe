"""A clock that moves only when told to."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import final

from serversync.ports import Clock

__all__ = ["FakeClock"]


@final
class FakeClock(Clock):
    """A :class:`~serversync.ports.Clock` for tests: :meth:`advance` moves it, and
    :meth:`sleep` advances it by the time slept instead of waiting."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start time")
        self._monotonic = 0.0

    def now(self) -> datetime:
        """The fake current time."""
        return self._now

    def monotonic(self) -> float:
        """Seconds advanced since creation."""
        return self._monotonic

    def advance(self, delta: timedelta | float) -> None:
        """Move the clock forward by ``delta`` (a timedelta or seconds)."""
        seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds

    async def sleep(self, seconds: float) -> None:
        """Advance by ``seconds`` and let other tasks run once."""
        self.advance(seconds)
        await asyncio.sleep(0)
