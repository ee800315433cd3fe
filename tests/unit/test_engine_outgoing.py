"""The engine's outgoing workload over the in-memory adapters."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import attrs
import pytest

from serversync import (
    ConnectionFailedError,
    EmailApprovalStatus,
    EmailStateCode,
    EmailStatus,
    ErrorScope,
    ExpiredClaimPolicy,
    IncomingFilteringMethod,
    MessageRejectedError,
    OrganizationSettings,
    RecordRef,
    RetryPolicy,
    RunReport,
    RunStatus,
    SkipReason,
    SyncSettings,
    TransientError,
    Workload,
)
from serversync.mime import parse_headers, parse_message
from serversync.model import EmailActivity, OutgoingAttachment
from serversync.testing import (
    FaultPoint,
    InMemoryWorld,
    SimulatedCrash,
    a_pending_email,
    an_email,
)

ALICE = "alice@contoso.example"
BOB = "bob@contoso.example"
JANE = "jane@fabrikam.example"


async def send(world: InMemoryWorld, **engine_args: object) -> RunReport:
    async with world.engine(**engine_args) as engine:
        return await engine.run_once(workloads=[Workload.OUTGOING])


def stored(world: InMemoryWorld, activity: EmailActivity) -> EmailActivity:
    return next(a for a in world.storage.activities() if a.id == activity.id)


async def test_pending_email_is_sent_once_with_a_message_id_derived_from_the_activity() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    email = a_pending_email(sender_mailbox=alice, to=[JANE], subject="Quote")
    world.storage.put_activity(email)

    report = await send(world)

    (result,) = report.sends()
    assert result.status is EmailStatus.SENT
    after = stored(world, email)
    assert after.status is EmailStatus.SENT
    assert after.delivery_attempts == 1
    assert after.sent_on == world.clock.now()
    assert after.message_id == f"<serversync.{email.id}@contoso.example>"
    (sent,) = world.server.outbox
    assert sent.recipients == (JANE,)
    assert parse_headers(sent.data).message_id == after.message_id

    world.clock.advance(timedelta(minutes=5))
    again = await send(world)
    assert list(again.sends()) == []
    assert len(world.server.outbox) == 1


async def test_transient_refusal_is_retried_until_attempts_run_out_then_failed() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    email = a_pending_email(sender_mailbox=alice, to=[JANE], subject="Quote")
    world.storage.put_activity(email)
    world.server.faults.fail_next(
        "send",
        lambda: TransientError("451 try later", server_code="451", scope=ErrorScope.ITEM),
        times=5,
    )

    attempts = []
    for _ in range(5):
        report = await send(world)
        (result,) = report.sends()
        attempts.append((result.status, result.attempt))
        world.clock.advance(timedelta(minutes=5))

    assert attempts == [(EmailStatus.PENDING_SEND, n) for n in range(1, 5)] + [
        (EmailStatus.FAILED, 5)
    ]
    after = stored(world, email)
    assert after.state is EmailStateCode.OPEN, "a Failed email stays open to be fixed and re-sent"
    assert after.last_send_error is not None
    assert after.last_send_error.server_code == "451"
    assert world.server.outbox == []


async def test_retry_waits_for_the_retry_interval() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    email = a_pending_email(sender_mailbox=alice, to=[JANE], subject="Quote")
    world.storage.put_activity(email)
    world.server.faults.fail_next(
        "send", TransientError("451", server_code="451", scope=ErrorScope.ITEM)
    )
    first = await send(world)
    (result,) = first.sends()
    assert result.next_attempt_at == world.clock.now() + timedelta(minutes=5)
    async with world.engine() as engine:
        forced = await engine.sync_mailbox(alice.id, workloads=[Workload.OUTGOING])
    assert forced[0].sends == (), "the email is not due before its retry time"


async def test_permanent_refusal_fails_at_once_with_the_server_code() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    email = a_pending_email(sender_mailbox=alice, to=[JANE], subject="Quote")
    world.storage.put_activity(email)
    world.server.faults.fail_next("send", MessageRejectedError("554 rejected", server_code="554"))

    report = await send(world)

    (result,) = report.sends()
    assert result.status is EmailStatus.FAILED
    assert result.error is not None
    assert result.error.server_code == "554"
    assert stored(world, email).delivery_attempts == 1


async def test_every_recipient_refused_fails_the_email_and_others_still_go() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    world.server.refuse_recipient("nobody@fabrikam.example")
    bad = a_pending_email(sender_mailbox=alice, to=["nobody@fabrikam.example"], subject="bad")
    good = a_pending_email(sender_mailbox=alice, to=[JANE], subject="good")
    world.storage.put_activity(bad)
    world.storage.put_activity(good)

    report = await send(world)

    assert {r.subject.split(" CRM:")[0]: r.status for r in report.sends()} == {
        "bad": EmailStatus.FAILED,
        "good": EmailStatus.SENT,
    }
    assert report.mailboxes[0].status is RunStatus.SUCCEEDED


@pytest.mark.parametrize(
    "change",
    [
        {"enabled_for_outgoing": False},
        {"approval": EmailApprovalStatus.PENDING_APPROVAL},
    ],
)
async def test_email_of_a_mailbox_that_may_not_send_stays_pending(
    change: dict[str, object],
) -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    world.storage.add_mailbox(attrs.evolve(alice, **change))  # type: ignore[arg-type]
    email = a_pending_email(sender_mailbox=alice, to=[JANE], subject="Quote")
    world.storage.put_activity(email)

    report = await send(world)

    assert report.mailboxes[0].status is RunStatus.SKIPPED
    after = stored(world, email)
    assert after.status is EmailStatus.PENDING_SEND
    assert after.delivery_attempts == 0
    assert world.server.outbox == []


async def test_connection_failure_gives_claimed_emails_back_without_spending_attempts() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    emails = [a_pending_email(sender_mailbox=alice, to=[JANE], subject=f"e{n}") for n in range(2)]
    for email in emails:
        world.storage.put_activity(email)
    world.server.faults.fail_next("connect", ConnectionFailedError("refused"))

    report = await send(world)

    assert report.mailboxes[0].status is RunStatus.FAILED
    for email in emails:
        after = stored(world, email)
        assert after.status is EmailStatus.PENDING_SEND
        assert after.delivery_attempts == 0
    world.clock.advance(timedelta(minutes=5))
    retry = await send(world)
    assert [r.status for r in retry.sends()] == [EmailStatus.SENT, EmailStatus.SENT]


async def test_connection_lost_mid_batch_counts_only_the_email_being_sent() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    emails = [a_pending_email(sender_mailbox=alice, to=[JANE], subject=f"e{n}") for n in range(3)]
    for email in emails:
        world.storage.put_activity(email)
    world.server.faults.fail_next("send", ConnectionFailedError("dropped"), skip=1)

    report = await send(world)

    assert report.mailboxes[0].status is RunStatus.FAILED
    assert [stored(world, e).status for e in emails] == [
        EmailStatus.SENT,
        EmailStatus.PENDING_SEND,
        EmailStatus.PENDING_SEND,
    ]
    assert [stored(world, e).delivery_attempts for e in emails] == [1, 1, 0]


async def test_crash_after_the_server_accepted_marks_the_email_uncertain_not_resent() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    email = a_pending_email(sender_mailbox=alice, to=[JANE], subject="Quote")
    world.storage.put_activity(email)
    world.server.faults.fail_next("send", SimulatedCrash(), point=FaultPoint.AFTER)

    with pytest.raises(BaseExceptionGroup):
        await send(world)
    assert stored(world, email).status is EmailStatus.SENDING
    assert len(world.server.outbox) == 1

    world.clock.advance(timedelta(minutes=31))  # past the claim and the lease
    report = await send(world)

    after = stored(world, email)
    assert after.status is EmailStatus.FAILED
    assert after.delivery_uncertain
    assert [r.status for r in report.sends()] == [EmailStatus.FAILED]
    assert len(world.server.outbox) == 1, "an uncertain email must not be sent again"


async def test_a_claim_that_expired_before_any_attempt_is_given_back_and_sent_once() -> None:
    world = InMemoryWorld()  # the default policy: mark uncertain
    alice = world.add_user(ALICE)
    email = a_pending_email(sender_mailbox=alice, to=[JANE], subject="Quote")
    world.storage.put_activity(email)
    # Another engine claimed it and stopped before storing its Message-ID.
    now = world.clock.now()
    (claim,) = await world.storage.claim_pending_send(
        alice.id, owner="engine-that-died", now=now, until=now + timedelta(minutes=30), limit=1
    )
    assert claim.activity.message_id is None

    world.clock.advance(timedelta(minutes=31))
    report = await send(world)

    after = stored(world, email)
    assert [r.status for r in report.sends()] == [EmailStatus.PENDING_SEND, EmailStatus.SENT]
    assert after.status is EmailStatus.SENT
    assert not after.delivery_uncertain
    assert after.delivery_attempts == 1, "the expired claim counts no attempt"
    assert len(world.server.outbox) == 1


async def test_resend_policy_sends_an_expired_claim_again() -> None:
    world = InMemoryWorld(
        settings=SyncSettings(retry=RetryPolicy(expired_claim_policy=ExpiredClaimPolicy.RESEND))
    )
    alice = world.add_user(ALICE)
    email = a_pending_email(sender_mailbox=alice, to=[JANE], subject="Quote")
    world.storage.put_activity(email)
    world.server.faults.fail_next("send", SimulatedCrash(), point=FaultPoint.AFTER)
    with pytest.raises(BaseExceptionGroup):
        await send(world)

    world.clock.advance(timedelta(minutes=31))
    await send(world)

    after = stored(world, email)
    assert after.status is EmailStatus.SENT
    assert after.delivery_attempts == 2
    assert len(world.server.outbox) == 2, "resend accepts a possible duplicate, by choice"


async def test_forward_mailbox_never_sends() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE, is_forward_mailbox=True)
    world.storage.put_activity(a_pending_email(sender_mailbox=alice, to=[JANE], subject="x"))
    report = await send(world)
    assert report.mailboxes[0].skip_reason is SkipReason.FORWARD_MAILBOX_CANNOT_SEND
    assert world.server.outbox == []


async def test_sent_email_and_its_reply_round_trip_between_two_users() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    world.add_user(BOB, filtering=IncomingFilteringMethod.NO_EMAIL_MESSAGES)
    email = a_pending_email(sender_mailbox=alice, to=[BOB], subject="Lunch?")
    world.storage.put_activity(email)
    async with world.engine() as engine:
        await engine.run_once()
        sent = stored(world, email)
        assert sent.status is EmailStatus.SENT
        assert sent.message_id is not None
        reply_to = sent.message_id
        world.deliver(
            ALICE, an_email(sender=BOB, to=[ALICE], subject="RE: Lunch?", in_reply_to=reply_to)
        )
        world.clock.advance(timedelta(minutes=5))
        report = await engine.run_once()
    tracked = [i for i in report.items() if i.subject == "RE: Lunch?"]
    assert len(tracked) == 1
    assert tracked[0].activity_id is not None
    reply = next(a for a in world.storage.activities() if a.id == tracked[0].activity_id)
    assert reply.correlated_activity_id == email.id


class OnlyAlicesAssistant:
    """A host's send-as answer: Bob may send as Alice, nobody else as anybody."""

    async def may_send_as(self, submitter: RecordRef, sender: RecordRef) -> bool:
        return (submitter.id, sender.id) == (BOB, ALICE)


