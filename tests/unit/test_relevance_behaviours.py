"""Dynamics parity: the testable behaviours of spec email-relevance.md §12, run through the
SyncEngine with the in-memory adapters. Each test is named after its behaviour."""

from __future__ import annotations

import base64
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime

import attrs

from serversync import (
    CorrelationMethod,
    DecisionReason,
    EmailApprovalStatus,
    EmailDirection,
    EmailStatus,
    ErrorScope,
    IncomingFilteringMethod,
    LoopGuardSettings,
    OrganizationSettings,
    OutcomeKind,
    ParticipationType,
    RecordRef,
    RunReport,
    SmartMatchingSettings,
    SyncSettings,
    TrackingTokenSettings,
    TransientError,
    Workload,
)
from serversync.mime import parse_headers
from serversync.model import SENT, CrmRecord, EmailActivity
from serversync.relevance.conversation import base_conversation_index_hash
from serversync.testing import (
    InMemoryWorld,
    a_contact,
    a_pending_email,
    a_sent_email,
    an_account,
    an_email,
)

ALICE = "alice@contoso.example"
BOB = "bob@contoso.example"
SUPPORT = "support@contoso.example"
JANE = "jane@fabrikam.example"


def world_with(**org: object) -> InMemoryWorld:
    return InMemoryWorld(
        settings=SyncSettings(organization=OrganizationSettings(**org))  # type: ignore[arg-type]
    )


async def run(world: InMemoryWorld, *workloads: Workload) -> RunReport:
    async with world.engine() as engine:
        return await engine.run_once(workloads=workloads or (Workload.INCOMING,))


def incoming(world: InMemoryWorld) -> list[EmailActivity]:
    return [a for a in world.storage.activities() if a.direction is EmailDirection.INCOMING]


def sent_subject(world: InMemoryWorld, email: EmailActivity) -> str:
    return next(a.subject for a in world.storage.activities() if a.id == email.id)


async def test_3_filter_2_ignores_a_custom_table_sender_and_filter_3_tracks_it() -> None:
    for method, tracked in (
        (IncomingFilteringMethod.FROM_LEADS_CONTACTS_ACCOUNTS, False),
        (IncomingFilteringMethod.FROM_EMAIL_ENABLED_RECORDS, True),
    ):
        world = InMemoryWorld()
        world.add_user(ALICE, filtering=method)
        world.add_record(
            CrmRecord(ref=RecordRef("new_supplier", "s1"), email_address=JANE, name="Supplier")
        )
        world.deliver(ALICE, an_email(sender=JANE, to=[ALICE]))
        report = await run(world)
        (outcome,) = report.items()
        assert (outcome.kind is OutcomeKind.TRACKED) is tracked, method
        if tracked:
            assert outcome.reason is DecisionReason.SENDER_MATCH


async def test_4_user_with_no_email_and_queue_accepting_all_track_once_for_the_queue() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE, filtering=IncomingFilteringMethod.NO_EMAIL_MESSAGES)
    support = world.add_queue(SUPPORT)
    world.deliver(ALICE, an_email(sender=JANE, to=[ALICE, SUPPORT]))
    async with world.engine() as engine:
        (report,) = await engine.sync_mailbox(alice.id, workloads=[Workload.INCOMING])
    (outcome,) = report.items
    assert outcome.reason is DecisionReason.ACCEPT_ALL
    (activity,) = incoming(world)
    assert activity.accepting_entity == support.owner
    assert activity.receiving_mailbox_id == alice.id
    assert [q.queue for q in world.storage.queue_items()] == [support.owner]


async def test_forcing_the_filtering_method_for_user_mailboxes_asks_only_the_owner() -> None:
    world = world_with(force_filtering_method_for_user_mailboxes=True)
    alice = world.add_user(ALICE, filtering=IncomingFilteringMethod.NO_EMAIL_MESSAGES)
    support = world.add_queue(SUPPORT)
    message = an_email(sender=JANE, to=[ALICE, SUPPORT])
    world.deliver(ALICE, message)
    world.deliver(SUPPORT, message)
    async with world.engine() as engine:
        (in_alices,) = await engine.sync_mailbox(alice.id, workloads=[Workload.INCOMING])
        (in_support,) = await engine.sync_mailbox(support.id, workloads=[Workload.INCOMING])
    # Alice's mailbox asks Alice alone, who tracks nothing; the queue still accepts its copy.
    (rejected,) = in_alices.items
    assert rejected.kind is OutcomeKind.NOT_RELEVANT
    (tracked,) = in_support.items
    assert tracked.reason is DecisionReason.ACCEPT_ALL
    (activity,) = incoming(world)
    assert activity.receiving_mailbox_id == support.id


