"""The real clock."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import final

__all__ = ["SystemClock"]


@final
class SystemClock:
    """The :class:`~serversync.ports.Clock` of the running system (UTC)."""

    def now(self) -> datetime:
        """The current UTC time."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """:func:`time.monotonic`."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """:func:`asyncio.sleep`."""
        await asyncio.sleep(seconds)