async def test_20_send_as_another_user_needs_the_hosts_permission() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    bob = world.add_user(BOB)
    carol = RecordRef("systemuser", "carol@contoso.example")
    allowed = a_pending_email(
        sender_mailbox=alice, to=[JANE], subject="from Bob as Alice", submitted_by=bob.owner
    )
    refused = a_pending_email(
        sender_mailbox=alice, to=[JANE], subject="from Carol as Alice", submitted_by=carol
    )
    world.storage.put_activity(allowed)
    world.storage.put_activity(refused)

    report = await send(world, send_as=OnlyAlicesAssistant())

    statuses = {r.subject.split(" CRM:")[0]: r for r in report.sends()}
    assert statuses["from Bob as Alice"].status is EmailStatus.SENT
    assert stored(world, allowed).sender_mailbox_id == alice.id
    failed = statuses["from Carol as Alice"]
    assert failed.status is EmailStatus.FAILED
    assert failed.error is not None
    assert failed.error.message.startswith("You cannot send email as the selected user")
    assert len(world.server.outbox) == 1


async def test_unresolved_recipients_are_sent_only_when_the_organisation_allows_it() -> None:
    for allowed in (False, True):
        world = InMemoryWorld(
            settings=SyncSettings(
                organization=OrganizationSettings(allow_unresolved_parties_on_email_send=allowed)
            )
        )
        alice = world.add_user(ALICE)
        email = a_pending_email(sender_mailbox=alice, to=[JANE], subject="Hi")
        unresolved = attrs.evolve(
            email, parties=tuple(attrs.evolve(p, record=None) for p in email.parties)
        )
        world.storage.put_activity(unresolved)
        report = await send(world)
        (result,) = report.sends()
        assert result.status is (EmailStatus.SENT if allowed else EmailStatus.FAILED)
        if not allowed:
            assert result.error is not None
            assert "unresolved recipients jane@fabrikam.example" in result.error.message


class QuoteFiles:
    """A host's attachment storage: one PDF per email, one of them too big to send."""

    async def attachments_for(self, activity: EmailActivity) -> Sequence[OutgoingAttachment]:
        size = 6_000_000 if "big" in activity.subject else 6
        return [
            OutgoingAttachment(
                filename="quote.pdf", content_type="application/pdf", data=b"x" * size
            )
        ]


async def test_attachments_from_the_host_are_sent_and_an_oversized_one_fails_its_email() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    small = a_pending_email(sender_mailbox=alice, to=[JANE], subject="small quote")
    big = a_pending_email(sender_mailbox=alice, to=[JANE], subject="big quote")
    world.storage.put_activity(small)
    world.storage.put_activity(big)

    report = await send(world, attachments=QuoteFiles())

    assert {r.subject.split(" CRM:")[0]: r.status for r in report.sends()} == {
        "small quote": EmailStatus.SENT,
        "big quote": EmailStatus.FAILED,
    }
    (sent,) = world.server.outbox
    assert [a.filename for a in parse_message(sent.data).attachments] == ["quote.pdf"]