async def _send_with_token(world: InMemoryWorld, subject: str) -> EmailActivity:
    alice = world.add_user(ALICE)
    world.add_record(a_contact(JANE))
    email = a_pending_email(
        sender_mailbox=alice, to=[JANE], subject=subject, regarding=RecordRef("opportunity", "o1")
    )
    world.storage.put_activity(email)
    await run(world, Workload.OUTGOING)
    return next(a for a in world.storage.activities() if a.id == email.id)


async def test_7_sent_email_carries_a_token_and_a_reply_without_in_reply_to_correlates_by_it() -> (
    None
):
    world = InMemoryWorld()
    sent = await _send_with_token(world, "Quote")
    assert sent.status is EmailStatus.SENT
    assert sent.subject == "Quote CRM:0001001"
    assert sent.tracking_token == "CRM:0001001"
    (on_the_wire,) = world.server.outbox
    assert parse_headers(on_the_wire.data).subject == "Quote CRM:0001001"

    world.deliver(ALICE, an_email(sender=JANE, to=[ALICE], subject="RE: Quote CRM:0001001"))
    world.clock.advance(timedelta(minutes=5))
    report = await run(world)

    (outcome,) = report.items()
    assert outcome.reason is DecisionReason.CORRELATION_MATCH
    (reply,) = incoming(world)
    assert reply.correlation_method is CorrelationMethod.TRACKING_TOKEN
    assert reply.correlated_activity_id == sent.id
    assert reply.parent_activity_id is None, "token correlation sets no parent"
    assert reply.regarding == RecordRef("opportunity", "o1")


async def test_8_counter_wraps_after_999_and_an_old_prefix_still_correlates() -> None:
    world = world_with(
        tracking_tokens=TrackingTokenSettings(prefix="REF:", previous_prefixes=("CRM:",))
    )
    alice = world.add_user(ALICE)
    for _ in range(999):
        await world.storage.allocate_tracking_numbers(alice.owner)  # type: ignore[arg-type]
    email = a_pending_email(sender_mailbox=alice, to=[JANE], subject="Wrap")
    world.storage.put_activity(email)
    await run(world, Workload.OUTGOING)
    assert sent_subject(world, email) == "Wrap REF:0001000", "counter 1000 wraps to 000"

    old = a_sent_email(
        sender_mailbox=alice,
        to=[JANE],
        subject="Old CRM:0001042",
        message_id="<old@contoso.example>",
        tracking_token="CRM:0001042",
    )
    world.storage.put_activity(old)
    world.deliver(ALICE, an_email(sender=JANE, to=[ALICE], subject="RE: Old CRM:0001042"))
    report = await run(world)
    (outcome,) = report.items()
    assert outcome.reason is DecisionReason.CORRELATION_MATCH
    assert incoming(world)[0].correlated_activity_id == old.id


async def test_9_long_subject_is_cut_so_subject_and_token_fit_in_255() -> None:
    world = InMemoryWorld()
    sent = await _send_with_token(world, "x" * 300)
    assert len(sent.subject) == 255
    assert sent.subject.endswith(" CRM:0001001")

    tiny = world_with(tracking_tokens=TrackingTokenSettings(max_subject_length=8))
    sent_tiny = await _send_with_token(tiny, "A long subject")
    assert sent_tiny.subject == "A long s", "a token longer than the limit is left out"
    assert sent_tiny.tracking_token is None


