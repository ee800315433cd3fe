"""SyncEngine.explain: every decision with its trace, without storing anything."""

from __future__ import annotations

import pytest

from serversync import (
    DecisionReason,
    IncomingFilteringMethod,
    MailboxId,
    MalformedMessageError,
    OutcomeKind,
    RuleDecision,
    Workload,
    default_rules,
)
from serversync.relevance import AutoReplyRule
from serversync.testing import InMemoryWorld, a_contact, a_sent_email, an_email

ALICE = "alice@contoso.example"
BOB = "bob@contoso.example"
SUPPORT = "support@contoso.example"
JANE = "jane@fabrikam.example"


def a_world() -> InMemoryWorld:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    world.add_user(BOB, filtering=IncomingFilteringMethod.FROM_LEADS_CONTACTS_ACCOUNTS)
    world.add_queue(SUPPORT)
    world.add_record(a_contact(JANE))
    world.storage.put_activity(
        a_sent_email(
            sender_mailbox=alice, to=[JANE], subject="Quote", message_id="<quote@contoso.example>"
        )
    )
    return world


def mailbox_id(address: str) -> MailboxId:
    return MailboxId(f"mailbox:{address}")


CASES = [
    (
        ALICE,
        an_email(
            sender=JANE, to=[ALICE], subject="RE: Quote", in_reply_to="<quote@contoso.example>"
        ),
        DecisionReason.CORRELATION_MATCH,
    ),
    (
        ALICE,
        an_email(sender=JANE, to=[ALICE], subject="Hello"),
        DecisionReason.NO_CORRELATION_MATCH,
    ),
    (ALICE, an_email(sender=JANE, to=["x@elsewhere.example"]), DecisionReason.NO_RECIPIENT_MATCH),
    (BOB, an_email(sender=JANE, to=[BOB]), DecisionReason.SENDER_MATCH),
    (SUPPORT, an_email(sender=JANE, to=[SUPPORT]), DecisionReason.ACCEPT_ALL),
    (ALICE, an_email(sender="nobody", to=[ALICE]), DecisionReason.INVALID_SENDER),
]


@pytest.mark.parametrize(("mailbox", "raw", "reason"), CASES, ids=[c[2].name for c in CASES])
async def test_explain_gives_the_reason_and_the_trace_without_storing(
    mailbox: str, raw: bytes, reason: DecisionReason
) -> None:
    world = a_world()
    before = world.storage.activities()
    async with world.engine() as engine:
        outcome = await engine.explain(raw, mailbox_id(mailbox))
    assert outcome.reason is reason
    assert outcome.explanation
    assert outcome.trace, "every decision has a trace"
    assert outcome.trace[-1].reason is reason, "the trace ends with the deciding rule"
    assert all(step.decision is RuleDecision.ABSTAINED for step in outcome.trace[:-1])
    assert world.storage.activities() == before, "explain stores nothing"
    assert world.server.faults.calls == [], "explain contacts no server"


async def test_explain_reports_a_duplicate_of_a_stored_email() -> None:
    world = a_world()
    raw = an_email(sender=JANE, to=[SUPPORT], message_id="<once@fabrikam.example>")
    world.deliver(SUPPORT, raw)
    async with world.engine() as engine:
        await engine.run_once(workloads=[Workload.INCOMING])
        outcome = await engine.explain(raw, mailbox_id(SUPPORT))
    assert outcome.kind is OutcomeKind.DUPLICATE
    assert outcome.reason is DecisionReason.DUPLICATE
    assert outcome.activity_id == world.storage.activities()[-1].id


async def test_a_rejection_explains_who_was_asked() -> None:
    world = a_world()
    async with world.engine() as engine:
        outcome = await engine.explain(
            an_email(sender=JANE, to=[ALICE], cc=[BOB], subject="Hi", in_reply_to="<x@y.z>"),
            mailbox_id(ALICE),
        )
    # Bob filters by sender and Jane is a contact, so Bob accepts.
    assert outcome.reason is DecisionReason.SENDER_MATCH
    async with world.engine() as engine:
        rejected = await engine.explain(
            an_email(sender="stranger@example.org", to=[ALICE], in_reply_to="<x@y.z>"),
            mailbox_id(ALICE),
        )
    assert rejected.reason is DecisionReason.NO_CORRELATION_MATCH
    assert "systemuser:alice@contoso.example tracks email in response to CRM email" in (
        rejected.explanation
    )
    assert "answers no email stored in the CRM" in rejected.explanation


async def test_the_opt_in_auto_reply_rule_rejects_automatic_mail_and_says_so() -> None:
    world = a_world()
    raw = an_email(sender=JANE, to=[SUPPORT], headers=[("Auto-Submitted", "auto-replied")])
    async with world.engine(rules=[AutoReplyRule(), *default_rules()]) as engine:
        outcome = await engine.explain(raw, mailbox_id(SUPPORT))
    assert outcome.kind is OutcomeKind.NOT_RELEVANT
    assert outcome.rule == "auto-reply"
    assert [s.rule for s in outcome.trace] == ["auto-reply"]
    async with world.engine(rules=[AutoReplyRule(), *default_rules()]) as engine:
        human = await engine.explain(
            an_email(sender=JANE, to=[SUPPORT], headers=[("Auto-Submitted", "no")]),
            mailbox_id(SUPPORT),
        )
    assert human.reason is DecisionReason.ACCEPT_ALL


async def test_outcomes_of_a_run_carry_the_trace() -> None:
    world = a_world()
    world.deliver(SUPPORT, an_email(sender=JANE, to=[SUPPORT]))
    async with world.engine() as engine:
        report = await engine.run_once(workloads=[Workload.INCOMING])
    (outcome,) = report.items()
    assert [s.rule for s in outcome.trace] == [
        "loop-guard",
        "invalid-sender",
        "internal-email",
        "folder-tracking",
        "filtering-method",
    ]
    assert outcome.trace[-1].decision is RuleDecision.TRACKED


async def test_explain_refuses_unreadable_headers() -> None:
    world = a_world()
    async with world.engine() as engine:
        with pytest.raises(MalformedMessageError):
            await engine.explain(b"", mailbox_id(ALICE))
