"""Forward mailboxes (spec entities-and-lifecycle.md §6, behaviour 9)."""

from __future__ import annotations

from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

from serversync import (
    DecisionReason,
    IncomingDeliveryMethod,
    IncomingFilteringMethod,
    MailboxId,
    OutcomeKind,
    SkipReason,
    Workload,
)
from serversync.testing import InMemoryWorld, a_pending_email, a_sent_email, an_email

FORWARD = "crm-forward@contoso.example"
ALICE = "alice@contoso.example"
JANE = "jane@fabrikam.example"


def forwarded(original: bytes, by: str, *, base64_encoded: bool = False) -> bytes:
    """What a server-side rule 'forward as attachment' in ``by``'s mailbox produces."""
    wrapper = EmailMessage()
    wrapper["From"] = by
    wrapper["To"] = FORWARD
    wrapper["Subject"] = "FW: forwarded as attachment"
    wrapper["Message-ID"] = f"<wrapper-{len(original)}@contoso.example>"
    wrapper.set_content("see attached")
    if base64_encoded:  # what some mailers do, against RFC 2046
        wrapper.add_attachment(original, maintype="message", subtype="rfc822")
    else:
        wrapper.add_attachment(message_from_bytes(original, policy=default))
    return wrapper.as_bytes()


def forward_world() -> InMemoryWorld:
    world = InMemoryWorld()
    world.add_forward_mailbox(FORWARD)
    alice = world.add_user(
        ALICE,
        filtering=IncomingFilteringMethod.IN_RESPONSE_TO_CRM_EMAIL,
        incoming_delivery_method=IncomingDeliveryMethod.FORWARD_MAILBOX,
    )
    world.storage.put_activity(
        a_sent_email(
            sender_mailbox=alice, to=[JANE], subject="Quote", message_id="<q@contoso.example>"
        )
    )
    return world


async def test_9_an_original_forwarded_as_attachment_is_evaluated_as_the_users_mail() -> None:
    world = forward_world()
    reply = an_email(
        sender=JANE, to=[ALICE], subject="RE: Quote", in_reply_to="<q@contoso.example>"
    )
    world.deliver(FORWARD, forwarded(reply, by=ALICE))
    hello = an_email(sender=JANE, to=[ALICE], subject="Hi")
    world.deliver(FORWARD, forwarded(hello, by=ALICE, base64_encoded=True))

    async with world.engine() as engine:
        report = await engine.run_once()

    by_subject = {i.subject: i for i in report.items()}
    tracked = by_subject["RE: Quote"]
    assert tracked.kind is OutcomeKind.TRACKED
    assert tracked.reason is DecisionReason.CORRELATION_MATCH
    assert tracked.explanation.startswith(f"forwarded by {ALICE}")
    assert by_subject["Hi"].reason is DecisionReason.NO_CORRELATION_MATCH, (
        "Alice's own filter decides"
    )
    activity = next(a for a in world.storage.activities() if a.subject == "RE: Quote")
    assert activity.receiving_mailbox_id == MailboxId(f"mailbox:{ALICE}")
    assert activity.message_id is not None
    assert not activity.message_id.startswith("<wrapper-"), "the original is stored"
    # Alice's own mailbox is not polled: her incoming method is Forward Mailbox.
    alice_reports = [r for r in report.mailboxes if r.mailbox_id == MailboxId(f"mailbox:{ALICE}")]
    incoming = next(r for r in alice_reports if r.workload is Workload.INCOMING)
    assert incoming.skip_reason is SkipReason.DELIVERY_METHOD_NOT_SERVER_SIDE_SYNC


async def test_9_mail_forwarded_by_someone_not_using_the_forward_mailbox_is_not_tracked() -> None:
    world = forward_world()
    world.add_user("bob@contoso.example", filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    world.deliver(
        FORWARD,
        forwarded(an_email(sender=JANE, to=["bob@contoso.example"]), by="bob@contoso.example"),
    )
    world.deliver(FORWARD, an_email(sender=JANE, to=[FORWARD], subject="not a forward"))
    async with world.engine() as engine:
        report = await engine.run_once(workloads=[Workload.INCOMING])
    kinds = sorted((i.kind.value, i.rule or "") for i in report.items())
    assert kinds == [("failed", ""), ("not_relevant", "forward-mailbox")]
    assert [a.subject for a in world.storage.activities()] == ["Quote"]


async def test_9_a_forward_mailbox_never_sends() -> None:
    world = forward_world()
    forward_box = next(m for m in await world.storage.list_mailboxes() if m.is_forward_mailbox)
    world.storage.put_activity(a_pending_email(sender_mailbox=forward_box, to=[JANE], subject="x"))
    async with world.engine() as engine:
        report = await engine.run_once(workloads=[Workload.OUTGOING])
    reasons = {r.mailbox_id: r.skip_reason for r in report.mailboxes}
    assert reasons[forward_box.id] is SkipReason.FORWARD_MAILBOX_CANNOT_SEND
    assert world.server.outbox == []