async def test_10_smart_matching_needs_the_same_words_and_two_shared_addresses() -> None:
    async def outcome_for(subject: str, sender: str) -> EmailActivity | None:
        world = world_with(smart_matching=SmartMatchingSettings(enabled=True))
        alice = world.add_user(ALICE)
        world.add_record(a_contact(JANE))
        earlier = a_sent_email(
            sender_mailbox=alice,
            to=[JANE, BOB],
            subject="Widgets order",
            message_id="<widgets@contoso.example>",
            sent_on=world.clock.now() - timedelta(days=3),
        )
        world.storage.put_activity(earlier)
        world.deliver(ALICE, an_email(sender=sender, to=[ALICE], subject=subject))
        await run(world)
        found = incoming(world)
        return found[0] if found else None

    matched = await outcome_for("RE: widgets ORDER", BOB)
    assert matched is not None
    assert matched.correlation_method is CorrelationMethod.SMART_MATCHING
    assert matched.parent_activity_id is None
    assert await outcome_for("RE: widgets order update", BOB) is None, "an extra word"
    assert await outcome_for("RE: widgets order", "stranger@example.org") is None, (
        "only one shared address"
    )


async def test_11_sender_owned_by_the_mailbox_owner_wins_and_too_many_matches_stay_unresolved() -> (
    None
):
    world = InMemoryWorld(settings=SyncSettings())
    alice = world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    contact = a_contact(JANE)
    account = an_account(JANE, owner=alice.owner)
    world.add_record(contact)
    world.add_record(account)
    world.deliver(ALICE, an_email(sender=JANE, to=[ALICE]))
    await run(world)
    (activity,) = incoming(world)
    (sender,) = activity.parties_of(ParticipationType.SENDER)
    assert sender.record == account.ref, "the record the mailbox owner owns wins"

    crowded = InMemoryWorld()
    crowded.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    for n in range(101):
        crowded.add_record(attrs.evolve(a_contact(JANE), ref=RecordRef("contact", f"c{n}")))
    crowded.deliver(ALICE, an_email(sender=JANE, to=[ALICE]))
    await run(crowded)
    (activity,) = incoming(crowded)
    assert activity.parties_of(ParticipationType.SENDER)[0].record is None

    strict = world_with(unresolve_sender_in_case_of_multiple_match=True)
    strict.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    strict.add_record(a_contact(JANE))
    strict.add_record(an_account(JANE))
    strict.deliver(ALICE, an_email(sender=JANE, to=[ALICE]))
    await run(strict)
    assert incoming(strict)[0].parties_of(ParticipationType.SENDER)[0].record is None


async def test_12_a_recipient_matching_three_contacts_gets_three_parties_or_one_unresolved() -> (
    None
):
    for unresolve, expected in ((False, 3), (True, 1)):
        world = world_with(unresolve_email_address_if_multiple_match=unresolve)
        world.add_queue(SUPPORT)
        for n in range(3):
            world.add_record(
                attrs.evolve(a_contact("shared@fabrikam.example"), ref=RecordRef("contact", f"{n}"))
            )
        world.deliver(SUPPORT, an_email(sender=JANE, to=[SUPPORT, "shared@fabrikam.example"]))
        await run(world)
        (activity,) = incoming(world)
        shared = [
            p
            for p in activity.parties_of(ParticipationType.TO_RECIPIENT)
            if p.address == "shared@fabrikam.example"
        ]
        assert len(shared) == expected
        if unresolve:
            assert shared[0].record is None


async def test_15_an_encoded_subject_is_decoded_and_its_token_found() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    earlier = a_sent_email(
        sender_mailbox=alice,
        to=[JANE],
        subject="Angebot CRM:0001007",
        message_id="<angebot@contoso.example>",
        tracking_token="CRM:0001007",
    )
    world.storage.put_activity(earlier)
    encoded = base64.b64encode("AW: Angebot für Müller CRM:0001007".encode()).decode()
    raw = an_email(sender=JANE, to=[ALICE], subject="placeholder").replace(
        b"Subject: placeholder", f"Subject: =?utf-8?B?{encoded}?=".encode()
    )
    world.deliver(ALICE, raw)
    await run(world)
    (activity,) = incoming(world)
    assert activity.subject == "AW: Angebot für Müller CRM:0001007"
    assert activity.correlation_method is CorrelationMethod.TRACKING_TOKEN


async def test_16_an_auto_reply_is_tracked_and_its_auto_submitted_header_kept() -> None:
    world = InMemoryWorld()
    world.add_queue(SUPPORT)
    world.deliver(
        SUPPORT,
        an_email(
            sender=JANE,
            to=[SUPPORT],
            subject="Out of office",
            headers=[("Auto-Submitted", "auto-replied")],
        ),
    )
    await run(world)
    (activity,) = incoming(world)
    assert activity.internet_message_headers == (("Auto-Submitted", "auto-replied"),)


