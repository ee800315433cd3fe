"""SyncEngine: the composition root hosts create, and the loop that runs mailboxes."""

from __future__ import annotations

import asyncio
import enum
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Self, final

from serversync.errors import ConfigurationError
from serversync.mime import ensure_message_id, parse_headers
from serversync.model import (
    INBOX,
    CrmRecord,
    EmailServerProfile,
    ErrorRecord,
    ItemOutcome,
    Mailbox,
    MailboxId,
    MailboxRunReport,
    OutcomeKind,
    ProfileId,
    RemoteMessageRef,
    RunReport,
    RunStatus,
    SkipReason,
    Workload,
    WorkloadState,
)
from serversync.planning import next_run_after_success, skip_reason, state_after_failure
from serversync.ports import (
    AttachmentSource,
    Clock,
    CredentialProvider,
    RecordDirectory,
    RelevanceRule,
    Repositories,
    SendAsPolicy,
    SyncObserver,
)
from serversync.relevance import default_rules
from serversync.settings import SyncSettings

from ._context import EngineContext, logger
from ._incoming import IncomingPipeline
from ._observer import BaseSyncObserver
from ._outgoing import OutgoingPipeline
from ._system_clock import SystemClock
from ._transports import Transports

__all__ = ["SyncEngine"]

_EMAIL_WORKLOADS = (Workload.INCOMING, Workload.OUTGOING)


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


