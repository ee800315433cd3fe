"""Mailbox leases: one engine per mailbox workload, renewed while the workload runs.

A workload holds the lease ``"<mailbox id>/<workload>"``. While it runs, a background task
renews the lease each time ``lease_renewal_fraction`` of ``lease_duration`` has passed. If
another engine took the lease over (it had expired, say because this process stalled or
lost the store for too long), the workload must stop: the repositories it sees refuse to
start new work with :class:`LeaseLostError`, so it stops at the next message, email or
folder, records the progress it made, and the engine does not save its state over the new
owner's.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from types import TracebackType
from typing import Any, Self, cast

import attrs

from serversync.errors import EngineStoppingError, LeaseLostError
from serversync.model import EmailServerProfile, MailboxId, Workload, WorkloadState
from serversync.ports import Repositories, WorkloadRunEndRepository, WorkloadRunRepository

from ._context import EngineContext, logger
from ._system_clock import SystemClock

__all__ = [
    "LeaseKeeper",
    "RunEnd",
    "acquire_connection_slot",
    "check_lease",
    "lease_key",
    "release_connection_slot",
    "release_slot_and_lease",
]

# The repository calls that begin new work: the next folder, message or email to send, or
# the engine's own bookkeeping after the run. Calls that record work already done (the
# checkpoint, a send outcome, the email being stored) still go through.
_STARTS_WORK = frozenset(
    {
        "load_checkpoint",
        "load_incoming_run",
        "due_quarantine",
        "find_by_message_ids",
        "list_expired_claims",
        "claim_pending_send",
        "claim_pending_send_unless_expired",
        "save_workload_state",
        "disable_workload",
    }
)


# The connection slots engines of this process hold or are taking: a hint of which not to
# try first (the store decides who holds a slot).
_held_here: set[str] = set()


def lease_key(mailbox_id: MailboxId, workload: Workload) -> str:
    """The lease a workload of a mailbox runs under."""
    return f"{mailbox_id}/{workload.value}"


class LeaseKeeper:
    """Keeps the lease of one running workload; use ``async with`` around the work.

    ``acquired_at`` and ``until`` describe the lease just acquired; ``owner`` is the name it
    was acquired under (the engine's id unless told otherwise).
    """

    def __init__(
        self,
        ctx: EngineContext,
        key: str,
        *,
        acquired_at: datetime,
        until: datetime,
        stopping: Callable[[], bool] = lambda: False,
        owner: str | None = None,
    ) -> None:
        self._ctx = ctx
        self._stopping = stopping
        self._owner = owner or ctx.engine_id
        self._key = key
        self._renewed_at = acquired_at
        self._until = until
        self._lost: str | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def lost(self) -> bool:
        """Whether the lease is no longer this engine's."""
        return self._lost is not None

    @property
    def lost_reason(self) -> str | None:
        """Why the lease was lost, once it was."""
        return self._lost

    def check(self) -> None:
        """Raise :class:`LeaseLostError` if the lease was lost, or
        :class:`EngineStoppingError` if the engine was asked to stop: either way the workload
        must not start another item."""
        if self._lost is not None:
            raise LeaseLostError(self._lost)
        if self._stopping():
            raise EngineStoppingError(f"{self._key}: the engine is stopping")

    def guard(self, repositories: Repositories) -> Repositories:
        """``repositories`` as the workload must see them: refusing new work once the lease is
        lost or the engine is stopping."""
        return cast(Repositories, _GuardedRepositories(repositories, self))

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._keep(), name=f"lease {self._key}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop renewing the lease (before giving it back); idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the workload itself is being cancelled

    async def still_held(self) -> bool:
        """Whether the lease is still ours, renewing it if it may have run out; call before
        writing the workload's state."""
        if self._lost is not None:
            return False
        now = self._ctx.clock.now()
        if now < self._until:
            return True
        await self._renew(now)
        return self._lost is None

    async def _keep(self) -> None:
        schedule = self._ctx.settings.schedule
        every = schedule.lease_duration * schedule.lease_renewal_fraction
        while self._lost is None:
            await self._wait_until(self._renewed_at + every)
            try:
                await self._renew(self._ctx.clock.now())
            except Exception as exc:
                logger.warning("could not renew the lease %s: %s", self._key, exc)
                if self._ctx.clock.now() >= self._until:
                    self._lose("the lease ran out while it could not be renewed")
                    return
                # Try again after one look at the clock, not at once.
                await asyncio.sleep(
                    self._ctx.settings.schedule.lease_check_interval.total_seconds()
                )

    async def _renew(self, now: datetime) -> None:
        ctx = self._ctx
        until = now + ctx.settings.schedule.lease_duration
        held = await ctx.storage(
            ctx.repositories.try_acquire_lease(self._key, owner=self._owner, now=now, until=until),
            "renewing the mailbox lease",
        )
        if not held:
            self._lose("another engine took the lease over")
            return
        self._renewed_at, self._until = now, until

    def _lose(self, why: str) -> None:
        logger.warning("lease %s lost: %s; the workload stops", self._key, why)
        self._lost = f"lease {self._key}: {why}"

    async def _wait_until(self, when: datetime) -> None:
        """Wait until the engine's clock reaches ``when``, looking every
        ``lease_check_interval`` of real time (with the system clock, at least every tenth
        of the renewal period).

        Not ``clock.sleep``: a test clock's sleep returns at once, so a background loop
        sleeping through it would spin and push the test's time forward. Looking at the clock
        in real time leaves a test clock under the test's control.
        """
        schedule = self._ctx.settings.schedule
        check = schedule.lease_check_interval.total_seconds()
        clock = self._ctx.clock
        if isinstance(clock, SystemClock):
            # Real time is the clock's: a look every tenth of the renewal period still sees
            # a jump of the system clock in time, where a look every second cost each
            # workload waiting for a connection slot a wake-up a second.
            every = schedule.lease_duration * schedule.lease_renewal_fraction
            check = max(check, every.total_seconds() / 10)
        while True:
            await asyncio.sleep(min(max((when - clock.now()).total_seconds(), 0.0), check))
            if clock.now() >= when:
                return


def check_lease(repositories: Repositories) -> None:
    """Refuse new work as a guarded call would (see :meth:`LeaseKeeper.guard`), for work that
    starts without one: a message judged on its batch's lookups."""
    if isinstance(repositories, _GuardedRepositories):
        repositories.keeper.check()


class _GuardedRepositories:
    """Repositories that refuse to start new work once the lease is lost."""

    def __init__(self, inner: Repositories, keeper: LeaseKeeper) -> None:
        self._inner = inner
        self.keeper = keeper

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name not in _STARTS_WORK:
            return attribute
        method = cast(Callable[..., Awaitable[Any]], attribute)
        keeper = self.keeper

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            keeper.check()
            return await method(*args, **kwargs)

        return guarded


async def acquire_connection_slot(
    ctx: EngineContext, profile: EmailServerProfile, owner: str, *, now: datetime, until: datetime
) -> str | None:
    """Take one of the profile's ``max_concurrent_connections`` slots for ``owner``, held as a
    lease in the store so the limit holds across every engine sharing it; ``None`` when all
    are taken.

    Slots are tried from a point fixed per owner, so engines spread over them; those this
    process holds or is taking (see :func:`release_connection_slot`) last, as they are taken
    but for a race: with one engine keeping every slot busy, that made 2.7 tries an
    acquisition about 1.
    """
    size = profile.max_concurrent_connections
    start = int.from_bytes(hashlib.sha256(owner.encode()).digest()[:4], "big") % size
    untried = [f"profile:{profile.id}/connection:{(start + n) % size}" for n in range(size)]
    while untried:
        # Chosen and marked before awaiting, so tasks taking slots at once pick apart.
        key = min(untried, key=lambda k: k in _held_here)
        untried.remove(key)
        marked = key not in _held_here
        _held_here.add(key)
        try:
            taken = await ctx.storage(
                ctx.repositories.try_acquire_lease(key, owner=owner, now=now, until=until),
                "taking a connection slot of the profile",
            )
        except BaseException:
            if marked:
                _held_here.discard(key)
            raise
        if taken:
            return key
        if marked:
            _held_here.discard(key)
    return None


async def release_connection_slot(ctx: EngineContext, key: str, owner: str) -> None:
    """Give back a slot :func:`acquire_connection_slot` took."""
    _held_here.discard(key)
    await ctx.storage(
        ctx.repositories.release_lease(key, owner=owner), "releasing the connection slot"
    )


@attrs.frozen
class RunEnd:
    """A run's new state, saved by ``store`` as the run's slot and lease are given back."""

    store: WorkloadRunEndRepository
    mailbox_id: MailboxId
    workload: Workload
    state: WorkloadState


async def release_slot_and_lease(
    ctx: EngineContext,
    runs: WorkloadRunRepository,
    slot: str,
    holder: str,
    *,
    key: str,
    owner: str,
    end: RunEnd | None = None,
) -> None:
    """Give back a slot :func:`acquire_connection_slot` took and the workload's lease, in one
    store call; with ``end``, the run's new state is saved in the same call."""
    _held_here.discard(slot)
    leases = [(slot, holder), (key, owner)]
    if end is None:
        await ctx.storage(
            runs.release_leases(leases), "releasing the connection slot and the lease"
        )
        return
    await ctx.storage(
        end.store.finish_workload_run(end.mailbox_id, end.workload, end.state, leases),
        "saving the workload state and releasing the lease",
    )