async def test_17_an_oversized_or_blocked_attachment_is_left_out_and_flagged() -> None:
    world = world_with(max_upload_file_size=1000)
    world.add_queue(SUPPORT)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = JANE, SUPPORT, "Files"
    msg["Message-ID"] = "<files@fabrikam.example>"
    msg["Date"] = format_datetime(world.clock.now())
    msg.set_content("see attached")
    msg.add_attachment(b"x" * 10, maintype="text", subtype="plain", filename="small.txt")
    msg.add_attachment(b"x" * 5000, maintype="application", subtype="pdf", filename="big.pdf")
    msg.add_attachment(b"MZ", maintype="application", subtype="octet-stream", filename="run.exe")
    world.deliver(SUPPORT, msg.as_bytes())

    report = await run(world)

    assert [i.kind for i in report.items()] == [OutcomeKind.TRACKED]
    (activity,) = incoming(world)
    assert [a.filename for a in activity.attachments] == ["small.txt"]
    assert activity.notifications == 1


async def test_conversation_index_correlates_a_reply_to_its_thread() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    base = bytes(range(22))
    earlier = a_sent_email(
        sender_mailbox=alice,
        to=[JANE],
        subject="Thread",
        message_id="<thread@contoso.example>",
    )
    index = base64.b64encode(base).decode()
    world.storage.put_activity(
        attrs.evolve(earlier, base_conversation_index_hash=base_conversation_index_hash(index))
    )
    reply_index = base64.b64encode(base + b"\x01\x02\x03\x04\x05").decode()
    world.deliver(
        ALICE,
        an_email(
            sender=JANE, to=[ALICE], subject="Changed", headers=[("Thread-Index", reply_index)]
        ),
    )
    await run(world)
    (activity,) = incoming(world)
    assert activity.correlation_method is CorrelationMethod.CONVERSATION_INDEX
    assert activity.parent_activity_id == earlier.id
    assert activity.correlated_subject_changed


async def test_switches_turn_header_correlation_and_forwards_off() -> None:
    for org in (
        {"ignore_conversation_index_and_in_reply_to": True},
        {"do_not_correlate_forwarded_emails_as_replies": True},
        {"email_correlation_enabled": False},
    ):
        world = world_with(**org)
        alice = world.add_user(ALICE)
        world.storage.put_activity(
            a_sent_email(
                sender_mailbox=alice, to=[JANE], subject="Quote", message_id="<q@contoso.example>"
            )
        )
        world.deliver(
            ALICE,
            an_email(
                sender=JANE, to=[ALICE], subject="FW: Quote", in_reply_to="<q@contoso.example>"
            ),
        )
        report = await run(world)
        (outcome,) = report.items()
        assert outcome.reason is DecisionReason.NO_CORRELATION_MATCH, org


async def test_each_accepting_queue_recipient_gets_a_queue_item_and_others_none() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    sales = world.add_queue("sales@contoso.example")
    world.add_queue("archive@contoso.example", filtering=IncomingFilteringMethod.NO_EMAIL_MESSAGES)
    support = world.add_queue(SUPPORT)
    world.deliver(
        ALICE,
        an_email(
            sender=JANE,
            to=[ALICE, "sales@contoso.example"],
            cc=["archive@contoso.example", SUPPORT],
        ),
    )
    async with world.engine() as engine:
        await engine.sync_mailbox(alice.id, workloads=[Workload.INCOMING])
    queues = sorted(str(q.queue) for q in world.storage.queue_items())
    assert queues == sorted([str(sales.owner), str(support.owner)])


async def test_a_queue_mailbox_reached_through_a_distribution_list_gets_its_queue_item() -> None:
    world = InMemoryWorld()
    support = world.add_queue(SUPPORT)
    world.deliver(SUPPORT, an_email(sender=JANE, to=["everyone@contoso.example"]))
    report = await run(world)
    (outcome,) = report.items()
    assert outcome.reason is DecisionReason.ACCEPT_ALL
    assert [q.queue for q in world.storage.queue_items()] == [support.owner]


