"""Mailbox health, read from the store: one :class:`MailboxHealth` per mailbox workload."""

from __future__ import annotations

from collections.abc import Sequence

from serversync.model import (
    EmailServerProfile,
    Mailbox,
    MailboxHealth,
    ProfileId,
    SkipReason,
    TestStatus,
    Workload,
)
from serversync.planning import skip_reason

from ._context import EngineContext
from ._leases import lease_key

__all__ = ["collect_health"]


def _test_status(mailbox: Mailbox, workload: Workload) -> TestStatus:
    return {
        Workload.INCOMING: mailbox.incoming_status,
        Workload.OUTGOING: mailbox.outgoing_status,
        Workload.ACT: mailbox.act_status,
    }[workload]


async def collect_health(
    ctx: EngineContext, mailboxes: Sequence[Mailbox]
) -> tuple[MailboxHealth, ...]:
    """The health of every workload of ``mailboxes``, in their order and Workload order;
    the incoming rows carry the mailbox's quarantine count."""
    repos = ctx.repositories
    now = ctx.clock.now()
    profiles: dict[ProfileId, EmailServerProfile | None] = {}
    result: list[MailboxHealth] = []
    for mailbox in mailboxes:
        profile = None
        if mailbox.profile_id is not None:
            if mailbox.profile_id not in profiles:
                profiles[mailbox.profile_id] = await ctx.storage(
                    repos.get_profile(mailbox.profile_id), "loading a profile"
                )
            profile = profiles[mailbox.profile_id]
        for workload in Workload:
            state = await ctx.storage(
                repos.get_workload_state(mailbox.id, workload), "loading the workload state"
            )
            holder = await ctx.storage(
                repos.get_lease_holder(lease_key(mailbox.id, workload), now=now),
                "reading the lease holder",
            )
            backlog = None
            quarantined = None
            if workload is Workload.INCOMING:
                quarantined = await ctx.storage(
                    repos.count_quarantine(mailbox.id), "counting quarantined messages"
                )
            if workload is Workload.OUTGOING:
                backlog = await ctx.storage(
                    repos.count_pending_send(mailbox.id), "counting emails to send"
                )
            blocked = skip_reason(
                mailbox, profile, workload, state, now=now, org=ctx.settings.organization
            )
            result.append(
                MailboxHealth(
                    mailbox_id=mailbox.id,
                    email_address=mailbox.email_address,
                    profile_id=mailbox.profile_id,
                    workload=workload,
                    checked_at=now,
                    enabled=mailbox.enabled_for(workload),
                    test_status=_test_status(mailbox, workload),
                    blocked_by=None if blocked is SkipReason.NOT_DUE else blocked,
                    last_sync_started_on=state.last_sync_started_on if state else None,
                    last_success=state.last_successful_sync_completed_on if state else None,
                    last_error=state.last_error if state else None,
                    last_error_at=state.last_error_at if state else None,
                    consecutive_failures=state.consecutive_failures if state else 0,
                    next_run_at=state.next_run_at if state else None,
                    lease_holder=holder,
                    backlog=backlog,
                    quarantined=quarantined,
                )
            )
    return tuple(result)
