"""Tests of the host code in crm_mail.py, run on serversync's in-memory adapters.

Each test builds an ``InMemoryWorld`` (mail server, CRM storage, record directory, fake
clock), drives a real ``SyncEngine`` over it, and asserts on outcomes: what was stored,
reported and notified.
"""

from __future__ import annotations

from datetime import timedelta

from crm_mail import NewEmailNotifier, Notification, SyncSummary, VaultCredentials, summarize

from serversync import (
    ConfigurationError,
    ConnectionFailedError,
    IncomingFilteringMethod,
    Mailbox,
    OutcomeKind,
    RunStatus,
    Workload,
)
from serversync.testing import InMemoryWorld, a_contact, a_pending_email, a_sent_email, an_email

ALICE = "alice@contoso.example"
SUPPORT = "support@contoso.example"
JANE = "jane@fabrikam.example"
SUPPORT_PASSWORD = "support-pw-4711"


def a_world() -> tuple[InMemoryWorld, Mailbox]:
    """Alice (returned) tracks replies to CRM email; the support queue tracks everything."""
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    world.add_queue(SUPPORT, password=SUPPORT_PASSWORD)
    world.add_record(a_contact(JANE))
    return world, alice


async def test_every_tracked_email_notifies_once() -> None:
    world, _ = a_world()
    notifier = NewEmailNotifier()
    world.send_mail(an_email(sender=JANE, to=[SUPPORT], subject="Order 1234 arrived damaged"))
    world.send_mail(an_email(sender="news@letter.example", to=[ALICE], subject="Weekly digest"))

    async with world.engine(observer=notifier) as engine:
        await engine.run_once()
        world.clock.advance(timedelta(minutes=6))
        await engine.run_once()  # nothing new: no second notification

    assert notifier.notifications == [
        Notification(
            mailbox_id=f"mailbox:{SUPPORT}",
            text=f"New email from {JANE}: Order 1234 arrived damaged",
        )
    ]


async def test_a_reply_to_crm_email_is_tracked_for_alice() -> None:
    world, alice = a_world()
    quote = a_sent_email(
        sender_mailbox=alice,
        to=[JANE],
        subject="Quote",
        message_id="<quote-1@contoso.example>",
    )
    world.storage.put_activity(quote)
    world.send_mail(
        an_email(sender=JANE, to=[ALICE], subject="RE: Quote", in_reply_to=quote.message_id)
    )
    notifier = NewEmailNotifier()

    async with world.engine(observer=notifier) as engine:
        report = await engine.run_once()

    assert summarize(report.mailboxes) == SyncSummary(tracked=1)
    [stored_reply] = [a for a in world.storage.activities() if a.subject == "RE: Quote"]
    assert stored_reply.parent_activity_id == quote.id
    assert [n.text for n in notifier.notifications] == [f"New email from {JANE}: RE: Quote"]


async def test_summary_counts_tracked_ignored_and_sent() -> None:
    world, alice = a_world()
    world.storage.put_activity(a_pending_email(sender_mailbox=alice, to=[JANE], subject="Hello"))
    world.send_mail(an_email(sender=JANE, to=[SUPPORT], subject="Help"))
    world.send_mail(an_email(sender=JANE, to=[ALICE], subject="Not a reply"))

    async with world.engine() as engine:
        report = await engine.run_once()

    assert summarize(report.mailboxes) == SyncSummary(tracked=1, ignored=1, sent=1)
    assert len(world.server.outbox) == 1


# --8<-- [start:vault]
async def test_a_mailbox_without_a_password_in_the_vault_fails_alone() -> None:
    world, alice = a_world()
    world.send_mail(an_email(sender=JANE, to=[SUPPORT], subject="Help"))
    vault = {f"mail/{SUPPORT}": SUPPORT_PASSWORD}  # none for Alice
    credentials = VaultCredentials(vault)

    async with world.engine(credentials=credentials) as engine:
        report = await engine.run_once(workloads=[Workload.INCOMING])

    assert summarize(report.mailboxes) == SyncSummary(tracked=1, failed_mailboxes=(alice.id,))
    [alice_run] = report.for_mailbox(alice.id)
    assert alice_run.error is not None
    assert alice_run.error.error_type == ConfigurationError.__name__
    assert SUPPORT_PASSWORD not in repr(report)  # a password never reaches a report


# --8<-- [end:vault]


async def test_a_server_outage_is_retried_on_a_later_run() -> None:
    world = InMemoryWorld()
    world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    world.send_mail(an_email(sender=JANE, to=[ALICE], subject="Are you there?"))
    world.server.faults.fail_next("connect", ConnectionFailedError("connection refused"))

    async with world.engine() as engine:
        first = await engine.run_once(workloads=[Workload.INCOMING])
        world.clock.advance(timedelta(hours=1))  # past the back-off
        second = await engine.run_once(workloads=[Workload.INCOMING])

    assert [r.status for r in first.mailboxes] == [RunStatus.FAILED]
    assert [i.kind for i in second.items()] == [OutcomeKind.TRACKED]