async def test_an_already_tracked_email_gets_the_second_queues_item_only_when_configured() -> None:
    for configured in (False, True):
        world = world_with(create_additional_queue_items_for_already_tracked_email=configured)
        bob = world.add_user(BOB, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
        support = world.add_queue(SUPPORT)
        message = an_email(sender=JANE, to=[BOB], cc=["team@contoso.example"])
        world.deliver(BOB, message)
        world.deliver(SUPPORT, message)  # reached the queue through a distribution list
        async with world.engine() as engine:
            await engine.sync_mailbox(bob.id, workloads=[Workload.INCOMING])
            (report,) = await engine.sync_mailbox(support.id, workloads=[Workload.INCOMING])
        assert report.items[0].kind is OutcomeKind.DUPLICATE
        items = [q.queue for q in world.storage.queue_items()]
        assert items == ([support.owner] if configured else [])


async def test_6_email_between_two_users_is_one_activity_or_two_when_configured() -> None:
    for two_activities in (False, True):
        world = world_with(
            auto_track_sent_folder_items=True,
            track_email_sent_between_users_as_two_activities=two_activities,
        )
        alice = world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
        bob = world.add_user(BOB, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
        sent = world.server.create_folder(ALICE, "Sent", parent=None, special_use=SENT)
        message = an_email(sender=ALICE, to=[BOB], subject="Lunch", message_id="<lunch@c.example>")
        world.deliver(ALICE, message, folder=sent)
        world.deliver(BOB, message)
        async with world.engine() as engine:
            await engine.sync_mailbox(alice.id, workloads=[Workload.INCOMING])
            (report,) = await engine.sync_mailbox(bob.id, workloads=[Workload.INCOMING])
        stored = sorted(a.direction.name for a in world.storage.activities())
        if two_activities:
            assert stored == ["INCOMING", "OUTGOING"]
        else:
            assert stored == ["OUTGOING"]
            assert report.items[0].reason is DecisionReason.INTERNAL_EMAIL_REJECT
        outgoing = next(
            a for a in world.storage.activities() if a.direction is EmailDirection.OUTGOING
        )
        assert outgoing.status is EmailStatus.SENT
        assert outgoing.sender_mailbox_id == alice.id
        assert outgoing.message_id == "<lunch@c.example>"


async def test_internal_email_to_a_queue_that_accepts_it_is_still_tracked() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    support = world.add_queue(SUPPORT)
    email = a_pending_email(sender_mailbox=alice, to=[SUPPORT], subject="Escalation")
    world.storage.put_activity(email)
    async with world.engine() as engine:
        await engine.run_once(workloads=[Workload.OUTGOING])
        (report,) = await engine.sync_mailbox(support.id, workloads=[Workload.INCOMING])
    assert report.items[0].kind is OutcomeKind.TRACKED, report.items[0].explanation
    assert {a.direction for a in world.storage.activities()} == {
        EmailDirection.OUTGOING,
        EmailDirection.INCOMING,
    }


async def test_16_with_the_opt_in_loop_guard_auto_replies_and_floods_are_rejected() -> None:
    world = world_with(loop_guard=LoopGuardSettings(enabled=True, max_messages=3))
    world.add_queue(SUPPORT)
    world.deliver(
        SUPPORT,
        an_email(sender=JANE, to=[SUPPORT], headers=[("Auto-Submitted", "auto-replied")]),
    )
    for n in range(4):
        world.deliver(SUPPORT, an_email(sender="flood@example.org", to=[SUPPORT], subject=f"{n}"))
    report = await run(world)
    outcomes = [(i.kind, i.rule) for i in report.items()]
    assert outcomes == [
        (OutcomeKind.NOT_RELEVANT, "loop-guard"),
        (OutcomeKind.TRACKED, "filtering-method"),
        (OutcomeKind.TRACKED, "filtering-method"),
        (OutcomeKind.TRACKED, "filtering-method"),
        (OutcomeKind.NOT_RELEVANT, "loop-guard"),
    ]
    assert "3 emails from this sender" in list(report.items())[-1].explanation


async def test_a_sent_item_belongs_to_its_sender_and_a_rejection_says_whose_filter() -> None:
    world = world_with(auto_track_sent_folder_items=True)
    alice = world.add_user(ALICE, filtering=IncomingFilteringMethod.FROM_LEADS_CONTACTS_ACCOUNTS)
    world.add_record(a_contact(JANE))
    sent = world.server.create_folder(ALICE, "Sent", parent=None, special_use=SENT)
    world.deliver(ALICE, an_email(sender=ALICE, to=[JANE], subject="to a contact"), folder=sent)
    world.deliver(
        ALICE, an_email(sender=ALICE, to=["x@y.example"], subject="to nobody"), folder=sent
    )
    report = await run(world)
    by_subject = {i.subject: i for i in report.items()}
    assert by_subject["to a contact"].reason is DecisionReason.SENDER_MATCH
    rejected = by_subject["to nobody"]
    assert rejected.reason is DecisionReason.NO_CORRELATION_MATCH
    assert "the sender's own filter" in rejected.explanation
    (activity,) = world.storage.activities()
    assert activity.owner == alice.owner


async def test_a_reply_sent_from_the_crm_carries_only_its_own_token() -> None:
    world = InMemoryWorld()
    sent = await _send_with_token(world, "RE: Quote CRM:0001042")
    assert sent.subject == "RE: Quote CRM:0001001"


async def test_an_inactive_contact_does_not_make_its_mail_a_sender_match() -> None:
    world = InMemoryWorld()
    world.add_user(ALICE, filtering=IncomingFilteringMethod.FROM_LEADS_CONTACTS_ACCOUNTS)
    world.add_record(attrs.evolve(a_contact(JANE), is_active=False))
    world.deliver(ALICE, an_email(sender=JANE, to=[ALICE]))
    report = await run(world)
    assert next(iter(report.items())).reason is DecisionReason.NO_CORRELATION_MATCH


# -- behaviours of §12 that other files cover in depth, here under their numbers ------------


async def test_1_a_reply_by_in_reply_to_is_one_email_correlated_with_the_sent_one() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE, filtering=IncomingFilteringMethod.IN_RESPONSE_TO_CRM_EMAIL)
    opportunity = RecordRef("opportunity", "o1")
    sent = a_sent_email(
        sender_mailbox=alice,
        to=[JANE],
        subject="Quote",
        message_id="<a@x>",
        regarding=opportunity,
    )
    world.storage.put_activity(sent)
    world.deliver(
        ALICE, an_email(sender=JANE, to=[ALICE], subject="RE: Quote", in_reply_to="<a@x>")
    )

    (outcome,) = (await run(world)).items()

    assert outcome.reason is DecisionReason.CORRELATION_MATCH
    (reply,) = incoming(world)
    assert reply.correlation_method is CorrelationMethod.IN_REPLY_TO
    assert reply.parent_activity_id == sent.id
    assert reply.correlated_activity_id == sent.id
    assert reply.regarding == opportunity


async def test_2_a_new_message_from_a_known_contact_is_not_tracked_and_the_cursor_moves() -> None:
    world = InMemoryWorld()
    world.add_user(ALICE, filtering=IncomingFilteringMethod.IN_RESPONSE_TO_CRM_EMAIL)
    world.add_record(a_contact(JANE))
    world.deliver(ALICE, an_email(sender=JANE, to=[ALICE], subject="Hello"))

    (outcome,) = (await run(world)).items()
    assert outcome.kind is OutcomeKind.NOT_RELEVANT
    assert outcome.reason is DecisionReason.NO_CORRELATION_MATCH
    assert incoming(world) == []
    world.clock.advance(timedelta(minutes=10))
    assert list((await run(world)).items()) == [], "the cursor moved past it"


async def test_5_one_message_in_a_user_and_a_queue_mailbox_is_one_email_whatever_the_order() -> (
    None
):
    for first_box, second_box in ((ALICE, SUPPORT), (SUPPORT, ALICE)):
        world = InMemoryWorld()
        boxes = {
            ALICE: world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES),
            SUPPORT: world.add_queue(SUPPORT),
        }
        message = an_email(sender=JANE, to=[ALICE, SUPPORT], message_id="<same@fabrikam.example>")
        uids = {box: world.deliver(box, message) for box in (ALICE, SUPPORT)}
        # Two engines, one after the other: the second starts from what the first stored.
        async with world.engine() as engine:
            (first,) = await engine.sync_mailbox(boxes[first_box].id, workloads=[Workload.INCOMING])
        async with world.engine() as engine:
            (second,) = await engine.sync_mailbox(
                boxes[second_box].id, workloads=[Workload.INCOMING]
            )
        assert [i.kind for i in first.items] == [OutcomeKind.TRACKED]
        assert [i.reason for i in second.items] == [DecisionReason.DUPLICATE]
        assert len(incoming(world)) == 1
        for box in (ALICE, SUPPORT):
            (copy,) = [m for m in world.server.messages(box) if m.uid == uids[box]]
            assert "$ServerSyncTracked" in copy.keywords, f"the copy in {box} is tagged"


