"""SyncEngine: the composition root hosts create, and the loop that runs mailboxes."""

from __future__ import annotations

import asyncio
import enum
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Self, final

import attrs

from serversync.errors import (
    ConfigurationError,
    EmailAddressNotApprovedError,
    EngineStoppingError,
    LeaseLostError,
)
from serversync.mime import ensure_message_id, parse_headers
from serversync.model import (
    INBOX,
    CrmRecord,
    EmailApprovalStatus,
    EmailServerProfile,
    ErrorRecord,
    ItemOutcome,
    Mailbox,
    MailboxHealth,
    MailboxId,
    MailboxRunReport,
    MailboxTestReport,
    ProfileId,
    QuarantinedMessage,
    RecordRef,
    RemoteMessageRef,
    RunReport,
    RunStatus,
    SkipReason,
    Workload,
    WorkloadState,
)
from serversync.planning import (
    disables_workload,
    new_mailbox,
    next_run_after_success,
    profile_failure_alert,
    skip_reason,
    state_after_failure,
    workload_disabled_alert,
)
from serversync.ports import (
    ActRecordRepository,
    AttachmentSource,
    Clock,
    CredentialProvider,
    ExchangeSyncIdMappingRepository,
    RecordDirectory,
    RelevanceRule,
    Repositories,
    SendAsPolicy,
    SyncObserver,
    WorkloadRunEndRepository,
    WorkloadRunRepository,
)
from serversync.relevance import default_rules
from serversync.settings import DefaultEmailSettings, SyncSettings

from . import _lifecycle
from ._act import ActPipeline
from ._context import EngineContext, logger
from ._health import collect_health
from ._incoming import IncomingPipeline
from ._leases import (
    LeaseKeeper,
    RunEnd,
    acquire_connection_slot,
    lease_key,
    release_connection_slot,
    release_slot_and_lease,
)
from ._mailbox_test import test_and_enable
from ._observer import BaseSyncObserver
from ._optional import offered
from ._outgoing import OutgoingPipeline
from ._push import PushWatchers
from ._quarantine import discard_quarantined, list_quarantine, retry_quarantined
from ._system_clock import SystemClock
from ._transports import Transports

__all__ = ["SyncEngine"]

_EMAIL_WORKLOADS = (Workload.INCOMING, Workload.OUTGOING)
_ORDER = (Workload.INCOMING, Workload.OUTGOING, Workload.ACT)


def _default_workloads(mailbox: Mailbox) -> tuple[Workload, ...]:
    """Incoming and outgoing for every mailbox, and ACT for those set up for it: a mailbox
    without ACT is not reported as skipping it on every run."""
    if mailbox.uses_server_side_sync(Workload.ACT):
        return (*_EMAIL_WORKLOADS, Workload.ACT)
    return _EMAIL_WORKLOADS


@attrs.frozen(kw_only=True)
class _Run:
    """What one run produced: the reports, the profiles it loaded, and the latest state of
    each workload it looked at (for the profile alert and the pause before the next run)."""

    reports: tuple[MailboxRunReport, ...]
    profiles: Mapping[ProfileId, EmailServerProfile | None]
    states: Mapping[tuple[MailboxId, Workload], WorkloadState]


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


