"""Push hints in ``run_forever``: watches that wake mailboxes early.

For every mailbox whose incoming workload may run and whose profile's incoming transport
offers :class:`~serversync.ports.PushHintSource`, one watch runs in a task of its own. A hint
records a wake; the engine then treats the mailbox's incoming workload as due and runs it at
once. Nothing else changes: the workload reads from its cursors as on any poll, and a watch
never touches the workload's state, so a failing watch only stops the hints.

Watches are shared out like work. A watch holds the lease ``"<mailbox id>/incoming/push"``,
so one engine watches a mailbox (the incoming lease itself is held only while a cycle runs),
and one of the profile's connection slots, the same leases ``acquire_connection_slot`` takes
for polling, so watches count against ``max_concurrent_connections`` across engines. Watches
only take the top ``profile_connection_share`` of the slots: polling always keeps the rest.
Both leases are renewed while the watch runs; losing either ends the watch.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import attrs

from serversync.errors import PermanentError
from serversync.model import (
    EmailServerProfile,
    Mailbox,
    MailboxId,
    MailboxRunReport,
    ProfileId,
    SkipReason,
    Workload,
    WorkloadState,
)
from serversync.planning import skip_reason
from serversync.ports import PushHint, PushHintSource

from ._context import EngineContext, deadline, logger
from ._leases import lease_key

__all__ = ["PushWatchers", "watch_lease_key"]

# A watch that stayed up this long was not a failing server: the back-off starts again.
_STABLE_SECONDS = 60.0
# A wake that could not run yet (another engine held the workload) is tried again this soon.
_RETRY_WOKEN_SECONDS = 1.0
# Skips that leave the wake pending: the workload could not run here and now, but will.
_KEEP_WAKE = frozenset(
    {
        SkipReason.LEASED_ELSEWHERE,
        SkipReason.PROFILE_CONNECTIONS_IN_USE,
        SkipReason.ENGINE_STOPPING,
    }
)


def watch_lease_key(mailbox_id: MailboxId) -> str:
    """The lease an engine holds while it watches a mailbox."""
    return f"{lease_key(mailbox_id, Workload.INCOMING)}/push"


@attrs.define(eq=False)
class _Watch:
    mailbox: Mailbox
    profile: EmailServerProfile
    source: PushHintSource
    slot: str
    until: datetime
    task: asyncio.Task[None] | None = None

    @property
    def key(self) -> str:
        return watch_lease_key(self.mailbox.id)


class PushWatchers:
    """The watches of one engine and the wakes they produced.

    Wakes and :meth:`is_due` work at any time (without watches there are none);
    :meth:`update` starts and stops watches only inside :meth:`running`.
    """

    def __init__(self, ctx: EngineContext, *, stopping: Callable[[], bool]) -> None:
        self._ctx = ctx
        self._stopping = stopping
        self.woken = asyncio.Event()
        """Set by every wake; ``run_forever`` waits on it between runs."""
        self._wakes: dict[MailboxId, datetime] = {}
        self._watches: dict[MailboxId, _Watch] = {}
        # Mailboxes whose watch failed for good (no push, refused login), as they were then:
        # watched again only once the mailbox changes or the engine restarts.
        self._given_up: dict[MailboxId, Mailbox] = {}
        # When to try again to watch a mailbox another engine watches, or whose profile had no
        # connection slot free.
        self._retry_at: dict[MailboxId, datetime] = {}
        self._group: asyncio.TaskGroup | None = None

    # -- wakes --------------------------------------------------------------------------------

    @property
    def watching(self) -> frozenset[MailboxId]:
        """The mailboxes this engine watches now."""
        return frozenset(self._watches)

    def wake(self, mailbox_id: MailboxId, hint: PushHint) -> None:
        """Make the mailbox's incoming workload due now."""
        logger.debug("mailbox %s: push hint %s", mailbox_id, hint.value)
        self._wakes[mailbox_id] = self._ctx.clock.now()
        self.woken.set()

    def is_due(
        self, mailbox_id: MailboxId, workload: Workload, state: WorkloadState | None
    ) -> bool:
        """Whether a wake makes the workload due although its schedule says not yet.

        A workload backing off after failures keeps its back-off: a push says nothing about
        whatever made it fail.
        """
        if workload is not Workload.INCOMING or mailbox_id not in self._wakes:
            return False
        return state is None or state.consecutive_failures == 0

    def settle(self, report: MailboxRunReport) -> None:
        """Forget the wakes a finished (or skipped) run answered: those from before it
        started. A wake that came during the run stays, so the mailbox runs again."""
        if report.workload is not Workload.INCOMING or report.skip_reason in _KEEP_WAKE:
            return
        woken_at = self._wakes.get(report.mailbox_id)
        if woken_at is not None and woken_at <= report.started_at:
            del self._wakes[report.mailbox_id]

    def pause(self, seconds: float) -> float:
        """``seconds`` of pause before the next run, shortened while wakes wait."""
        return min(seconds, _RETRY_WOKEN_SECONDS) if self._wakes else seconds

    # -- watches ------------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Let :meth:`update` start watches while the block runs; stop them all at its end."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            renewer = group.create_task(self._renew_forever(), name="push lease renewal")
            try:
                yield
            finally:
                self._group = None
                renewer.cancel()
                for watch in list(self._watches.values()):
                    self._stop(watch)

    async def update(
        self,
        mailboxes: Sequence[Mailbox],
        profiles: Mapping[ProfileId, EmailServerProfile | None],
    ) -> None:
        """Watch the mailboxes that should be watched and stop the others; never raises."""
        if self._group is None:
            return
        try:
            await self._update(mailboxes, profiles)
        except Exception:  # the store failing: the watches stay as they are until next time
            logger.exception("could not update the push watches")

    async def _update(
        self,
        mailboxes: Sequence[Mailbox],
        profiles: Mapping[ProfileId, EmailServerProfile | None],
    ) -> None:
        ctx = self._ctx
        settings = ctx.settings.push
        now = ctx.clock.now()
        wanted: dict[MailboxId, tuple[Mailbox, EmailServerProfile, PushHintSource]] = {}
        if settings.enabled and not self._stopping():
            for mailbox in mailboxes:
                profile = profiles.get(mailbox.profile_id) if mailbox.profile_id else None
                if profile is None:
                    continue
                reason = skip_reason(
                    mailbox,
                    profile,
                    Workload.INCOMING,
                    None,
                    now=now,
                    org=ctx.settings.organization,
                )
                source = self._source(profile)
                if reason is None and source is not None:
                    wanted[mailbox.id] = (mailbox, profile, source)
        for mailbox_id, watch in list(self._watches.items()):
            target = wanted.get(mailbox_id)
            # A changed mailbox or profile (address, server, credentials) gets a new watch.
            if target is None or target[:2] != (watch.mailbox, watch.profile):
                self._stop(watch)
        for mailbox_id, mailbox in list(self._given_up.items()):
            if mailbox_id not in wanted or wanted[mailbox_id][0] != mailbox:
                del self._given_up[mailbox_id]
        for mailbox_id in [m for m in self._wakes if m not in wanted]:
            del self._wakes[mailbox_id]
        for mailbox_id in [m for m in self._retry_at if m not in wanted]:
            del self._retry_at[mailbox_id]
        # Profiles whose watch slots were all taken in this pass: their other mailboxes wait
        # for a later pass instead of asking the store for each slot again.
        full: set[ProfileId] = set()
        for mailbox_id, (mailbox, profile, source) in wanted.items():
            if len(self._watches) >= settings.max_watchers:
                break
            if mailbox_id in self._watches or mailbox_id in self._given_up:
                continue
            retry_at = self._retry_at.get(mailbox_id)
            if retry_at is not None and retry_at > now:
                continue
            if profile.id in full:
                self._retry_at[mailbox_id] = now + self._retry_delay()
            elif not await self._start(mailbox, profile, source):
                full.add(profile.id)

    def _source(self, profile: EmailServerProfile) -> PushHintSource | None:
        # Typed as object: mypy takes the two protocols for disjoint and the test for dead code.
        transport: object = self._ctx.transports.incoming.get(profile.server_type)
        return transport if isinstance(transport, PushHintSource) else None

    def _renewal_interval(self) -> float:
        schedule = self._ctx.settings.schedule
        return (schedule.lease_duration * schedule.lease_renewal_fraction).total_seconds()

    def _retry_delay(self) -> timedelta:
        return self._ctx.settings.schedule.lease_duration / 3

    def _share(self, profile: EmailServerProfile) -> int:
        """How many of the profile's connection slots watches may hold."""
        share = self._ctx.settings.push.profile_connection_share
        return int(profile.max_concurrent_connections * share)

    async def _start(
        self, mailbox: Mailbox, profile: EmailServerProfile, source: PushHintSource
    ) -> bool:
        """Start watching ``mailbox`` unless another engine does; ``False`` when the profile
        has no watch slot free."""
        ctx = self._ctx
        repos = ctx.repositories
        now = ctx.clock.now()
        self._retry_at[mailbox.id] = now + self._retry_delay()
        if self._share(profile) == 0:
            return False
        until = now + ctx.settings.schedule.lease_duration
        key = watch_lease_key(mailbox.id)
        taken = await ctx.storage(
            repos.try_acquire_lease(key, owner=ctx.engine_id, now=now, until=until),
            "taking the push lease",
        )
        if not taken:
            return True  # another engine watches it
        slot = await self._take_slot(profile, key, now=now, until=until)
        if slot is None:
            await ctx.storage(
                repos.release_lease(key, owner=ctx.engine_id), "releasing the push lease"
            )
            return False
        del self._retry_at[mailbox.id]
        watch = _Watch(mailbox=mailbox, profile=profile, source=source, slot=slot, until=until)
        self._watches[mailbox.id] = watch
        assert self._group is not None
        watch.task = self._group.create_task(self._guarded(watch), name=f"push {mailbox.id}")
        return True

    def _slot_owner(self, key: str) -> str:
        return f"{self._ctx.engine_id}|{key}"

    async def _take_slot(
        self, profile: EmailServerProfile, key: str, *, now: datetime, until: datetime
    ) -> str | None:
        """One of the slots of the profile's connections that watches may hold, or ``None``."""
        ctx = self._ctx
        size = profile.max_concurrent_connections
        share = self._share(profile)
        owner = self._slot_owner(key)
        start = int.from_bytes(hashlib.sha256(owner.encode()).digest()[:4], "big")
        for n in range(share):
            # The top slots: polling tries every slot, so it always has the lower ones.
            slot = f"profile:{profile.id}/connection:{size - 1 - (start + n) % share}"
            taken = await ctx.storage(
                ctx.repositories.try_acquire_lease(slot, owner=owner, now=now, until=until),
                "taking a connection slot for a push watch",
            )
            if taken:
                return slot
        return None

    def _forget(self, watch: _Watch) -> None:
        if self._watches.get(watch.mailbox.id) is watch:
            del self._watches[watch.mailbox.id]

    def _stop(self, watch: _Watch) -> None:
        self._forget(watch)
        if watch.task is not None:
            watch.task.cancel()

    async def _renew_forever(self) -> None:
        every = self._renewal_interval()
        while True:
            await asyncio.sleep(every)
            for watch in list(self._watches.values()):
                try:
                    await self._renew(watch)
                except Exception as exc:
                    logger.warning(
                        "could not renew the push lease of %s: %s", watch.mailbox.id, exc
                    )
                    if self._ctx.clock.now() >= watch.until:
                        self._stop(watch)

    async def _renew(self, watch: _Watch) -> None:
        ctx = self._ctx
        repos = ctx.repositories
        now = ctx.clock.now()
        until = now + ctx.settings.schedule.lease_duration
        held = await ctx.storage(
            repos.try_acquire_lease(watch.key, owner=ctx.engine_id, now=now, until=until),
            "renewing the push lease",
        ) and await ctx.storage(
            repos.try_acquire_lease(
                watch.slot, owner=self._slot_owner(watch.key), now=now, until=until
            ),
            "renewing a connection slot of a push watch",
        )
        if not held:
            logger.info("mailbox %s: another engine took the push watch over", watch.mailbox.id)
            self._stop(watch)
            return
        watch.until = until

    async def _guarded(self, watch: _Watch) -> None:
        """One watch, reconnected until it fails for good or is stopped; never raises."""
        try:
            await self._watch(watch)
        except Exception:  # the watch's error boundary: hints stop, polling goes on
            logger.exception("mailbox %s: the push watch failed", watch.mailbox.id)
        finally:
            self._forget(watch)
            await self._release(watch)

    async def _release(self, watch: _Watch) -> None:
        ctx = self._ctx
        # A watch started for the same mailbox since holds the same leases under the same
        # names: releasing them would take them from it.
        successor = self._watches.get(watch.mailbox.id)
        try:
            if successor is None:
                await ctx.storage(
                    ctx.repositories.release_lease(watch.key, owner=ctx.engine_id),
                    "releasing the push lease",
                )
            if successor is None or successor.slot != watch.slot:
                await ctx.storage(
                    ctx.repositories.release_lease(watch.slot, owner=self._slot_owner(watch.key)),
                    "releasing a connection slot of a push watch",
                )
        except Exception as exc:  # the leases expire on their own
            logger.warning("could not release the push leases of %s: %s", watch.mailbox.id, exc)

    async def _watch(self, watch: _Watch) -> None:
        ctx = self._ctx
        settings = ctx.settings.push
        mailbox, profile = watch.mailbox, watch.profile
        loop = asyncio.get_running_loop()
        backoff = settings.reconnect_min.total_seconds()
        hint = functools.partial(self.wake, mailbox.id)
        while True:
            began = loop.time()
            try:
                credentials = await deadline(
                    ctx.settings.timeouts.connect,
                    ctx.credentials.resolve(mailbox, profile, Workload.INCOMING),
                    "resolving the credentials for a push watch",
                )
                await watch.source.watch(
                    mailbox,
                    profile,
                    credentials,
                    hint=hint,
                    refresh_every=settings.refresh_every,
                )
                logger.info("mailbox %s: the server ended the push watch", mailbox.id)
            except PermanentError as exc:
                # No push on this server, or refused credentials: the poll reports the latter.
                logger.info("mailbox %s: no push hints: %s", mailbox.id, exc)
                self._given_up[mailbox.id] = mailbox
                return
            except Exception as exc:
                logger.info("mailbox %s: push watch lost: %s", mailbox.id, exc)
            if loop.time() - began >= _STABLE_SECONDS:
                backoff = settings.reconnect_min.total_seconds()
            # Jitter, so that the watches of a restarted server do not all return at once.
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, settings.reconnect_max.total_seconds())
