"""Test & Enable: connect each configured workload of a mailbox, record the result, and
re-enable what works (Dynamics' "Test & Enable Mailbox")."""

from __future__ import annotations

import attrs

from serversync.errors import ConfigurationError
from serversync.model import (
    EmailServerProfile,
    ErrorRecord,
    Mailbox,
    MailboxTestReport,
    SkipReason,
    TestStatus,
    Workload,
    WorkloadState,
    WorkloadTestResult,
)
from serversync.planning import skip_reason

from ._context import EngineContext, deadline
from ._sessions import session_of

__all__ = ["configured_workloads", "test_and_enable"]

# Conditions that a test cannot fix (the schedule and the enabled flag are what it resets).
_BLOCKING = {
    SkipReason.INACTIVE: "the mailbox is inactive",
    SkipReason.NO_PROFILE: "the mailbox has no email server profile",
    SkipReason.PROFILE_INACTIVE: "the mailbox's email server profile is inactive",
    SkipReason.NOT_APPROVED: "the mailbox's email address is not approved",
}


def configured_workloads(mailbox: Mailbox) -> tuple[Workload, ...]:
    """The workloads whose delivery method is server-side synchronization."""
    workloads = []
    if mailbox.uses_server_side_sync(Workload.INCOMING):
        workloads.append(Workload.INCOMING)
    if mailbox.uses_server_side_sync(Workload.OUTGOING) and not mailbox.is_forward_mailbox:
        workloads.append(Workload.OUTGOING)
    if mailbox.uses_server_side_sync(Workload.ACT) and not mailbox.is_forward_mailbox:
        workloads.append(Workload.ACT)
    return tuple(workloads)


async def test_and_enable(
    ctx: EngineContext, mailbox: Mailbox, profile: EmailServerProfile | None
) -> MailboxTestReport:
    """Test each configured workload, store the statuses and the time, enable the workloads
    that passed and disable those that failed; when incoming passed, forget its cursors so mail
    newer than Process Email From is considered again (dedupe keeps that free of duplicates)."""
    results = [await _test(ctx, mailbox, profile, w) for w in configured_workloads(mailbox)]
    now = ctx.clock.now()
    repos = ctx.repositories
    await ctx.storage(
        repos.record_mailbox_test(mailbox.id, {r.workload: r.status for r in results}, at=now),
        "recording the mailbox test",
    )
    for result in results:
        if result.status is not TestStatus.SUCCESS:
            continue
        if result.workload is Workload.INCOMING:
            await ctx.storage(repos.clear_checkpoints(mailbox.id), "resetting the cursors")
        state = await ctx.storage(
            repos.get_workload_state(mailbox.id, result.workload), "loading the workload state"
        )
        # Due at once, with the failure streak and its error forgotten.
        fresh = attrs.evolve(
            state or WorkloadState(),
            next_run_at=None,
            consecutive_failures=0,
            last_error=None,
            last_error_at=None,
        )
        await ctx.storage(
            repos.save_workload_state(mailbox.id, result.workload, fresh),
            "saving the workload state",
        )
    return MailboxTestReport(mailbox_id=mailbox.id, completed_on=now, results=tuple(results))


async def _test(
    ctx: EngineContext, mailbox: Mailbox, profile: EmailServerProfile | None, workload: Workload
) -> WorkloadTestResult:
    try:
        reason = skip_reason(
            mailbox, profile, workload, None, now=ctx.clock.now(), org=ctx.settings.organization
        )
        if profile is None or reason in _BLOCKING:
            raise ConfigurationError(
                _BLOCKING[reason or SkipReason.NO_PROFILE], mailbox_id=mailbox.id
            )
        credentials = await ctx.credentials.resolve(mailbox, profile, workload)
        timeouts = ctx.settings.timeouts
        if workload is Workload.INCOMING:
            opener = ctx.transports.incoming_for(profile).open(mailbox, profile, credentials)
            async with session_of(opener, timeouts, "the incoming server") as session:
                await deadline(timeouts.command, session.list_folders(), "listing the folders")
        elif workload is Workload.OUTGOING:
            sender = ctx.transports.outgoing_for(profile).open(mailbox, profile, credentials)
            async with session_of(sender, timeouts, "the outgoing server"):
                pass  # connecting and logging in is the test; nothing is sent
        else:
            # Exchange server types only; connecting and opening the mailbox is the test.
            items = ctx.transports.act_for(profile).open(mailbox, profile, credentials)
            async with session_of(items, timeouts, "Exchange"):
                pass
    except Exception as exc:  # every failure is the test's answer, recorded with its reason
        return WorkloadTestResult(
            workload=workload, status=TestStatus.FAILURE, error=ErrorRecord.from_exception(exc)
        )
    return WorkloadTestResult(workload=workload, status=TestStatus.SUCCESS)