def _chosen(workloads: Iterable[Workload] | None) -> tuple[Workload, ...] | None:
    return tuple(workloads) if workloads is not None else None


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
    ``attachments`` gives outgoing emails their files. Appointment, contact and task sync
    (``Workload.ACT``) needs ``act_records`` (the host's CRM appointments, contacts, tasks
    and sync filters) and ``act_mappings`` (the Exchange mappings and sync states);
    :class:`~serversync.testing.InMemoryStorage` is both.
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
        act_records: ActRecordRepository | None = None,
        act_mappings: ExchangeSyncIdMappingRepository | None = None,
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
            act_records=act_records,
            act_mappings=act_mappings,
        )
        self._state = _State.UNOPENED
        self._stopping = False
        self._profile_slots: dict[ProfileId, asyncio.Semaphore] = {}
        self._profile_alerted: dict[ProfileId, datetime] = {}
        self._next_due: datetime | None = None
        # The store's combined bookkeeping calls, when it has them (see WorkloadRunRepository).
        self._runs = offered(repositories, WorkloadRunRepository)
        self._run_ends = offered(repositories, WorkloadRunEndRepository)
        self._push = PushWatchers(self._ctx, stopping=lambda: self._stopping)

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

    async def run_once(self, *, workloads: Iterable[Workload] | None = None) -> RunReport:
        """Run every due workload of every mailbox once, concurrently, and report.

        By default the workloads are incoming and outgoing mail, and appointment, contact
        and task sync for mailboxes whose ACT delivery method is server-side sync.
        Mailboxes that are inactive, have no profile, are not approved, whose workload is
        disabled or not due, are reported as skipped with the reason.
        """
        self._require_open()
        ctx = self._ctx
        started = ctx.clock.now()
        mailboxes = await ctx.storage(ctx.repositories.list_mailboxes(), "listing mailboxes")
        run = await self._run(mailboxes, _chosen(workloads), force=False)
        await self._push.update(mailboxes, run.profiles)
        finished = ctx.clock.now()
        self._raise_profile_alerts(mailboxes, run, now=finished)
        # What run_forever waits for. Times already passed belong to workloads skipped for
        # another reason (disabled, leased elsewhere): waking for them would spin.
        self._next_due = min(
            (
                s.next_run_at
                for s in run.states.values()
                if s.next_run_at is not None and s.next_run_at > finished
            ),
            default=None,
        )
        return RunReport(started_at=started, finished_at=finished, mailboxes=run.reports)

    async def sync_mailbox(
        self,
        mailbox_id: MailboxId,
        *,
        workloads: Iterable[Workload] | None = None,
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
        run = await self._run([mailbox], _chosen(workloads), force=force)
        return run.reports

    async def health(self, mailbox_id: MailboxId | None = None) -> tuple[MailboxHealth, ...]:
        """How every workload of every mailbox stands (or of one mailbox): enabled, test
        status, last success, last error, failures in a row, next run, lease holder and
        outgoing backlog. Only the store is read.
        """
        self._require_open()
        ctx = self._ctx
        if mailbox_id is None:
            mailboxes = await ctx.storage(ctx.repositories.list_mailboxes(), "listing mailboxes")
        else:
            mailbox = await ctx.storage(
                ctx.repositories.get_mailbox(mailbox_id), "loading a mailbox"
            )
            if mailbox is None:
                raise ConfigurationError(f"no mailbox {mailbox_id}", mailbox_id=mailbox_id)
            mailboxes = [mailbox]
        return await collect_health(ctx, mailboxes)

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

    async def test_mailbox(self, mailbox_id: MailboxId) -> MailboxTestReport:
        """Test & Enable: connect each configured workload (incoming, outgoing) of a mailbox,
        store Success or Failure and the time, enable what passed and disable what failed;
        when incoming passed, its cursors are reset so mail newer than Process Email From is
        considered again (without duplicates). Nothing is sent or stored from the server."""
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
        return await test_and_enable(ctx, mailbox, profile)

    async def provision_mailbox(
        self,
        owner: RecordRef,
        email_address: str,
        *,
        mailbox_id: MailboxId | None = None,
        name: str | None = None,
        defaults: DefaultEmailSettings | None = None,
    ) -> Mailbox:
        """Create the mailbox of a new user or queue, as Dynamics does when the user or queue
        is created: the organisation's default delivery methods
        (``settings.organization.default_email_settings``, or ``defaults``), linked to the
        default profile when one of them is server-side synchronization, the address not
        yet approved. Returns the mailbox stored.

        Raises :class:`~serversync.errors.DuplicateMailboxError` when the user or queue
        already has a mailbox (or the id is taken), and
        :class:`~serversync.errors.ConfigurationError` when the default profile does not
        exist or the owner is not a user or queue.
        """
        self._require_open()
        chosen = defaults or self._ctx.settings.organization.default_email_settings
        mailbox = new_mailbox(
            owner, email_address, defaults=chosen, mailbox_id=mailbox_id, name=name
        )
        return await self.add_mailbox(mailbox)

    async def add_mailbox(self, mailbox: Mailbox) -> Mailbox:
        """Store a new mailbox after checking it: a user or queue mailbox names its owner, a
        forward mailbox has none, sends nothing and has a profile (see
        :func:`serversync.check_mailbox`), and the profile exists. Raises
        :class:`~serversync.errors.DuplicateMailboxError` when the owner already has a
        mailbox or the id is taken; nothing is changed then."""
        self._require_open()
        return await _lifecycle.add_mailbox(self._ctx, mailbox)

    async def change_mailbox_address(self, mailbox_id: MailboxId, address: str) -> Mailbox:
        """Give a mailbox a new email address (when its user's or queue's changes). Its
        approval goes back to Empty unless only the letter case changed, so with approval
        required it stops syncing until the new address is approved and tested again."""
        self._require_open()
        return await _lifecycle.change_mailbox_address(self._ctx, mailbox_id, address)

    async def set_mailbox_approval(
        self, mailbox_id: MailboxId, approval: EmailApprovalStatus = EmailApprovalStatus.APPROVED
    ) -> Mailbox:
        """Set a mailbox's email address status (Approve Email, or Reject). A workload
        disabled while the address was not approved stays disabled until Test & Enable
        (:meth:`test_mailbox`) runs, as in Dynamics."""
        self._require_open()
        return await _lifecycle.set_mailbox_approval(self._ctx, mailbox_id, approval)

    async def quarantine(
        self, mailbox_id: MailboxId | None = None
    ) -> tuple[QuarantinedMessage, ...]:
        """The quarantined messages of one mailbox, or of every mailbox: incoming messages
        that failed alone and are tried again on later cycles, and those given up (tagged
        Undeliverable on the server). Only the store is read."""
        self._require_open()
        return await list_quarantine(self._ctx, mailbox_id)

    async def retry_quarantined(
        self,
        mailbox_id: MailboxId | None,
        *,
        folder: str | None = None,
        remote_id: str | None = None,
    ) -> tuple[QuarantinedMessage, ...]:
        """Make quarantined messages due now, given-up ones included: the next incoming cycle
        of their mailbox tries each once more (:meth:`sync_mailbox` runs one now). A message
        given up counts one more attempt and is given up again if it fails.

        Selects every message of ``mailbox_id`` (every mailbox when ``None``), narrowed to
        ``folder`` and ``remote_id`` when given; returns the messages as now saved.
        """
        self._require_open()
        return await retry_quarantined(self._ctx, mailbox_id, folder, remote_id)

    async def discard_quarantined(
        self,
        mailbox_id: MailboxId | None,
        *,
        folder: str | None = None,
        remote_id: str | None = None,
    ) -> tuple[QuarantinedMessage, ...]:
        """Forget quarantined messages without trying them again; the messages stay on the
        server as they are. Selects as :meth:`retry_quarantined` does; returns those
        discarded."""
        self._require_open()
        return await discard_quarantined(self._ctx, mailbox_id, folder, remote_id)

    def request_stop(self) -> None:
        """Ask the engine to stop: running workloads finish the message or email in hand,
        record their progress and release their leases; no new workload starts. Use it on
        SIGTERM; :meth:`run_forever` calls it when its ``stop`` event is set."""
        self._stopping = True

    @property
    def stopping(self) -> bool:
        """Whether :meth:`request_stop` was called."""
        return self._stopping

    async def run_forever(self, *, stop: asyncio.Event | None = None) -> None:
        """Call :meth:`run_once` until ``stop`` is set (or the task is cancelled), pausing
        until the next workload is due, at most ``Schedule.idle_sleep``.

        Mailboxes whose incoming transport offers push (IMAP IDLE) are watched meanwhile
        (see :class:`~serversync.settings.PushSettings`); a push ends the pause and runs the
        mailbox's incoming workload at once."""
        self._require_open()
        watcher = asyncio.ensure_future(self._stop_when(stop)) if stop is not None else None
        try:
            async with self._push.running():
                await self._loop(stop)
        finally:
            if watcher is not None:
                watcher.cancel()
            if stop is not None and stop.is_set():
                self.request_stop()  # the loop may have seen the event before the watcher

    async def _stop_when(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.request_stop()

    async def _loop(self, stop: asyncio.Event | None) -> None:
        while not self._stopping and (stop is None or not stop.is_set()):
            self._next_due = None
            self._push.woken.clear()  # wakes from here on end the pause below
            try:
                await self.run_once()
            except Exception:
                # Mailbox failures never get here; this is the store failing while listing
                # mailboxes. Keep the loop alive and try again after the idle pause.
                logger.exception("a run failed before it could start its mailboxes")
            idle = self._push.pause(self._pause())
            waits = {
                asyncio.ensure_future(self._ctx.clock.sleep(idle)),
                asyncio.ensure_future(self._push.woken.wait()),
            }
            if stop is not None:
                waits.add(asyncio.ensure_future(stop.wait()))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()

    def _pause(self) -> float:
        """Seconds until the earliest next run seen in the last run, at most the idle sleep."""
        schedule = self._ctx.settings.schedule
        idle = schedule.idle_sleep
        now = self._ctx.clock.now()
        if self._next_due is not None and now < self._next_due < now + idle:
            return (self._next_due - now).total_seconds()
        return idle.total_seconds()

    def _raise_profile_alerts(
        self, mailboxes: Sequence[Mailbox], run: _Run, *, now: datetime
    ) -> None:
        ctx = self._ctx
        for profile in run.profiles.values():
            if profile is None:
                continue
            alert = profile_failure_alert(
                profile,
                mailboxes,
                run.states,
                now=now,
                settings=ctx.settings.alerts,
                last_alert_at=self._profile_alerted.get(profile.id),
            )
            if alert is not None:
                logger.error("profile %s: %s", profile.id, alert.message)
                self._profile_alerted[profile.id] = now
                ctx.observer.alert_raised(alert)

    async def _run(
        self,
        mailboxes: Sequence[Mailbox],
        workloads: tuple[Workload, ...] | None,
        *,
        force: bool,
    ) -> _Run:
        ctx = self._ctx
        profiles: dict[ProfileId, EmailServerProfile | None] = {}
        for mailbox in mailboxes:
            if mailbox.profile_id is not None and mailbox.profile_id not in profiles:
                profiles[mailbox.profile_id] = await ctx.storage(
                    ctx.repositories.get_profile(mailbox.profile_id), "loading a profile"
                )
        overall = asyncio.Semaphore(ctx.settings.limits.max_concurrent_mailboxes)
        results: list[MailboxRunReport] = []
        states: dict[tuple[MailboxId, Workload], WorkloadState] = {}
        # One read for every workload's schedule instead of one a workload; a due workload's
        # state is read again under its lease.
        known: Mapping[tuple[MailboxId, Workload], WorkloadState] | None = None
        if self._runs is not None and len(mailboxes) > 1:
            known = await ctx.storage(
                self._runs.list_workload_states(), "loading the workload states"
            )
        async with asyncio.TaskGroup() as group:
            for mailbox in mailboxes:
                profile = profiles.get(mailbox.profile_id) if mailbox.profile_id else None
                chosen = workloads if workloads is not None else _default_workloads(mailbox)
                for workload in chosen:
                    group.create_task(
                        self._guarded(
                            mailbox,
                            profile,
                            workload,
                            overall,
                            results,
                            states,
                            known,
                            force=force,
                        )
                    )
        order = {m.id: i for i, m in enumerate(mailboxes)}
        results.sort(key=lambda r: (order[r.mailbox_id], _ORDER.index(r.workload)))
        return _Run(reports=tuple(results), profiles=profiles, states=states)

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
        states: dict[tuple[MailboxId, Workload], WorkloadState],
        known: Mapping[tuple[MailboxId, Workload], WorkloadState] | None,
        *,
        force: bool,
    ) -> None:
        ctx = self._ctx
        started = ctx.clock.now()
        try:
            report = await self._workload(
                mailbox, profile, workload, overall, states, known, force=force
            )
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
        self._push.settle(report)
        ctx.observer.mailbox_run_finished(report)

    async def _workload(
        self,
        mailbox: Mailbox,
        profile: EmailServerProfile | None,
        workload: Workload,
        overall: asyncio.Semaphore,
        states: dict[tuple[MailboxId, Workload], WorkloadState],
        known: Mapping[tuple[MailboxId, Workload], WorkloadState] | None,
        *,
        force: bool,
    ) -> MailboxRunReport:
        ctx = self._ctx
        repos = ctx.repositories
        started = ctx.clock.now()
        if known is not None:
            state = known.get((mailbox.id, workload))
        else:
            state = await ctx.storage(
                repos.get_workload_state(mailbox.id, workload), "loading the workload state"
            )
        if state is not None:
            states[(mailbox.id, workload)] = state
        reason = self._skip_reason(mailbox, profile, workload, state, started, force=force)
        if reason is SkipReason.NOT_APPROVED:
            await self._refuse_unapproved(mailbox, workload, state, at=started)
        if reason is None and self._stopping:
            reason = SkipReason.ENGINE_STOPPING
        if reason is not None or profile is None:
            return MailboxRunReport(
                mailbox_id=mailbox.id,
                workload=workload,
                status=RunStatus.SKIPPED,
                started_at=started,
                finished_at=started,
                skip_reason=reason or SkipReason.NO_PROFILE,
            )
        key = lease_key(mailbox.id, workload)
        until = started + ctx.settings.schedule.lease_duration
        runs = self._runs
        if runs is None:
            acquired = await ctx.storage(
                repos.try_acquire_lease(key, owner=ctx.engine_id, now=started, until=until),
                "acquiring the mailbox lease",
            )
        else:
            acquired, fresh = await ctx.storage(
                runs.acquire_workload_lease(
                    mailbox.id, workload, key=key, owner=ctx.engine_id, now=started, until=until
                ),
                "acquiring the mailbox lease",
            )
            if acquired and fresh != state:
                # Changed since the run read it (another engine ran the workload, or the
                # host changed it): judge again on the state read under the lease.
                state = fresh
                if state is not None:
                    states[(mailbox.id, workload)] = state
                again = self._skip_reason(mailbox, profile, workload, state, started, force=force)
                if again is not None:
                    await ctx.storage(
                        repos.release_lease(key, owner=ctx.engine_id), "releasing the lease"
                    )
                    return MailboxRunReport(
                        mailbox_id=mailbox.id,
                        workload=workload,
                        status=RunStatus.SKIPPED,
                        started_at=started,
                        finished_at=ctx.clock.now(),
                        skip_reason=again,
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
        released = False
        try:
            # The lease is renewed from here on, also while waiting for a slot.
            async with (
                LeaseKeeper(
                    ctx, key, acquired_at=started, until=until, stopping=lambda: self._stopping
                ) as lease,
                overall,
                self._slot(profile),
            ):
                # The profile's connection limit across engines: a slot leased in the store.
                holder = f"{ctx.engine_id}|{key}"
                now = ctx.clock.now()
                slot_until = now + ctx.settings.schedule.lease_duration
                slot = await acquire_connection_slot(
                    ctx, profile, holder, now=now, until=slot_until
                )
                if slot is None:
                    return MailboxRunReport(
                        mailbox_id=mailbox.id,
                        workload=workload,
                        status=RunStatus.SKIPPED,
                        started_at=started,
                        finished_at=ctx.clock.now(),
                        skip_reason=SkipReason.PROFILE_CONNECTIONS_IN_USE,
                    )
                # The new state of a run that succeeded, when the store saves it with the
                # leases given back (one call instead of two).
                unsaved: WorkloadState | None = None
                try:
                    async with LeaseKeeper(
                        ctx, slot, acquired_at=now, until=slot_until, owner=holder
                    ):
                        report, new_state, unsaved = await self._execute(
                            mailbox, profile, workload, state, started, lease
                        )
                finally:
                    if runs is None:
                        await release_connection_slot(ctx, slot, holder)
                    else:
                        # The slot and the lease given back in one call: the lease is no
                        # longer renewed, the workload being done.
                        try:
                            await lease.stop()
                        finally:
                            ends = self._run_ends
                            end = (
                                RunEnd(ends, mailbox.id, workload, unsaved)
                                if ends is not None and unsaved is not None
                                else None
                            )
                            await release_slot_and_lease(
                                ctx, runs, slot, holder, key=key, owner=ctx.engine_id, end=end
                            )
                            released = True
        finally:
            if not released:
                await ctx.storage(
                    repos.release_lease(key, owner=ctx.engine_id), "releasing the lease"
                )
        if new_state is not None:
            states[(mailbox.id, workload)] = new_state
        return report

    def _skip_reason(
        self,
        mailbox: Mailbox,
        profile: EmailServerProfile | None,
        workload: Workload,
        state: WorkloadState | None,
        now: datetime,
        *,
        force: bool,
    ) -> SkipReason | None:
        """Why the workload does not run now, if it does not: not due is overridden by
        ``force`` and by a push."""
        reason = skip_reason(
            mailbox, profile, workload, state, now=now, org=self._ctx.settings.organization
        )
        if reason is SkipReason.NOT_DUE and (
            force or self._push.is_due(mailbox.id, workload, state)
        ):
            return None
        return reason

    async def _execute(
        self,
        mailbox: Mailbox,
        profile: EmailServerProfile,
        workload: Workload,
        state: WorkloadState | None,
        started: datetime,
        lease: LeaseKeeper,
    ) -> tuple[MailboxRunReport, WorkloadState | None, WorkloadState | None]:
        """Run the workload's pipeline, then apply the error policy or schedule the next run.
        Returns the report, the new state (``None`` when the lease was lost) and, when the
        caller saves it as it gives the leases back (a run that succeeded, with a store
        that does both in one call), that state again; otherwise it is saved here."""
        ctx = self._ctx
        # The pipelines see repositories that stop them once the lease is lost.
        work = attrs.evolve(ctx, repositories=lease.guard(ctx.repositories))
        previous = state or WorkloadState()
        incoming: IncomingPipeline | None = None
        outgoing: OutgoingPipeline | None = None
        act: ActPipeline | None = None
        failure: Exception | None = None
        try:
            if workload is Workload.INCOMING:
                incoming = IncomingPipeline(work, mailbox, profile, await self._owner(mailbox))
                await incoming.run()
            elif workload is Workload.OUTGOING:
                outgoing = OutgoingPipeline(work, mailbox, profile)
                await outgoing.run()
            else:
                act = ActPipeline(work, mailbox, profile, check=lease.check)
                await act.run()
        except Exception as exc:  # the per-mailbox error boundary
            failure = exc
        finished = ctx.clock.now()
        report = MailboxRunReport(
            mailbox_id=mailbox.id,
            workload=workload,
            status=RunStatus.SUCCEEDED,
            started_at=started,
            finished_at=finished,
            items=tuple(incoming.outcomes) if incoming else (),
            sends=tuple(outgoing.results) if outgoing else (),
            act=tuple(act.outcomes) if act else (),
        )
        if not await lease.still_held():
            # Another engine owns the workload now: the progress made is recorded (stored
            # mail, checkpoints, send outcomes), but the schedule and error count are its.
            lost = LeaseLostError(lease.lost_reason or "the lease was lost", mailbox_id=mailbox.id)
            error = ErrorRecord.from_exception(lost)
            return attrs.evolve(report, status=RunStatus.FAILED, error=error), None, None
        if isinstance(failure, EngineStoppingError):
            # Not a failure: what was done is recorded, and the workload is due at once when
            # an engine runs again.
            stopped = attrs.evolve(previous, next_run_at=finished)
            await self._save_state(mailbox, workload, stopped)
            return attrs.evolve(report, status=RunStatus.STOPPED), stopped, None
        if failure is None:
            new_state = WorkloadState(
                next_run_at=next_run_after_success(
                    workload,
                    profile,
                    finished_at=finished,
                    schedule=ctx.settings.schedule,
                    mailbox=mailbox,
                ),
                consecutive_failures=0,
                last_error=previous.last_error,
                last_error_at=previous.last_error_at,
                last_sync_started_on=started,
                last_successful_sync_completed_on=finished,
                items_processed_for_last_sync=(
                    len(report.items) + len(report.sends) + len(report.act)
                ),
                items_failed_for_last_sync=(
                    report.items_failed + sum(1 for a in report.act if a.error is not None)
                ),
            )
            if self._runs is not None and self._run_ends is not None:
                return report, new_state, new_state
            await self._save_state(mailbox, workload, new_state)
            return report, new_state, None
        error = ErrorRecord.from_exception(failure)
        logger.warning(
            "mailbox %s %s failed: %s: %s",
            mailbox.id,
            workload.value,
            error.error_type,
            error.message,
        )
        policy = ctx.settings.retry
        new_state = state_after_failure(
            previous,
            error,
            now=finished,
            policy=policy,
            timed_out=isinstance(failure, TimeoutError),
        )
        await self._save_state(mailbox, workload, new_state)
        if disables_workload(
            error, consecutive_failures=new_state.consecutive_failures, policy=policy
        ):
            await self._disable(mailbox, workload, error, new_state, at=finished)
        return attrs.evolve(report, status=RunStatus.FAILED, error=error), new_state, None

    async def _save_state(self, mailbox: Mailbox, workload: Workload, state: WorkloadState) -> None:
        ctx = self._ctx
        await ctx.storage(
            ctx.repositories.save_workload_state(mailbox.id, workload, state),
            "saving the workload state",
        )

    async def _disable(
        self,
        mailbox: Mailbox,
        workload: Workload,
        error: ErrorRecord,
        state: WorkloadState,
        *,
        at: datetime,
    ) -> None:
        """Dynamics' answer to a permanent failure: disable the workload, alert once."""
        ctx = self._ctx
        changed = await ctx.storage(
            ctx.repositories.disable_workload(mailbox.id, workload, error=error, at=at),
            "disabling the workload",
        )
        if not changed:
            return  # already disabled (by another engine, or the host): already alerted
        alert = workload_disabled_alert(
            mailbox, workload, error, consecutive_failures=state.consecutive_failures, at=at
        )
        logger.error("mailbox %s: %s", mailbox.id, alert.message)
        ctx.observer.alert_raised(alert)

    async def _refuse_unapproved(
        self, mailbox: Mailbox, workload: Workload, state: WorkloadState | None, *, at: datetime
    ) -> None:
        """Dynamics' answer to an address the organisation requires approved and is not:
        nothing is received or sent, the workload is disabled and the profile owner alerted
        (the alert names the profile). Approving it and Test & Enable bring it back."""
        refused = EmailAddressNotApprovedError(
            f"the email address {mailbox.email_address} is not approved, and the organisation "
            "processes email only for approved addresses; approve it, then test and enable "
            "the mailbox",
            mailbox_id=mailbox.id,
        )
        error = ErrorRecord.from_exception(refused)
        recorded = attrs.evolve(state or WorkloadState(), last_error=error, last_error_at=at)
        await self._save_state(mailbox, workload, recorded)
        await self._disable(mailbox, workload, error, recorded, at=at)

    async def _owner(self, mailbox: Mailbox) -> CrmRecord | None:
        if mailbox.owner is None:
            return None
        ctx = self._ctx
        return await ctx.storage(ctx.directory.get_record(mailbox.owner), "loading the owner")