@final
class SyncEngine:
    """Synchronizes the mailboxes in ``repositories`` with their mail servers.

    Use it as an async context manager::

        async with SyncEngine(repositories=store, directory=directory,
                              transports=transports, credentials=credentials) as engine:
            report = await engine.run_once()

    The constructor does no I/O. Each mailbox workload runs in its own task with its own
    error boundary: one failing mailbox is reported and postponed while the others go on.
    ``engine_id`` names this engine in leases and send claims (several engines may share
    one store). ``send_as`` answers whether a user may send as another; without it, an
    email whose submitter differs from its From is sent (the host checked when it queued it).
    ``attachments`` gives outgoing emails their files.
    """

    def __init__(
        self,
        *,
        repositories: Repositories,
        directory: RecordDirectory,
        transports: Transports,
        credentials: CredentialProvider,
        rules: Sequence[RelevanceRule] | None = None,
        settings: SyncSettings | None = None,
        clock: Clock | None = None,
        observer: SyncObserver | None = None,
        engine_id: str | None = None,
        send_as: SendAsPolicy | None = None,
        attachments: AttachmentSource | None = None,
    ) -> None:
        self._ctx = EngineContext(
            engine_id=engine_id or f"serversync-{uuid.uuid4().hex[:12]}",
            repositories=repositories,
            directory=directory,
            transports=transports,
            credentials=credentials,
            rules=tuple(rules) if rules is not None else default_rules(),
            settings=settings or SyncSettings(),
            clock=clock or SystemClock(),
            observer=observer or BaseSyncObserver(),
            send_as=send_as,
            attachments=attachments,
        )
        self._state = _State.UNOPENED
        self._profile_slots: dict[ProfileId, asyncio.Semaphore] = {}

    @property
    def engine_id(self) -> str:
        """This engine's name in leases and send claims."""
        return self._ctx.engine_id

    @property
    def settings(self) -> SyncSettings:
        """The settings in force."""
        return self._ctx.settings

    async def __aenter__(self) -> Self:
        if self._state is not _State.UNOPENED:
            raise RuntimeError(f"a SyncEngine can be opened once; this one is {self._state.value}")
        self._state = _State.OPENED
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the engine; idempotent. Sessions are already closed after every run."""
        self._state = _State.CLOSED

    def _require_open(self) -> None:
        if self._state is not _State.OPENED:
            raise RuntimeError(f"the SyncEngine is {self._state.value}; use it inside 'async with'")

    async def run_once(self, *, workloads: Iterable[Workload] = _EMAIL_WORKLOADS) -> RunReport:
        """Run every due workload of every mailbox once, concurrently, and report.

        Mailboxes that are inactive, have no profile, are not approved, whose workload is
        disabled or not due, are reported as skipped with the reason.
        """
        self._require_open()
        ctx = self._ctx
        started = ctx.clock.now()
        mailboxes = await ctx.storage(ctx.repositories.list_mailboxes(), "listing mailboxes")
        reports = await self._run(mailboxes, tuple(workloads), force=False)
        return RunReport(started_at=started, finished_at=ctx.clock.now(), mailboxes=reports)

    async def sync_mailbox(
        self,
        mailbox_id: MailboxId,
        *,
        workloads: Iterable[Workload] = _EMAIL_WORKLOADS,
        force: bool = True,
    ) -> tuple[MailboxRunReport, ...]:
        """Run one mailbox's workloads now (for hosts that schedule with a task queue).

        With ``force`` the schedule is ignored; every other condition still applies.
        """
        self._require_open()
        ctx = self._ctx
        mailbox = await ctx.storage(ctx.repositories.get_mailbox(mailbox_id), "loading a mailbox")
        if mailbox is None:
            raise ConfigurationError(f"no mailbox {mailbox_id}", mailbox_id=mailbox_id)
        return await self._run([mailbox], tuple(workloads), force=force)

    async def explain(
        self, message: bytes, mailbox_id: MailboxId, *, folder: str = INBOX
    ) -> ItemOutcome:
        """How the engine would decide on ``message`` arriving in ``folder`` of a mailbox.

        Nothing is stored and no mail server is contacted: repositories and the directory
        are only read. The outcome carries the Dynamics reason code and the trace of every
        rule consulted; ``TRACKED`` means it would be tracked. Raises
        :class:`~serversync.errors.MalformedMessageError` for unreadable headers.
        """
        self._require_open()
        ctx = self._ctx
        mailbox = await ctx.storage(ctx.repositories.get_mailbox(mailbox_id), "loading a mailbox")
        if mailbox is None:
            raise ConfigurationError(f"no mailbox {mailbox_id}", mailbox_id=mailbox_id)
        profile = None
        if mailbox.profile_id is not None:
            profile = await ctx.storage(
                ctx.repositories.get_profile(mailbox.profile_id), "loading a profile"
            )
        headers, message_id = ensure_message_id(parse_headers(message))
        pipeline = IncomingPipeline(ctx, mailbox, profile, await self._owner(mailbox))
        ref = RemoteMessageRef(folder=folder, remote_id="explain")
        judgement = await pipeline.judge(headers, message_id, ref)
        return judgement.outcome

    async def run_forever(self, *, stop: asyncio.Event | None = None) -> None:
        """Call :meth:`run_once` until ``stop`` is set (or the task is cancelled)."""
        self._require_open()
        idle = self._ctx.settings.schedule.idle_sleep.total_seconds()
        while stop is None or not stop.is_set():
            try:
                await self.run_once()
            except Exception:
                # Mailbox failures never get here; this is the store failing while listing
                # mailboxes. Keep the loop alive and try again after the idle pause.
                logger.exception("a run failed before it could start its mailboxes")
            if stop is None:
                await self._ctx.clock.sleep(idle)
                continue
            sleeper = asyncio.ensure_future(self._ctx.clock.sleep(idle))
            waiter = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (sleeper, waiter):
                    task.cancel()

    async def _run(
        self, mailboxes: Sequence[Mailbox], workloads: tuple[Workload, ...], *, force: bool
    ) -> tuple[MailboxRunReport, ...]:
        ctx = self._ctx
        profiles: dict[ProfileId, EmailServerProfile | None] = {}
        for mailbox in mailboxes:
            if mailbox.profile_id is not None and mailbox.profile_id not in profiles:
                profiles[mailbox.profile_id] = await ctx.storage(
                    ctx.repositories.get_profile(mailbox.profile_id), "loading a profile"
                )
        overall = asyncio.Semaphore(ctx.settings.limits.max_concurrent_mailboxes)
        results: list[MailboxRunReport] = []
        async with asyncio.TaskGroup() as group:
            for mailbox in mailboxes:
                profile = profiles.get(mailbox.profile_id) if mailbox.profile_id else None
                for workload in workloads:
                    group.create_task(
                        self._guarded(mailbox, profile, workload, overall, results, force=force)
                    )
        order = {m.id: i for i, m in enumerate(mailboxes)}
        results.sort(key=lambda r: (order[r.mailbox_id], workloads.index(r.workload)))
        return tuple(results)

    def _slot(self, profile: EmailServerProfile) -> asyncio.Semaphore:
        slot = self._profile_slots.get(profile.id)
        if slot is None:
            slot = asyncio.Semaphore(profile.max_concurrent_connections)
            self._profile_slots[profile.id] = slot
        return slot

    async def _guarded(
        self,
        mailbox: Mailbox,
        profile: EmailServerProfile | None,
        workload: Workload,
        overall: asyncio.Semaphore,
        results: list[MailboxRunReport],
        *,
        force: bool,
    ) -> None:
        ctx = self._ctx
        started = ctx.clock.now()
        try:
            report = await self._workload(mailbox, profile, workload, overall, force=force)
        except Exception as exc:  # the per-mailbox error boundary
            # Failures inside a workload are handled there; this catches storage failures
            # around it (loading state, leases) so that one mailbox cannot stop the run.
            logger.exception("mailbox %s %s: unexpected failure", mailbox.id, workload.value)
            report = MailboxRunReport(
                mailbox_id=mailbox.id,
                workload=workload,
                status=RunStatus.FAILED,
                started_at=started,
                finished_at=ctx.clock.now(),
                error=ErrorRecord.from_exception(exc),
            )
        results.append(report)
        ctx.observer.mailbox_run_finished(report)

    async def _workload(
        self,
        mailbox: Mailbox,
        profile: EmailServerProfile | None,
        workload: Workload,
        overall: asyncio.Semaphore,
        *,
        force: bool,
    ) -> MailboxRunReport:
        ctx = self._ctx
        repos = ctx.repositories
        started = ctx.clock.now()
        state = await ctx.storage(
            repos.get_workload_state(mailbox.id, workload), "loading the workload state"
        )
        reason = skip_reason(
            mailbox, profile, workload, state, now=started, org=ctx.settings.organization
        )
        if reason is SkipReason.NOT_DUE and force:
            reason = None
        if reason is not None or profile is None:
            return MailboxRunReport(
                mailbox_id=mailbox.id,
                workload=workload,
                status=RunStatus.SKIPPED,
                started_at=started,
                finished_at=started,
                skip_reason=reason or SkipReason.NO_PROFILE,
            )
        lease_key = f"{mailbox.id}/{workload.value}"
        acquired = await ctx.storage(
            repos.try_acquire_lease(
                lease_key,
                owner=ctx.engine_id,
                now=started,
                until=started + ctx.settings.schedule.lease_duration,
            ),
            "acquiring the mailbox lease",
        )
        if not acquired:
            return MailboxRunReport(
                mailbox_id=mailbox.id,
                workload=workload,
                status=RunStatus.SKIPPED,
                started_at=started,
                finished_at=ctx.clock.now(),
                skip_reason=SkipReason.LEASED_ELSEWHERE,
            )
        try:
            async with overall, self._slot(profile):
                return await self._execute(mailbox, profile, workload, state, started)
        finally:
            await ctx.storage(
                repos.release_lease(lease_key, owner=ctx.engine_id), "releasing the lease"
            )

    async def _execute(
        self,
        mailbox: Mailbox,
        profile: EmailServerProfile,
        workload: Workload,
        state: WorkloadState | None,
        started: datetime,
    ) -> MailboxRunReport:
        ctx = self._ctx
        previous = state or WorkloadState()
        incoming: IncomingPipeline | None = None
        outgoing: OutgoingPipeline | None = None
        try:
            if workload is Workload.INCOMING:
                incoming = IncomingPipeline(ctx, mailbox, profile, await self._owner(mailbox))
                await incoming.run()
            elif workload is Workload.OUTGOING:
                outgoing = OutgoingPipeline(ctx, mailbox, profile)
                await outgoing.run()
            else:
                raise ConfigurationError(
                    "appointment, contact and task synchronization needs an Exchange items "
                    "transport",
                    mailbox_id=mailbox.id,
                )
        except Exception as exc:  # the per-mailbox error boundary
            error = ErrorRecord.from_exception(exc)
            logger.warning(
                "mailbox %s %s failed: %s: %s",
                mailbox.id,
                workload.value,
                error.error_type,
                error.message,
            )
            now = ctx.clock.now()
            new_state = state_after_failure(previous, error, now=now, policy=ctx.settings.retry)
            await ctx.storage(
                ctx.repositories.save_workload_state(mailbox.id, workload, new_state),
                "saving the workload state",
            )
            return MailboxRunReport(
                mailbox_id=mailbox.id,
                workload=workload,
                status=RunStatus.FAILED,
                started_at=started,
                finished_at=now,
                items=tuple(incoming.outcomes) if incoming else (),
                sends=tuple(outgoing.results) if outgoing else (),
                error=error,
            )
        finished = ctx.clock.now()
        items = tuple(incoming.outcomes) if incoming else ()
        sends = tuple(outgoing.results) if outgoing else ()
        new_state = WorkloadState(
            next_run_at=next_run_after_success(
                workload, profile, finished_at=finished, schedule=ctx.settings.schedule
            ),
            consecutive_failures=0,
            last_error=previous.last_error,
            last_error_at=previous.last_error_at,
            last_sync_started_on=started,
            last_successful_sync_completed_on=finished,
            items_processed_for_last_sync=len(items) + len(sends),
            items_failed_for_last_sync=sum(1 for i in items if i.kind is OutcomeKind.FAILED),
        )
        await ctx.storage(
            ctx.repositories.save_workload_state(mailbox.id, workload, new_state),
            "saving the workload state",
        )
        return MailboxRunReport(
            mailbox_id=mailbox.id,
            workload=workload,
            status=RunStatus.SUCCEEDED,
            started_at=started,
            finished_at=finished,
            items=items,
            sends=sends,
        )

    async def _owner(self, mailbox: Mailbox) -> CrmRecord | None:
        if mailbox.owner is None:
            return None
        ctx = self._ctx
        return await ctx.storage(ctx.directory.get_record(mailbox.owner), "loading the owner")