async def test_13_a_message_without_message_id_is_stored_once_under_a_derived_id() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    message = an_email(sender=JANE, to=[ALICE], subject="No id", message_id="")
    world.deliver(ALICE, message)
    world.deliver(ALICE, message)  # the same message seen again, as after a crash and re-poll

    report = await run(world)

    kinds = [i.kind for i in report.items()]
    assert kinds == [OutcomeKind.TRACKED, OutcomeKind.DUPLICATE]
    (email,) = incoming(world)
    assert email.message_id is not None
    assert email.receiving_mailbox_id == alice.id
    assert all(r.error is None for r in report.mailboxes)


async def test_14_an_unparsable_sender_is_undeliverable_and_the_others_go_on() -> None:
    world = world_with()
    world.add_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    broken = world.deliver(
        ALICE,
        b"From: not an address at all\r\nTo: alice@contoso.example\r\nSubject: x\r\n"
        b"Message-ID: <broken@x>\r\n\r\nbody\r\n",
    )
    world.deliver(ALICE, an_email(sender=JANE, to=[ALICE], subject="fine"))

    first = await run(world)
    by_subject = {i.subject: i for i in first.items()}
    assert by_subject["fine"].kind is OutcomeKind.TRACKED
    rejected = next(i for i in first.items() if i.subject != "fine")
    assert rejected.kind is not OutcomeKind.TRACKED
    assert rejected.reason is DecisionReason.INVALID_SENDER
    assert [a.subject for a in incoming(world)] == ["fine"]
    flags = {m.uid: m.keywords for m in world.server.messages(ALICE)}
    assert flags[broken] == {"$ServerSyncUndeliverable"}, "tagged at once: a retry cannot help"
    world.clock.advance(timedelta(minutes=10))
    assert list((await run(world)).items()) == [], "and not read again"


