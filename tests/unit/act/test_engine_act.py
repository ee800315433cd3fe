"""Appointment, contact and task sync through SyncEngine with the in-memory adapters: the
CRM side in InMemoryStorage, the Exchange side in InMemoryExchange."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import attrs
import pytest

from serversync import (
    ActAction,
    ActDeliveryMethod,
    ActEntity,
    ActSettings,
    AlertKind,
    AlertLevel,
    ConditionOperator,
    ConflictPolicy,
    ConflictWinner,
    FieldCondition,
    FilterGroup,
    Mailbox,
    MailboxRunReport,
    RecordRef,
    Recurrence,
    RecurrenceKind,
    RunStatus,
    ServerType,
    SkipReason,
    SyncDirection,
    SyncSettings,
    TestStatus,
    Workload,
)
from serversync.act import ConflictDecision
from serversync.testing import InMemoryWorld, a_profile, a_sync_filter

from ..engine_support import Recorder

ALICE = "alice@contoso.example"
BOB = RecordRef("systemuser", "bob")


def _world(**act: Any) -> tuple[InMemoryWorld, Mailbox, RecordRef]:
    world = InMemoryWorld(
        profile=a_profile(server_type=ServerType.EXCHANGE_SERVER),
        settings=SyncSettings(act=ActSettings(**act)),
    )
    mailbox = world.add_user(
        ALICE,
        act_delivery_method=ActDeliveryMethod.SERVER_SIDE_SYNC,
        act_status=TestStatus.SUCCESS,
    )
    assert mailbox.owner is not None
    return world, mailbox, mailbox.owner


def _filters(world: InMemoryWorld, user: RecordRef, *entities: ActEntity) -> None:
    for entity in entities:
        world.storage.add_sync_filter(a_sync_filter(user, entity))


async def _sync(world: InMemoryWorld, mailbox: Mailbox, **engine: Any) -> MailboxRunReport:
    async with world.engine(**engine) as running:
        (report,) = await running.sync_mailbox(mailbox.id, workloads=[Workload.ACT])
    return report


def _actions(report: MailboxRunReport) -> list[tuple[ActEntity, ActAction]]:
    return [(o.entity, o.action) for o in report.act]


def _linked(world: InMemoryWorld, ref: RecordRef) -> str:
    (mapping,) = [m for m in world.storage.mappings() if m.record == ref and m.is_linked]
    return mapping.exchange_entry_id


# -- behaviour 13 --------------------------------------------------------------------------


async def test_behaviour_13_no_enabled_filter_syncs_nothing_and_filters_are_a_union() -> None:
    world, mailbox, alice = _world()
    world.storage.add_sync_filter(a_sync_filter(alice, ActEntity.CONTACT, enabled=False))
    for field, value in (("subject", "Board meeting"), ("location", "Room 1")):
        world.storage.add_sync_filter(
            a_sync_filter(
                alice,
                ActEntity.APPOINTMENT,
                criteria=FilterGroup(
                    conditions=(
                        FieldCondition(field="owner", operator=ConditionOperator.EQ_USERID),
                        FieldCondition(
                            field=field,
                            operator=ConditionOperator.LIKE
                            if field == "subject"
                            else ConditionOperator.EQ,
                            value="Board%" if field == "subject" else value,
                        ),
                    )
                ),
            )
        )
    start = world.clock.now() + timedelta(days=1)
    slot = {"start": start, "end": start + timedelta(hours=1)}
    board = world.storage.add_act_record(
        ActEntity.APPOINTMENT, alice, {"subject": "Board meeting", **slot}
    )
    room = world.storage.add_act_record(
        ActEntity.APPOINTMENT, alice, {"subject": "Sync", "location": "Room 1", **slot}
    )
    world.storage.add_act_record(
        ActEntity.APPOINTMENT, alice, {"subject": "Lunch", "location": "Cafe", **slot}
    )
    world.storage.add_act_record(ActEntity.APPOINTMENT, BOB, {"subject": "Board of Bob", **slot})
    world.storage.add_act_record(ActEntity.CONTACT, alice, {"last_name": "Lovelace"})

    report = await _sync(world, mailbox)

    assert report.status is RunStatus.SUCCEEDED, report.error
    subjects = sorted(
        str(i.fields["subject"]) for i in world.exchange.items(ALICE, ActEntity.APPOINTMENT)
    )
    assert subjects == ["Board meeting", "Sync"], "the union of the enabled filters syncs"
    assert world.exchange.items(ALICE, ActEntity.CONTACT) == [], "no enabled filter: no contacts"
    assert {m.record for m in world.storage.mappings()} == {board.ref, room.ref}


# -- behaviour 14 --------------------------------------------------------------------------


async def test_behaviour_14_a_crm_to_exchange_field_changed_in_exchange_is_not_written_to_crm() -> (
    None
):
    world, mailbox, alice = _world(
        field_directions={
            ActEntity.CONTACT: {"body": SyncDirection.TO_EXCHANGE, "nickname": SyncDirection.NONE}
        }
    )
    _filters(world, alice, ActEntity.CONTACT)
    contact = world.storage.add_act_record(
        ActEntity.CONTACT,
        alice,
        {"last_name": "Lovelace", "body": "met at a conference", "nickname": "Ada"},
    )
    await _sync(world, mailbox)
    (item,) = world.exchange.items(ALICE, ActEntity.CONTACT)
    assert item.fields["body"] == "met at a conference", "to-Exchange fields are created"
    assert "nickname" not in item.fields, "a field set to none is not synchronized"

    world.clock.advance(60)
    world.exchange.edit_item(
        ALICE,
        ActEntity.CONTACT,
        item.key.item_id,
        {"body": "edited in Outlook", "job_title": "Countess", "nickname": "A"},
    )
    await _sync(world, mailbox)
    stored = world.storage.act_record(contact.ref)
    assert stored is not None
    assert stored.fields["body"] == "met at a conference", (
        "a CRM → Exchange field is not written to the CRM"
    )
    assert stored.fields["nickname"] == "Ada"
    assert stored.fields["job_title"] == "Countess", "two-way fields still flow back"

    world.clock.advance(60)
    world.storage.edit_act_record(contact.ref, {"body": "edited in the CRM"})
    await _sync(world, mailbox)
    current = world.exchange.item(ALICE, ActEntity.CONTACT, item.key.item_id)
    assert current is not None
    assert current.fields["body"] == "edited in the CRM", "CRM changes go to Exchange"


def test_behaviour_14_fixed_two_way_fields_cannot_take_another_direction() -> None:
    from serversync.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="start"):
        ActSettings(field_directions={ActEntity.APPOINTMENT: {"start": SyncDirection.TO_CRM}})
    with pytest.raises(ConfigurationError, match="attendees"):
        ActSettings(field_directions={ActEntity.APPOINTMENT: {"attendees": SyncDirection.NONE}})
    ActSettings(field_directions={ActEntity.APPOINTMENT: {"body": SyncDirection.NONE}})


# -- behaviour 15 --------------------------------------------------------------------------


async def _linked_appointment(
    world: InMemoryWorld,
    mailbox: Mailbox,
    owner: RecordRef,
    *,
    days: float = 1,
    organizer: str | None = None,
) -> tuple[RecordRef, str]:
    start = world.clock.now() + timedelta(days=days)
    record = world.storage.add_act_record(
        ActEntity.APPOINTMENT,
        owner,
        {"subject": "Review", "start": start, "end": start + timedelta(hours=1)},
        organizer=organizer,
    )
    report = await _sync(world, mailbox)
    assert report.status is RunStatus.SUCCEEDED, report.error
    return record.ref, _linked(world, record.ref)


async def test_behaviour_15_an_appointment_deleted_in_exchange_is_deleted_in_crm() -> None:
    world, mailbox, alice = _world()
    _filters(world, alice, ActEntity.APPOINTMENT)
    ref, item_id = await _linked_appointment(world, mailbox, alice)

    world.exchange.remove_item(ALICE, ActEntity.APPOINTMENT, item_id)
    report = await _sync(world, mailbox)

    assert world.storage.act_record(ref) is None
    assert (ActEntity.APPOINTMENT, ActAction.DELETED_IN_CRM) in _actions(report)
    (mapping,) = world.storage.mappings()
    assert mapping.is_deleted_in_exchange, "the mapping records the delete"


async def test_behaviour_15_a_task_deleted_in_exchange_is_deleted_in_crm() -> None:
    world, mailbox, alice = _world()
    _filters(world, alice, ActEntity.TASK)
    task = world.storage.add_act_record(ActEntity.TASK, alice, {"subject": "Call back"})
    await _sync(world, mailbox)
    world.exchange.remove_item(ALICE, ActEntity.TASK, _linked(world, task.ref))
    await _sync(world, mailbox)
    assert world.storage.act_record(task.ref) is None


async def test_behaviour_15_a_contact_deleted_in_exchange_survives_in_crm() -> None:
    world, mailbox, alice = _world()
    _filters(world, alice, ActEntity.CONTACT)
    contact = world.storage.add_act_record(ActEntity.CONTACT, alice, {"last_name": "Lovelace"})
    await _sync(world, mailbox)

    world.exchange.remove_item(ALICE, ActEntity.CONTACT, _linked(world, contact.ref))
    report = await _sync(world, mailbox)

    assert world.storage.act_record(contact.ref) is not None
    assert (ActEntity.CONTACT, ActAction.MARKED_DELETED_IN_EXCHANGE) in _actions(report)
    (mapping,) = world.storage.mappings()
    assert mapping.is_deleted_in_exchange

    world.clock.advance(60)
    world.storage.edit_act_record(contact.ref, {"job_title": "Countess"})
    await _sync(world, mailbox)
    assert world.exchange.items(ALICE, ActEntity.CONTACT) == [], "the deleted copy is not recreated"


@pytest.mark.parametrize(
    ("owner", "organizer", "days", "deleted"),
    [
        pytest.param("alice", None, 1, True, id="future, owner"),
        pytest.param("bob", ALICE, 1, True, id="future, organizer"),
        pytest.param("alice", None, -1, False, id="past, owner"),
        pytest.param("bob", "carol@contoso.example", 1, False, id="future, neither"),
    ],
)
async def test_behaviour_15_a_deleted_crm_appointment_is_deleted_in_exchange_if_current_and_owned(
    owner: str, organizer: str | None, days: float, deleted: bool
) -> None:
    world, mailbox, alice = _world()
    user = alice if owner == "alice" else BOB
    # The filter syncs every appointment, so that one owned by someone else can sync too.
    world.storage.add_sync_filter(
        a_sync_filter(alice, ActEntity.APPOINTMENT, criteria=FilterGroup())
    )
    ref, item_id = await _linked_appointment(world, mailbox, user, days=days, organizer=organizer)

    await world.storage.delete_act_record(ref)
    await _sync(world, mailbox)

    exists = world.exchange.item(ALICE, ActEntity.APPOINTMENT, item_id) is not None
    assert exists is not deleted
    (mapping,) = world.storage.mappings()
    assert not mapping.is_linked
    assert mapping.is_deleted_in_exchange is deleted
    assert mapping.is_unlinked_in_crm is not deleted, "a kept item is unlinked"


async def test_behaviour_15_leaving_the_filter_unlinks_with_distinct_logical_deletes() -> None:
    world, mailbox, alice = _world(distinct_physical_and_logical_deletes=True)
    world.storage.add_sync_filter(
        a_sync_filter(
            alice,
            ActEntity.CONTACT,
            criteria=FilterGroup(
                conditions=(
                    FieldCondition(field="owner", operator=ConditionOperator.EQ_USERID),
                    FieldCondition(field="state", operator=ConditionOperator.EQ, value="active"),
                )
            ),
        )
    )
    contact = world.storage.add_act_record(
        ActEntity.CONTACT, alice, {"last_name": "Lovelace", "state": "active"}
    )
    await _sync(world, mailbox)
    item_id = _linked(world, contact.ref)

    world.clock.advance(60)
    world.storage.edit_act_record(contact.ref, {"state": "inactive"})
    report = await _sync(world, mailbox)

    assert world.exchange.item(ALICE, ActEntity.CONTACT, item_id) is not None, "not deleted"
    assert (ActEntity.CONTACT, ActAction.UNLINKED) in _actions(report)
    (mapping,) = world.storage.mappings()
    assert mapping.is_unlinked_in_crm


async def test_behaviour_15_leaving_the_filter_deletes_without_distinct_logical_deletes() -> None:
    world, mailbox, alice = _world()
    world.storage.add_sync_filter(
        a_sync_filter(
            alice,
            ActEntity.TASK,
            criteria=FilterGroup(
                conditions=(
                    FieldCondition(field="category", operator=ConditionOperator.EQ, value="sync"),
                )
            ),
        )
    )
    task = world.storage.add_act_record(
        ActEntity.TASK, alice, {"subject": "Call", "category": "sync"}
    )
    await _sync(world, mailbox)
    item_id = _linked(world, task.ref)

    world.storage.edit_act_record(task.ref, {"category": "private"})
    await _sync(world, mailbox)

    assert world.exchange.item(ALICE, ActEntity.TASK, item_id) is None, "a current task is deleted"
    (mapping,) = world.storage.mappings()
    assert mapping.is_deleted_in_exchange


# -- round trips ---------------------------------------------------------------------------


async def test_a_contact_from_crm_appears_in_exchange_and_its_exchange_change_flows_back() -> None:
    world, mailbox, alice = _world()
    _filters(world, alice, ActEntity.CONTACT)
    contact = world.storage.add_act_record(
        ActEntity.CONTACT,
        alice,
        {"first_name": "Ada", "last_name": "Lovelace", "email1": "ada@example.org"},
    )

    first = await _sync(world, mailbox)
    assert _actions(first) == [(ActEntity.CONTACT, ActAction.CREATED_IN_EXCHANGE)]
    (item,) = world.exchange.items(ALICE, ActEntity.CONTACT)
    assert item.fields["last_name"] == "Lovelace"
    assert item.fields["email1"] == "ada@example.org"

    echo = await _sync(world, mailbox)
    assert (ActEntity.CONTACT, ActAction.CREATED_IN_EXCHANGE) not in _actions(echo)
    assert (ActEntity.CONTACT, ActAction.UPDATED) not in _actions(echo), (
        "our own write is no change"
    )

    world.clock.advance(60)
    world.exchange.edit_item(
        ALICE, ActEntity.CONTACT, item.key.item_id, {"mobile_phone": "+44 20 7946 0000"}
    )
    back = await _sync(world, mailbox)
    assert (ActEntity.CONTACT, ActAction.UPDATED) in _actions(back)
    stored = world.storage.act_record(contact.ref)
    assert stored is not None
    assert stored.fields["mobile_phone"] == "+44 20 7946 0000"

    quiet = await _sync(world, mailbox)
    assert [a for a in _actions(quiet) if a[1] is not ActAction.ECHO] == [], "nothing left to do"
    assert (
        world.exchange.item(ALICE, ActEntity.CONTACT, item.key.item_id)
        == world.exchange.items(ALICE, ActEntity.CONTACT)[0]
    )


async def test_an_item_created_in_exchange_is_created_in_crm_for_the_user() -> None:
    world, mailbox, alice = _world()
    _filters(world, alice, ActEntity.TASK)
    item = world.exchange.add_item(
        ALICE, ActEntity.TASK, {"subject": "Renew the lease", "priority": 2}
    )
    report = await _sync(world, mailbox)
    assert _actions(report) == [(ActEntity.TASK, ActAction.CREATED_IN_CRM)]
    (record,) = world.storage.act_records(ActEntity.TASK)
    assert record.owner == alice
    assert record.fields["subject"] == "Renew the lease"
    assert _linked(world, record.ref) == item.key.item_id


@pytest.mark.parametrize(
    ("policy", "exchange_later", "winner"),
    [
        pytest.param(ConflictPolicy(), True, "exchange", id="latest: Exchange later"),
        pytest.param(ConflictPolicy(), False, "crm", id="latest: CRM later"),
        pytest.param(ConflictPolicy(default=ConflictWinner.CRM), True, "crm", id="CRM wins"),
        pytest.param(
            ConflictPolicy(fields={(ActEntity.CONTACT, "job_title"): ConflictWinner.EXCHANGE}),
            False,
            "exchange",
            id="field rule",
        ),
    ],
)
async def test_a_conflict_follows_the_documented_policy(
    policy: ConflictPolicy, exchange_later: bool, winner: str
) -> None:
    world, mailbox, alice = _world(conflicts=policy)
    _filters(world, alice, ActEntity.CONTACT)
    contact = world.storage.add_act_record(
        ActEntity.CONTACT, alice, {"last_name": "Lovelace", "job_title": "Analyst"}
    )
    await _sync(world, mailbox)
    item_id = _linked(world, contact.ref)

    world.clock.advance(60)

    def in_crm() -> None:
        world.storage.edit_act_record(contact.ref, {"job_title": "CRM title", "department": "R&D"})

    def in_exchange() -> None:
        world.exchange.edit_item(ALICE, ActEntity.CONTACT, item_id, {"job_title": "Exchange title"})

    first, second = (in_crm, in_exchange) if exchange_later else (in_exchange, in_crm)
    first()
    world.clock.advance(60)
    second()
    report = await _sync(world, mailbox)

    expected = "CRM title" if winner == "crm" else "Exchange title"
    stored = world.storage.act_record(contact.ref)
    item = world.exchange.item(ALICE, ActEntity.CONTACT, item_id)
    assert stored is not None
    assert item is not None
    assert stored.fields["job_title"] == expected
    assert item.fields["job_title"] == expected, "both sides keep the winner's value"
    assert item.fields["department"] == "R&D", "fields changed on one side only still flow"
    (mapping,) = world.storage.mappings()
    decision = ConflictDecision.CRM_WON if winner == "crm" else ConflictDecision.EXCHANGE_WON
    assert mapping.user_decision == decision
    (update,) = [o for o in report.act if o.action is ActAction.UPDATED]
    assert f"job_title: changed on both sides, {winner} wins" in update.explanation


async def test_a_recurring_meeting_with_one_moved_occurrence_round_trips() -> None:
    world, mailbox, alice = _world()
    _filters(world, alice, ActEntity.APPOINTMENT)
    start = world.clock.now().replace(hour=9, minute=0) + timedelta(days=7)
    weekly = Recurrence(
        kind=RecurrenceKind.WEEKLY,
        weekdays=(start.isoweekday(),),
        start_date=start.date(),
        count=4,
        time_zone="Europe/London",
    )
    master = world.storage.add_act_record(
        ActEntity.APPOINTMENT,
        alice,
        {
            "subject": "Weekly",
            "start": start,
            "end": start + timedelta(hours=1),
            "recurrence": weekly,
        },
        organizer=ALICE,
    )
    second = start + timedelta(days=7)
    moved = world.storage.add_act_record(
        ActEntity.APPOINTMENT,
        alice,
        {
            "subject": "Weekly",
            "start": second + timedelta(hours=2),
            "end": second + timedelta(hours=3),
        },
        organizer=ALICE,
        series=master.ref,
        original_start=second,
    )

    report = await _sync(world, mailbox)
    assert report.status is RunStatus.SUCCEEDED, report.error
    master_id, moved_id = _linked(world, master.ref), _linked(world, moved.ref)
    exception = world.exchange.item(ALICE, ActEntity.APPOINTMENT, moved_id)
    assert exception is not None
    assert exception.series_id == master_id, "the exception belongs to the master in Exchange"
    assert exception.original_start == second
    series = world.exchange.item(ALICE, ActEntity.APPOINTMENT, master_id)
    assert series is not None
    assert series.fields["recurrence"] == weekly

    # The occurrence is moved again in Outlook, and a third one is moved there for the first time.
    world.clock.advance(60)
    world.exchange.edit_item(
        ALICE,
        ActEntity.APPOINTMENT,
        moved_id,
        {"start": second + timedelta(hours=4), "end": second + timedelta(hours=5)},
    )
    third = start + timedelta(days=14)
    added = world.exchange.add_item(
        ALICE,
        ActEntity.APPOINTMENT,
        {
            "subject": "Weekly",
            "start": third + timedelta(days=1),
            "end": third + timedelta(days=1, hours=1),
        },
        series_id=master_id,
        original_start=third,
    )
    await _sync(world, mailbox)

    stored = world.storage.act_record(moved.ref)
    assert stored is not None
    assert stored.fields["start"] == second + timedelta(hours=4)
    (new_exception,) = [
        r
        for r in world.storage.act_records(ActEntity.APPOINTMENT)
        if r.ref not in {master.ref, moved.ref}
    ]
    assert new_exception.series == master.ref
    assert new_exception.original_start == third
    assert _linked(world, new_exception.ref) == added.key.item_id

    # Deleting the series in Outlook deletes the master and its exceptions in the CRM.
    world.exchange.remove_item(ALICE, ActEntity.APPOINTMENT, master_id)
    await _sync(world, mailbox)
    assert world.storage.act_records(ActEntity.APPOINTMENT) == []


async def test_a_cancelled_appointment_is_deleted_with_cancellations_only_with_the_switch() -> None:
    for propagate in (False, True):
        world, mailbox, alice = _world(propagate_appointment_cancellations=propagate)
        _filters(world, alice, ActEntity.APPOINTMENT)
        ref, item_id = await _linked_appointment(world, mailbox, alice, organizer=ALICE)
        world.clock.advance(60)
        world.storage.edit_act_record(ref, {"state": "canceled"})
        await _sync(world, mailbox)
        gone = world.exchange.item(ALICE, ActEntity.APPOINTMENT, item_id) is None
        assert gone is propagate
        assert [c.item.key.item_id for c in world.exchange.cancellations] == (
            [item_id] if propagate else []
        )


# -- failures ------------------------------------------------------------------------------


async def test_a_401_disables_the_act_workload_with_the_reason_and_an_alert() -> None:
    world, mailbox, alice = _world()
    _filters(world, alice, ActEntity.CONTACT)
    world.exchange.set_password(ALICE, "changed")
    recorder = Recorder()

    report = await _sync(world, mailbox, observer=recorder)

    assert report.status is RunStatus.FAILED
    assert report.error is not None
    assert report.error.error_type == "AuthenticationError"
    assert "401" in report.error.message
    stored = await world.storage.get_mailbox(mailbox.id)
    assert stored is not None
    assert not stored.enabled_for_act
    assert stored.act_status is TestStatus.FAILURE
    assert stored.enabled_for_incoming, "the other workloads are left alone"
    (alert,) = recorder.alerts_of(AlertKind.WORKLOAD_DISABLED)
    assert alert.level is AlertLevel.ERROR
    assert alert.workload is Workload.ACT
    assert "appointments, contacts, and tasks" in alert.message

    again = await _sync(world, mailbox)
    assert again.skip_reason is SkipReason.WORKLOAD_DISABLED


async def test_an_item_failing_repeatedly_does_not_stall_the_others() -> None:
    world, mailbox, alice = _world(max_item_attempts=3)
    _filters(world, alice, ActEntity.CONTACT)
    world.exchange.reject_writes_where(lambda fields: fields.get("last_name") == "Poison")
    poison = world.storage.add_act_record(ActEntity.CONTACT, alice, {"last_name": "Poison"})
    world.storage.add_act_record(ActEntity.CONTACT, alice, {"last_name": "Lovelace"})

    first = await _sync(world, mailbox)
    assert first.status is RunStatus.SUCCEEDED, "an item failure does not fail the cycle"
    world.storage.add_act_record(ActEntity.CONTACT, alice, {"last_name": "Hopper"})
    for _ in range(4):
        world.clock.advance(60)
        await _sync(world, mailbox)

    names = sorted(
        str(i.fields["last_name"]) for i in world.exchange.items(ALICE, ActEntity.CONTACT)
    )
    assert names == ["Hopper", "Lovelace"]
    (failed,) = [m for m in world.storage.mappings() if m.record == poison.ref]
    assert failed.retries == 3, "attempts stop at max_item_attempts"
    assert failed.exchange_entry_id == ""
    assert failed.last_sync_error is not None
    assert "refused" in failed.last_sync_error

    # Once the item is accepted and the record changes, it syncs.
    world.exchange.clear_rejections()
    world.clock.advance(60)
    world.storage.edit_act_record(poison.ref, {"job_title": "Antidote"})
    await _sync(world, mailbox)
    assert _linked(world, poison.ref)


async def test_failed_mappings_are_purged_after_the_retention() -> None:
    world, mailbox, alice = _world(max_item_attempts=1)
    _filters(world, alice, ActEntity.CONTACT)
    world.exchange.reject_writes_where(lambda fields: True)
    world.storage.add_act_record(ActEntity.CONTACT, alice, {"last_name": "Poison"})
    await _sync(world, mailbox)
    assert len(world.storage.mappings()) == 1
    world.clock.advance(timedelta(minutes=10))
    await _sync(world, mailbox)
    world.clock.advance(timedelta(days=3))
    await _sync(world, mailbox)
    assert world.storage.mappings() == [], "a failed mapping is kept 3 days"


async def test_act_is_only_for_exchange_profiles() -> None:
    world = InMemoryWorld()  # an IMAP/SMTP profile
    mailbox = world.add_user(
        ALICE, act_delivery_method=ActDeliveryMethod.SERVER_SIDE_SYNC, act_status=TestStatus.SUCCESS
    )
    report = await _sync(world, mailbox)
    assert report.status is RunStatus.FAILED
    assert report.error is not None
    assert "only with Exchange" in report.error.message


async def test_test_and_enable_tests_act_and_run_once_then_syncs_it() -> None:
    world, mailbox, alice = _world()
    world.storage.add_mailbox(attrs.evolve(mailbox, act_status=TestStatus.NOT_RUN))
    _filters(world, alice, ActEntity.CONTACT)
    world.storage.add_act_record(ActEntity.CONTACT, alice, {"last_name": "Lovelace"})
    async with world.engine() as engine:
        skipped = await engine.run_once()
        (act,) = [r for r in skipped.mailboxes if r.workload is Workload.ACT]
        assert act.skip_reason is SkipReason.ACT_NOT_TESTED
        result = await engine.test_mailbox(mailbox.id)
        assert {r.workload: r.status for r in result.results}[Workload.ACT] is TestStatus.SUCCESS
        ran = await engine.run_once()
    (act,) = [r for r in ran.mailboxes if r.workload is Workload.ACT]
    assert act.status is RunStatus.SUCCEEDED, act.error
    assert len(world.exchange.items(ALICE, ActEntity.CONTACT)) == 1


async def test_an_unknown_sync_state_lists_everything_again_without_duplicates() -> None:
    world, mailbox, alice = _world(page_size=2)
    _filters(world, alice, ActEntity.CONTACT)
    for name in ("A", "B", "C", "D", "E"):
        world.storage.add_act_record(ActEntity.CONTACT, alice, {"last_name": name})
    await _sync(world, mailbox)
    assert len(world.exchange.items(ALICE, ActEntity.CONTACT)) == 5, "pages of two, all synced"
    world.exchange.forget_sync_states(ALICE)
    report = await _sync(world, mailbox)
    assert report.status is RunStatus.SUCCEEDED
    assert len(world.exchange.items(ALICE, ActEntity.CONTACT)) == 5
    assert len(world.storage.act_records(ActEntity.CONTACT)) == 5, "nothing is imported twice"
    assert {a for _, a in _actions(report)} <= {ActAction.ECHO}


def test_recurrence_value_is_a_field() -> None:
    # Recurrence values travel as fields and compare by value.
    assert Recurrence(kind=RecurrenceKind.DAILY, start_date=date(2030, 1, 1)) == Recurrence(
        kind=RecurrenceKind.DAILY, start_date=date(2030, 1, 1)
    )


async def test_an_item_imported_from_exchange_stays_linked_outside_the_filters() -> None:
    world, mailbox, alice = _world()
    world.storage.add_sync_filter(
        a_sync_filter(
            alice,
            ActEntity.TASK,
            criteria=FilterGroup(
                conditions=(
                    FieldCondition(field="category", operator=ConditionOperator.EQ, value="sync"),
                )
            ),
        )
    )
    item = world.exchange.add_item(ALICE, ActEntity.TASK, {"subject": "Made in Outlook"})
    await _sync(world, mailbox)
    for _ in range(2):
        world.clock.advance(600)
        report = await _sync(world, mailbox)
        assert _actions(report) == [], "a record that never matched the filters cannot leave them"
    assert world.exchange.item(ALICE, ActEntity.TASK, item.key.item_id) is not None
    (record,) = world.storage.act_records(ActEntity.TASK)
    assert _linked(world, record.ref) == item.key.item_id

    # Once it matches and then leaves, it is a logical delete like any other.
    world.storage.edit_act_record(record.ref, {"category": "sync"})
    world.clock.advance(600)
    await _sync(world, mailbox)
    world.storage.edit_act_record(record.ref, {"category": "private"})
    world.clock.advance(600)
    await _sync(world, mailbox)
    assert world.exchange.item(ALICE, ActEntity.TASK, item.key.item_id) is None


async def test_a_connection_lost_mid_cycle_keeps_the_state_and_creates_nothing_twice() -> None:
    from serversync.errors import ConnectionFailedError

    world, mailbox, alice = _world()
    _filters(world, alice, ActEntity.CONTACT)
    for name in ("A", "B", "C"):
        world.storage.add_act_record(ActEntity.CONTACT, alice, {"last_name": name})
    world.exchange.faults.fail_next("create_item", ConnectionFailedError("reset by peer"), skip=1)

    failed = await _sync(world, mailbox)
    assert failed.status is RunStatus.FAILED, "a lost connection fails the cycle"
    assert len(world.exchange.items(ALICE, ActEntity.CONTACT)) == 1, "the first was created"
    contacts = (mailbox.id, ActEntity.CONTACT)
    assert contacts not in world.storage.act_states(), "the state is saved after every step"

    world.clock.advance(600)
    again = await _sync(world, mailbox)
    assert again.status is RunStatus.SUCCEEDED
    names = sorted(
        str(i.fields["last_name"]) for i in world.exchange.items(ALICE, ActEntity.CONTACT)
    )
    assert names == ["A", "B", "C"], "nothing is created twice"
    assert len([m for m in world.storage.mappings() if m.is_linked]) == 3


async def test_items_created_in_exchange_stay_unconfirmed_until_exchange_lists_them() -> None:
    world, mailbox, alice = _world()
    _filters(world, alice, ActEntity.CONTACT)
    contact = world.storage.add_act_record(ActEntity.CONTACT, alice, {"last_name": "Lovelace"})

    await _sync(world, mailbox)
    state = world.storage.act_states()[(mailbox.id, ActEntity.CONTACT)]
    assert state.unconfirmed == (_linked(world, contact.ref),), "read after the state"

    await _sync(world, mailbox)
    state = world.storage.act_states()[(mailbox.id, ActEntity.CONTACT)]
    assert state.unconfirmed == (), "listed as changed since: Exchange reports its delete"
