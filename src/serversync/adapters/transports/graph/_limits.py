"""Rate control for Graph, per mailbox: how many requests are in flight at once, a request
budget over a window, and the waits between throttled tries.

Outlook allows an application 4 concurrent requests and 10,000 requests per 10 minutes per
mailbox. The mailbox lease keeps one process per mailbox, so both live in the process:
:class:`MailboxGates` hands every session of a mailbox the same :class:`MailboxGate`.
The decisions (:func:`bucket_wait`, :func:`backoff_delay`, :func:`restart_delay`) are pure.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Final

import attrs

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_REQUEST_BUDGET",
    "MailboxGate",
    "MailboxGates",
    "RequestBudget",
    "backoff_delay",
    "bucket_wait",
    "restart_delay",
]

DEFAULT_CONCURRENCY: Final = 4


@attrs.frozen
class RequestBudget:
    """At most ``requests`` requests per ``per`` for one mailbox (a token bucket that
    starts full and refills evenly)."""

    requests: int = attrs.field(validator=attrs.validators.gt(0))
    per: timedelta = attrs.field(validator=attrs.validators.gt(timedelta(0)))


DEFAULT_REQUEST_BUDGET: Final = RequestBudget(10_000, timedelta(minutes=10))
"""Outlook's documented limit per application and mailbox."""


def bucket_wait(tokens: float, elapsed: float, budget: RequestBudget) -> tuple[float, float]:
    """The bucket after ``elapsed`` seconds of refill: its tokens, and how long (seconds) to
    wait before one request may go (0 when one is there)."""
    rate = budget.requests / budget.per.total_seconds()
    now = min(float(budget.requests), tokens + elapsed * rate)
    return now, 0.0 if now >= 1.0 else (1.0 - now) / rate


def backoff_delay(
    attempt: int,
    *,
    base: timedelta,
    cap: timedelta,
    random: Callable[[], float],
) -> timedelta:
    """The wait before try ``attempt + 1`` when Graph said busy without ``Retry-After``:
    exponential in ``attempt`` (0 for the first repeat), capped, with "equal jitter" (half
    fixed, half random) so that many clients do not come back together."""
    ceiling = min(cap.total_seconds(), base.total_seconds() * 2 ** max(attempt, 0))
    return timedelta(seconds=ceiling / 2 + ceiling / 2 * random())


def restart_delay(window: timedelta, *, random: Callable[[], float]) -> timedelta:
    """How long a folder waits before listing again from the start after Graph lost its
    delta token: uniform over ``window``, so that mailboxes whose tokens were dropped
    together (a server cache evicted) do not all start their full listing at once."""
    if window <= timedelta(0):
        return timedelta(0)
    return window * min(max(random(), 0.0), 1.0)


class MailboxGate:
    """One mailbox's limits: a semaphore for requests in flight and its request budget."""

    def __init__(
        self,
        concurrency: int,
        budget: RequestBudget,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        # Takers of several slots queue here, so that two of them cannot each hold part.
        self._several = asyncio.Lock()
        self._budget = budget
        self._tokens = float(budget.requests)
        self._clock = clock
        self._at = clock()

    def wait_for_budget(self) -> float:
        """Seconds until the budget lets one request go (0: now)."""
        now = self._clock()
        self._tokens, wait = bucket_wait(self._tokens, now - self._at, self._budget)
        self._at = now
        return wait

    def spend(self, cost: int = 1) -> None:
        """Take ``cost`` requests from the budget (after :meth:`wait_for_budget` said 0;
        a batch may leave it below zero, which later requests wait out)."""
        self._tokens -= float(cost)

    @asynccontextmanager
    async def slot(self, count: int = 1) -> AsyncIterator[None]:
        """Hold ``count`` of the mailbox's concurrent request slots (a batch, which Graph
        runs up to 4 at a time, holds as many as it has requests, up to all of them)."""
        count = max(1, min(count, self._concurrency))
        if count == 1:
            async with self._slots:
                yield
            return
        taken = 0
        try:
            async with self._several:
                for _ in range(count):
                    await self._slots.acquire()
                    taken += 1
            yield
        finally:
            for _ in range(taken):
                self._slots.release()


class MailboxGates:
    """The gate of each mailbox, shared by every session of a transport (and by both halves
    of a :class:`~serversync.adapters.transports.graph.GraphTransport`)."""

    def __init__(self, concurrency: int, budget: RequestBudget) -> None:
        if concurrency < 1:
            raise ValueError("the concurrency per mailbox must be at least 1")
        self.concurrency = concurrency
        self.budget = budget
        # Per event loop: asyncio primitives belong to the loop that uses them.
        self._gates: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, MailboxGate]
        ] = weakref.WeakKeyDictionary()

    def gate(self, mailbox_id: str) -> MailboxGate:
        """The mailbox's gate in the running event loop."""
        gates = self._gates.setdefault(asyncio.get_running_loop(), {})
        gate = gates.get(mailbox_id)
        if gate is None:
            gate = gates[mailbox_id] = MailboxGate(self.concurrency, self.budget)
        return gate
