"""Sends cut off after the message was handed over: the expired-claim policy decides.

A transport raises :class:`DeliveryUncertainError` when the connection fails between handing
a message over and the server's answer; the engine raises it itself when a send outlives its
deadline. Under the default policy the email becomes Failed with ``delivery_uncertain`` and is
never sent again; under ``RESEND`` it is retried. Failures before the hand-over are retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from serversync import (
    ConnectionFailedError,
    Credentials,
    DeliveryUncertainError,
    EmailServerProfile,
    EmailStatus,
    ExpiredClaimPolicy,
    Mailbox,
    RetryPolicy,
    RunReport,
    SyncSettings,
    Timeouts,
    Transports,
    Workload,
)
from serversync.model import EmailActivity, OutgoingMessage
from serversync.model.outcomes import SendReceipt
from serversync.ports import OutgoingMailSession
from serversync.testing import FaultPoint, InMemoryIncomingTransport, InMemoryWorld, a_pending_email

ALICE = "alice@contoso.example"
JANE = "jane@fabrikam.example"


def world_with_one_email(
    policy: ExpiredClaimPolicy = ExpiredClaimPolicy.MARK_UNCERTAIN,
    timeouts: Timeouts | None = None,
) -> tuple[InMemoryWorld, EmailActivity]:
    settings = SyncSettings(
        retry=RetryPolicy(expired_claim_policy=policy), timeouts=timeouts or Timeouts()
    )
    world = InMemoryWorld(settings=settings)
    alice = world.add_user(ALICE)
    email = a_pending_email(sender_mailbox=alice, to=[JANE], subject="Quote")
    world.storage.put_activity(email)
    return world, email


async def send(world: InMemoryWorld, **engine_args: object) -> RunReport:
    async with world.engine(**engine_args) as engine:
        return await engine.run_once(workloads=[Workload.OUTGOING])


def stored(world: InMemoryWorld, email: EmailActivity) -> EmailActivity:
    return next(a for a in world.storage.activities() if a.id == email.id)


async def test_a_send_cut_off_after_the_hand_over_is_uncertain_and_never_sent_again() -> None:
    world, email = world_with_one_email()
    lost_reply = DeliveryUncertainError("the connection failed before the server's answer")
    world.server.faults.fail_next("send", lost_reply, point=FaultPoint.AFTER)

    report = await send(world)

    (run,) = report.mailboxes
    assert run.error is not None
    assert run.error.transient, "a transient failure of the workload"
    after = stored(world, email)
    assert after.status is EmailStatus.FAILED
    assert after.delivery_uncertain
    assert after.last_send_error is not None
    assert after.last_send_error.error_type == "DeliveryUncertainError"
    world.clock.advance(timedelta(hours=1))
    await send(world)
    assert len(world.server.outbox) == 1, "the server took it once; it is not sent again"


async def test_under_the_resend_policy_a_send_cut_off_after_the_hand_over_is_retried() -> None:
    world, email = world_with_one_email(ExpiredClaimPolicy.RESEND)
    lost_reply = DeliveryUncertainError("the connection failed before the server's answer")
    world.server.faults.fail_next("send", lost_reply, point=FaultPoint.AFTER)

    await send(world)
    assert stored(world, email).status is EmailStatus.PENDING_SEND
    world.clock.advance(timedelta(minutes=6))
    await send(world)

    assert stored(world, email).status is EmailStatus.SENT
    assert len(world.server.outbox) == 2, "RESEND accepts a possible duplicate"


async def test_a_send_that_fails_before_the_hand_over_is_retried_not_uncertain() -> None:
    world, email = world_with_one_email()
    world.server.faults.fail_next("send", ConnectionFailedError("connection reset at RCPT"))

    await send(world)
    after = stored(world, email)
    assert after.status is EmailStatus.PENDING_SEND
    assert not after.delivery_uncertain
    world.clock.advance(timedelta(minutes=6))
    await send(world)

    assert stored(world, email).status is EmailStatus.SENT
    assert len(world.server.outbox) == 1


class _SilentSession(OutgoingMailSession):
    """A session whose send never returns and has no deadline of its own."""

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        await asyncio.Event().wait()
        raise AssertionError("not reached")


class _SilentTransport:
    @asynccontextmanager
    async def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AsyncIterator[OutgoingMailSession]:
        yield _SilentSession()


async def test_a_send_the_engine_cuts_off_at_its_deadline_is_uncertain() -> None:
    quick = timedelta(milliseconds=50)
    world, email = world_with_one_email(timeouts=Timeouts(send=quick))
    transports = Transports.for_all(
        incoming=InMemoryIncomingTransport(world.server), outgoing=_SilentTransport()
    )

    async with asyncio.timeout(5):
        report = await send(world, transports=transports)

    (run,) = report.mailboxes
    assert run.error is not None
    assert run.error.error_type == "DeliveryUncertainError"
    after = stored(world, email)
    assert after.status is EmailStatus.FAILED
    assert after.delivery_uncertain