async def test_18_no_send_without_outgoing_enabled_or_an_approved_address() -> None:
    for overrides in (
        {"enabled_for_outgoing": False},
        {"approval": EmailApprovalStatus.EMPTY},
    ):
        world = InMemoryWorld()
        alice = world.add_user(ALICE, **overrides)
        email = a_pending_email(sender_mailbox=alice, to=[JANE], subject="Quote")
        world.storage.put_activity(email)

        await run(world, Workload.OUTGOING)

        after = next(a for a in world.storage.activities() if a.id == email.id)
        assert after.status is EmailStatus.PENDING_SEND, overrides
        assert after.delivery_attempts == email.delivery_attempts, overrides
        assert world.server.outbox == [], overrides


async def test_19_a_4xx_is_retried_per_attempt_until_failed_and_a_250_is_sent() -> None:
    world = InMemoryWorld()
    alice = world.add_user(ALICE)
    failing = a_pending_email(sender_mailbox=alice, to=[JANE], subject="Refused")
    world.storage.put_activity(failing)
    world.server.faults.fail_next(
        "send",
        lambda: TransientError("451 try later", server_code="451", scope=ErrorScope.ITEM),
        times=5,
    )
    attempts = []
    for _ in range(5):
        (result,) = (await run(world, Workload.OUTGOING)).sends()
        attempts.append((result.status, result.attempt))
        world.clock.advance(timedelta(minutes=5))
    assert attempts == [(EmailStatus.PENDING_SEND, n) for n in range(1, 5)] + [
        (EmailStatus.FAILED, 5)
    ]

    accepted = a_pending_email(sender_mailbox=alice, to=[JANE], subject="Accepted")
    world.storage.put_activity(accepted)
    (result,) = (await run(world, Workload.OUTGOING)).sends()
    after = next(a for a in world.storage.activities() if a.id == accepted.id)
    assert after.status is EmailStatus.SENT
    assert after.sent_on == world.clock.now()
    assert after.message_id is not None
    (sent,) = world.server.outbox
    assert parse_headers(sent.data).message_id == after.message_id
