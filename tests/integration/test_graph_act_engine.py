"""Appointment, contact and task sync end to end over Microsoft Graph: SyncEngine with the
Graph ACT transport against the fake Graph, in process.

The CRM side is the in-memory storage; Outlook is played by editing items directly in the
fake (``fake.items``), which moves their change keys on. The fake stamps
``lastModifiedDateTime`` with the engine's fake clock, so "modified last" compares both
sides on one time line.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest

from serversync import (
    ActAction,
    ActDeliveryMethod,
    ActEntity,
    ActSettings,
    MailboxRunReport,
    MappingCredentials,
    Recurrence,
    RecurrenceKind,
    RunStatus,
    SyncDirection,
    SyncEngine,
    SyncSettings,
    TestStatus,
    Transports,
    Workload,
)
from serversync.adapters.transports.graph import (
    CRM_ID_PROPERTY,
    GRAPH_SERVER_TYPES,
    LINKED_APPLICATION,
    GraphTransport,
)
from serversync.model import (
    CredentialKind,
    Credentials,
    Mailbox,
    MailboxId,
    RecordRef,
    Secret,
    ServerEndpoint,
    ServerType,
)
from serversync.testing import (
    FakeClock,
    InMemoryDirectory,
    InMemoryStorage,
    a_mailbox,
    a_profile,
    a_sync_filter,
    a_user,
)
from serversync.testing.graph import FAKE_GRAPH_URL, FakeGraph, GraphFault

pytestmark = pytest.mark.integration

ALICE = "alice@contoso.example"
BERLIN = ZoneInfo("Europe/Berlin")
UTC_ZONE = ZoneInfo("UTC")


@attrs.define
class ActWorld:
    """The CRM in memory, Alice's calendar, contacts and To Do tasks on the fake Graph."""

    clock: FakeClock = attrs.Factory(FakeClock)
    fake: FakeGraph = attrs.field()
    storage: InMemoryStorage = attrs.field()
    directory: InMemoryDirectory = attrs.Factory(InMemoryDirectory)
    credentials: dict[MailboxId, Credentials] = attrs.Factory(dict)
    settings: SyncSettings = attrs.Factory(SyncSettings)
    graph: GraphTransport = attrs.field()

    @fake.default
    def _fake(self) -> FakeGraph:
        return FakeGraph(now=self.clock.now)

    @storage.default
    def _storage(self) -> InMemoryStorage:
        return InMemoryStorage(clock=self.clock)

    @graph.default
    def _graph(self) -> GraphTransport:
        return GraphTransport(http_transport=self.fake.transport(), clock=self.clock)

    def add_user(self) -> tuple[Mailbox, RecordRef]:
        self.fake.add_mailbox(ALICE)
        record = a_user(ALICE)
        self.directory.add(record)
        profile = a_profile(
            server_type=ServerType.MICROSOFT_GRAPH,
            incoming=ServerEndpoint(host=FAKE_GRAPH_URL),
        )
        self.storage.add_profile(profile)
        mailbox = a_mailbox(
            ALICE,
            owner=record.ref,
            profile_id=profile.id,
            act_delivery_method=ActDeliveryMethod.SERVER_SIDE_SYNC,
            act_status=TestStatus.SUCCESS,
        )
        self.storage.add_mailbox(mailbox)
        self.credentials[mailbox.id] = Credentials(
            username=ALICE,
            secret=Secret(self.fake.issue_token(user=ALICE)),
            kind=CredentialKind.OAUTH2_ACCESS_TOKEN,
        )
        return mailbox, record.ref

    def engine(self) -> SyncEngine:
        return SyncEngine(
            repositories=self.storage,
            directory=self.directory,
            transports=Transports.by_server_type(
                incoming=dict.fromkeys(GRAPH_SERVER_TYPES, self.graph.incoming),
                outgoing=dict.fromkeys(GRAPH_SERVER_TYPES, self.graph.outgoing),
                act=dict.fromkeys(GRAPH_SERVER_TYPES, self.graph.act),
            ),
            credentials=MappingCredentials(by_mailbox=self.credentials),
            settings=self.settings,
            clock=self.clock,
            act_records=self.storage,
            act_mappings=self.storage,
        )

    async def sync(self, mailbox: Mailbox) -> MailboxRunReport:
        async with self.engine() as engine:
            (report,) = await engine.sync_mailbox(mailbox.id, workloads=[Workload.ACT])
        return report

    def linked(self, ref: RecordRef) -> str:
        (mapping,) = [m for m in self.storage.mappings() if m.record == ref and m.is_linked]
        return mapping.exchange_entry_id


def writes(report: MailboxRunReport) -> list[tuple[ActEntity, ActAction]]:
    """What was written to either side: echoes and mappings brought up to date are not."""
    return [
        (o.entity, o.action)
        for o in report.act
        if o.action not in (ActAction.ECHO, ActAction.SKIPPED)
        and not o.explanation.startswith("nothing to write")
    ]


def crm(world: ActWorld, ref: RecordRef) -> dict[str, Any]:
    record = world.storage.act_record(ref)
    assert record is not None
    return dict(record.fields)


def utc_text(moment: datetime) -> dict[str, str]:
    """A Graph dateTimeTimeZone in UTC, as Outlook writes one."""
    return {
        "dateTime": moment.astimezone(UTC_ZONE).replace(tzinfo=None).isoformat(),
        "timeZone": "UTC",
    }


def graph_start(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["start"]["dateTime"][:19]).replace(tzinfo=UTC_ZONE)


async def test_a_contact_edited_in_the_crm_flows_to_graph_per_field_direction() -> None:
    world = ActWorld()
    world.settings = SyncSettings(
        act=ActSettings(
            field_directions={
                ActEntity.CONTACT: {
                    "job_title": SyncDirection.TO_CRM,
                    "nickname": SyncDirection.TO_EXCHANGE,
                }
            }
        )
    )
    mailbox, alice = world.add_user()
    world.storage.add_sync_filter(a_sync_filter(alice, ActEntity.CONTACT))
    contact = world.storage.add_act_record(
        ActEntity.CONTACT,
        alice,
        {
            "salutation": "Dr.",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "job_title": "Analyst",
            "email1": "ada@example.org",
            "business_phone2": "+44 20 7946 0001",
            "birthday": date(1815, 12, 10),
            "business_address_city": "London",
            "fax": "42",  # v1.0 contacts have no fax: it stays in the CRM
        },
    )

    first = await world.sync(mailbox)

    assert first.status is RunStatus.SUCCEEDED, first.error
    assert writes(first) == [(ActEntity.CONTACT, ActAction.CREATED_IN_EXCHANGE)]
    item_id = world.linked(contact.ref)
    seen = world.fake.items.item(ALICE, item_id)
    assert (seen["title"], seen["givenName"], seen["surname"]) == ("Dr.", "Ada", "Lovelace")
    assert "jobTitle" not in seen, "a field that flows to the CRM only is not sent"
    assert seen["emailAddresses"] == [{"address": "ada@example.org", "name": "ada@example.org"}]
    assert seen["businessPhones"] == ["", "+44 20 7946 0001"]
    assert seen["birthday"] == "1815-12-10T00:00:00Z"
    assert seen["businessAddress"]["city"] == "London"
    assert seen["singleValueExtendedProperties"] == [
        {"id": CRM_ID_PROPERTY, "value": f"contact:{contact.ref.id}"}
    ], "the CRM id rides on the contact"
    assert writes(await world.sync(mailbox)) == [], "our own write reads back as no change"

    world.clock.advance(60)
    world.storage.edit_act_record(
        contact.ref,
        {
            "job_title": "Countess",  # to the CRM only: stays out of Graph
            "nickname": "Enchantress",  # to Exchange only
            "department": "Research",  # two-way
            "email2": "countess@example.org",
        },
    )
    report = await world.sync(mailbox)

    assert report.status is RunStatus.SUCCEEDED, report.error
    assert writes(report) == [(ActEntity.CONTACT, ActAction.UPDATED)]
    seen = world.fake.items.item(ALICE, item_id)
    assert (seen["nickName"], seen["department"]) == ("Enchantress", "Research")
    assert "jobTitle" not in seen, "a CRM change of a CRM-bound field does not go out"
    assert [e["address"] for e in seen["emailAddresses"]] == [
        "ada@example.org",
        "countess@example.org",
    ], "the second address joins the first"
    assert crm(world, contact.ref)["job_title"] == "Countess"

    world.clock.advance(60)
    world.fake.items.edit(ALICE, item_id, {"nickName": "Ada", "jobTitle": "Mathematician"})
    back = await world.sync(mailbox)

    fields = crm(world, contact.ref)
    assert fields["job_title"] == "Mathematician", "Outlook changes of it flow to the CRM"
    assert fields["nickname"] == "Enchantress", "an Exchange-bound field is not written back"
    assert fields["fax"] == "42", "a field Graph does not hold is not emptied"
    assert writes(back) == [(ActEntity.CONTACT, ActAction.UPDATED)]
    assert writes(await world.sync(mailbox)) == [], "nothing left to do"


async def test_an_event_moved_in_outlook_flows_to_the_crm_per_field_direction() -> None:
    world = ActWorld()
    world.settings = SyncSettings(
        act=ActSettings(
            field_directions={ActEntity.APPOINTMENT: {"subject": SyncDirection.TO_EXCHANGE}}
        )
    )
    mailbox, alice = world.add_user()
    world.storage.add_sync_filter(a_sync_filter(alice, ActEntity.APPOINTMENT))
    start = datetime(2026, 1, 8, 14, 0, tzinfo=BERLIN)
    meeting = world.storage.add_act_record(
        ActEntity.APPOINTMENT,
        alice,
        {
            "subject": "Contract review",
            "location": "Room 1",
            "start": start,
            "end": start + timedelta(hours=1),
            "time_zone": "Europe/Berlin",
            "importance": "high",
            "show_time_as": "tentative",
            "regarding": "account:fabrikam",  # a CRM link Graph does not hold
        },
        organizer=ALICE,
    )
    created = await world.sync(mailbox)
    assert created.status is RunStatus.SUCCEEDED, created.error
    assert writes(created) == [(ActEntity.APPOINTMENT, ActAction.CREATED_IN_EXCHANGE)]
    event_id = world.linked(meeting.ref)
    seen = world.fake.items.item(ALICE, event_id)
    assert seen["originalStartTimeZone"] == "W. Europe Standard Time"
    assert graph_start(seen) == start, "the start keeps its instant"
    assert (seen["importance"], seen["showAs"]) == ("high", "tentative")
    assert seen["transactionId"], "an event is created with a transactionId"
    assert seen["singleValueExtendedProperties"] == [
        {"id": CRM_ID_PROPERTY, "value": f"appointment:{meeting.ref.id}"}
    ], "the CRM id rides on the event"
    assert writes(await world.sync(mailbox)) == [], "the creation reads back as an echo"

    world.clock.advance(60)
    later = start + timedelta(days=1, hours=2)
    world.fake.items.edit(
        ALICE,
        event_id,
        {
            "subject": "Contract review (moved)",
            "location": {"displayName": "Room 2"},
            "start": utc_text(later),
            "end": utc_text(later + timedelta(minutes=90)),
        },
    )
    report = await world.sync(mailbox)

    assert report.status is RunStatus.SUCCEEDED, report.error
    assert writes(report) == [(ActEntity.APPOINTMENT, ActAction.UPDATED)]
    fields = crm(world, meeting.ref)
    assert fields["start"] == later, "the new time flows to the CRM"
    assert fields["end"] == later + timedelta(minutes=90)
    assert fields["location"] == "Room 2", "a two-way field flows back"
    assert fields["subject"] == "Contract review", "a field bound for Exchange does not"
    assert fields["regarding"] == "account:fabrikam"
    assert writes(await world.sync(mailbox)) == [], "nothing left to do"


async def test_a_412_conflict_is_handed_to_the_conflict_policy() -> None:
    world = ActWorld()
    mailbox, alice = world.add_user()
    world.storage.add_sync_filter(a_sync_filter(alice, ActEntity.TASK))
    task = world.storage.add_act_record(
        ActEntity.TASK,
        alice,
        {"subject": "Send the offer", "status": "not_started", "due": date(2026, 1, 9)},
    )
    await world.sync(mailbox)
    task_id = world.linked(task.ref)
    seen = world.fake.items.item(ALICE, task_id)
    assert seen["title"] == "Send the offer"
    assert seen["dueDateTime"]["dateTime"].startswith("2026-01-09")
    assert [(r["applicationName"], r["externalId"]) for r in seen["linkedResources"]] == [
        (LINKED_APPLICATION, f"task:{task.ref.id}")
    ], "a To Do task names its CRM record in a linked resource"

    world.clock.advance(60)
    world.storage.edit_act_record(task.ref, {"subject": "Send the offer (CRM)"})
    world.clock.advance(60)
    # Outlook saves its edit between our read and our write: the write meets a 412.
    world.fake.items.edit_before_next_write(
        ALICE, task_id, {"title": "Send the offer (Outlook)", "status": "waitingOnOthers"}
    )
    raced = await world.sync(mailbox)

    assert raced.status is RunStatus.SUCCEEDED, raced.error
    (failed,) = [o for o in raced.act if o.action is ActAction.UPDATED]
    assert failed.error is not None
    assert failed.error.error_type == "StorageConflictError"
    assert [r.status for r in world.fake.requests if r.method == "PATCH"] == [412], (
        "the write named the change key it read, and Graph refused it"
    )
    assert world.fake.items.item(ALICE, task_id)["title"] == "Send the offer (Outlook)", (
        "the refused write changed nothing"
    )

    report = await world.sync(mailbox)

    assert report.status is RunStatus.SUCCEEDED, report.error
    (update,) = [o for o in report.act if o.action is ActAction.UPDATED]
    assert update.error is None
    assert "subject: changed on both sides, exchange wins (latest)" in update.explanation
    fields = crm(world, task.ref)
    assert fields["subject"] == "Send the offer (Outlook)"
    assert fields["status"] == "waiting_on_others"
    assert world.fake.items.item(ALICE, task_id)["title"] == "Send the offer (Outlook)"


async def test_a_create_whose_answer_was_lost_is_not_duplicated_thanks_to_the_transaction_id() -> (
    None
):
    world = ActWorld()
    mailbox, alice = world.add_user()
    world.storage.add_sync_filter(a_sync_filter(alice, ActEntity.APPOINTMENT))
    start = datetime(2026, 1, 7, 9, 0, tzinfo=BERLIN)
    meeting = world.storage.add_act_record(
        ActEntity.APPOINTMENT,
        alice,
        {"subject": "Kick-off", "start": start, "end": start + timedelta(hours=1)},
        organizer=ALICE,
    )
    # Graph makes the event, but the answer is lost on the way back.
    world.fake.add_fault(
        GraphFault.error(504, "GatewayTimeout", method="POST", path="/events$", after=True)
    )

    lost = await world.sync(mailbox)

    assert lost.status is RunStatus.FAILED
    assert len(world.fake.items.events(ALICE)) == 1, "the event was made"
    assert [m for m in world.storage.mappings() if m.is_linked] == []

    world.clock.advance(timedelta(minutes=10))
    again = await world.sync(mailbox)

    assert again.status is RunStatus.SUCCEEDED, again.error
    assert writes(again) == [(ActEntity.APPOINTMENT, ActAction.CREATED_IN_EXCHANGE)]
    (event,) = world.fake.items.events(ALICE)
    assert world.fake.items.duplicate_posts_answered == 1, "the retry got the event made first"
    posts = [r for r in world.fake.requests if r.method == "POST" and r.path.endswith("/events")]
    assert [r.status for r in posts] == [504, 201], "the create was sent twice, made once"
    assert world.linked(meeting.ref) == event["id"]
    assert [r.ref for r in world.storage.act_records(ActEntity.APPOINTMENT)] == [meeting.ref], (
        "the event listed by delta is not imported as a second record"
    )
    assert writes(await world.sync(mailbox)) == [], "nothing left to do"


async def test_a_recurring_series_with_a_moved_occurrence_round_trips() -> None:
    world = ActWorld()
    mailbox, alice = world.add_user()
    world.storage.add_sync_filter(a_sync_filter(alice, ActEntity.APPOINTMENT))
    first = datetime(2026, 1, 12, 10, 0, tzinfo=BERLIN)  # a Monday, a week after the clock
    weekly = Recurrence(
        kind=RecurrenceKind.WEEKLY,
        weekdays=(1,),
        start_date=first.date(),
        count=4,
        time_zone="Europe/Berlin",
    )
    slot: dict[str, Any] = {
        "subject": "Weekly sync",
        "time_zone": "Europe/Berlin",
        "is_all_day": False,
        "importance": "normal",
        "show_time_as": "busy",
    }
    master = world.storage.add_act_record(
        ActEntity.APPOINTMENT,
        alice,
        {**slot, "start": first, "end": first + timedelta(hours=1), "recurrence": weekly},
        organizer=ALICE,
    )
    second = first + timedelta(weeks=1)
    moved = world.storage.add_act_record(
        ActEntity.APPOINTMENT,
        alice,
        {**slot, "start": second + timedelta(hours=2), "end": second + timedelta(hours=3)},
        organizer=ALICE,
        series=master.ref,
        original_start=second,
    )

    report = await world.sync(mailbox)

    assert report.status is RunStatus.SUCCEEDED, report.error
    master_id, moved_id = world.linked(master.ref), world.linked(moved.ref)
    series = world.fake.items.item(ALICE, master_id)
    assert series["recurrence"]["pattern"]["daysOfWeek"] == ["monday"]
    assert series["recurrence"]["range"]["recurrenceTimeZone"] == "W. Europe Standard Time"
    assert [
        (e["id"], e["originalStart"], graph_start(e)) for e in series["exceptionOccurrences"]
    ] == [(moved_id, "2026-01-19T09:00:00Z", second + timedelta(hours=2))], (
        "the CRM exception is the moved occurrence in Graph"
    )
    assert writes(await world.sync(mailbox)) == [], "the series reads back unchanged"

    # In Outlook, the third meeting moves to the afternoon.
    world.clock.advance(60)
    third = first + timedelta(weeks=2)
    (occurrence,) = [
        o
        for o in world.fake.items.occurrences(ALICE, master_id)
        if o["originalStart"] == "2026-01-26T09:00:00Z"
    ]
    assert occurrence["type"] == "occurrence"
    world.fake.items.edit(
        ALICE,
        occurrence["id"],
        {
            "start": utc_text(third + timedelta(hours=4)),
            "end": utc_text(third + timedelta(hours=5)),
        },
    )
    back = await world.sync(mailbox)

    assert back.status is RunStatus.SUCCEEDED, back.error
    (added,) = [
        r
        for r in world.storage.act_records(ActEntity.APPOINTMENT)
        if r.ref not in {master.ref, moved.ref}
    ]
    assert (added.series, added.original_start) == (master.ref, third)
    assert added.fields["start"] == third + timedelta(hours=4)
    assert world.linked(added.ref) == occurrence["id"]
    assert crm(world, moved.ref)["start"] == second + timedelta(hours=2)
    assert crm(world, master.ref)["recurrence"] == weekly

    # In Outlook, the last meeting is cancelled: the series lists it as cancelled.
    world.clock.advance(60)
    fourth = first + timedelta(weeks=3)
    (last,) = [
        o
        for o in world.fake.items.occurrences(ALICE, master_id)
        if o["originalStart"] == "2026-02-02T09:00:00Z"
    ]
    world.fake.items.remove(ALICE, last["id"])
    cancelled = await world.sync(mailbox)
    assert cancelled.status is RunStatus.SUCCEEDED, cancelled.error
    (item,) = await _read(world, mailbox, [master_id])
    assert item.deleted_occurrences == (fourth,)


async def _read(world: ActWorld, mailbox: Mailbox, ids: list[str]) -> list[Any]:
    stored = await world.storage.get_mailbox(mailbox.id)
    assert stored is not None
    assert stored.profile_id is not None
    profile = await world.storage.get_profile(stored.profile_id)
    assert profile is not None
    async with world.graph.act.open(stored, profile, world.credentials[mailbox.id]) as session:
        return list(await session.get_items(ActEntity.APPOINTMENT, ids))


async def test_an_event_deleted_in_outlook_is_seen_as_removed_and_deleted_in_the_crm() -> None:
    world = ActWorld()
    mailbox, alice = world.add_user()
    world.storage.add_sync_filter(a_sync_filter(alice, ActEntity.APPOINTMENT))
    start = datetime(2026, 1, 9, 9, 0, tzinfo=BERLIN)
    meeting = world.storage.add_act_record(
        ActEntity.APPOINTMENT,
        alice,
        {"subject": "Review", "start": start, "end": start + timedelta(hours=1)},
        organizer=ALICE,
    )
    await world.sync(mailbox)
    assert writes(await world.sync(mailbox)) == [], "the creation reads back as an echo"
    event_id = world.linked(meeting.ref)
    world.fake.items.remove(ALICE, event_id)
    world.fake.requests.clear()

    report = await world.sync(mailbox)

    assert report.status is RunStatus.SUCCEEDED, report.error
    assert writes(report) == [(ActEntity.APPOINTMENT, ActAction.DELETED_IN_CRM)]
    assert world.storage.act_record(meeting.ref) is None
    asked = [(r.method, r.path.rsplit("/", 1)[-1], r.status) for r in world.fake.requests]
    assert ("GET", "delta", 200) in asked, "the delete came through calendarView delta"
    assert ("GET", event_id, 404) in asked, "and was confirmed gone before the CRM delete"
    (mapping,) = world.storage.mappings()
    assert mapping.is_deleted_in_exchange


async def test_a_throttled_delta_is_waited_out_and_the_cycle_completes() -> None:
    world = ActWorld()
    mailbox, alice = world.add_user()
    world.storage.add_sync_filter(a_sync_filter(alice, ActEntity.CONTACT))
    contact = world.storage.add_act_record(ActEntity.CONTACT, alice, {"last_name": "Lamarr"})
    world.fake.add_fault(GraphFault.throttled("1", path="/contacts/delta$"))

    report = await world.sync(mailbox)

    assert report.status is RunStatus.SUCCEEDED, report.error
    assert writes(report) == [(ActEntity.CONTACT, ActAction.CREATED_IN_EXCHANGE)]
    assert world.linked(contact.ref)
    statuses = [r.status for r in world.fake.requests if r.path.endswith("/contacts/delta")]
    assert statuses[:2] == [429, 200], "Graph's Retry-After was honoured in place"
    assert world.graph.stats.waited == 1


async def test_an_event_moved_out_of_the_window_is_no_delete() -> None:
    world = ActWorld()
    mailbox, alice = world.add_user()
    world.storage.add_sync_filter(a_sync_filter(alice, ActEntity.APPOINTMENT))
    start = datetime(2026, 1, 9, 9, 0, tzinfo=BERLIN)
    meeting = world.storage.add_act_record(
        ActEntity.APPOINTMENT,
        alice,
        {"subject": "Review", "start": start, "end": start + timedelta(hours=1)},
        organizer=ALICE,
    )
    await world.sync(mailbox)
    assert writes(await world.sync(mailbox)) == []

    # Two years ahead: outside the window, so delta says "@removed" for it.
    world.clock.advance(60)
    far = start + timedelta(days=730)
    event_id = world.linked(meeting.ref)
    world.fake.items.edit(
        ALICE, event_id, {"start": utc_text(far), "end": utc_text(far + timedelta(hours=1))}
    )
    report = await world.sync(mailbox)

    assert report.status is RunStatus.SUCCEEDED, report.error
    assert world.storage.act_record(meeting.ref) is not None, (
        "an out-of-window @removed is no delete"
    )
    assert writes(report) == [(ActEntity.APPOINTMENT, ActAction.UPDATED)]
    assert crm(world, meeting.ref)["start"] == far, "the move still reaches the CRM"
    (mapping,) = world.storage.mappings()
    assert mapping.is_linked
    assert not mapping.is_deleted_in_exchange


async def test_an_outlook_contact_and_task_are_imported_and_a_lost_delta_state_resets() -> None:
    world = ActWorld()
    mailbox, alice = world.add_user()
    world.storage.add_sync_filter(a_sync_filter(alice, ActEntity.CONTACT))
    world.storage.add_sync_filter(a_sync_filter(alice, ActEntity.TASK))
    await world.sync(mailbox)
    world.clock.advance(60)
    contact_id = world.fake.items.add_contact(
        ALICE, {"givenName": "Grace", "surname": "Hopper", "mobilePhone": "+1 555 0100"}
    )
    task_id = world.fake.items.add_task(
        ALICE, {"title": "Call Grace", "importance": "high", "status": "inProgress"}
    )

    report = await world.sync(mailbox)

    assert report.status is RunStatus.SUCCEEDED, report.error
    assert sorted(writes(report)) == [
        (ActEntity.CONTACT, ActAction.CREATED_IN_CRM),
        (ActEntity.TASK, ActAction.CREATED_IN_CRM),
    ]
    (contact,) = world.storage.act_records(ActEntity.CONTACT)
    assert (contact.fields["last_name"], contact.fields["mobile_phone"]) == (
        "Hopper",
        "+1 555 0100",
    )
    (task,) = world.storage.act_records(ActEntity.TASK)
    assert (task.fields["subject"], task.fields["priority"], task.fields["status"]) == (
        "Call Grace",
        "high",
        "in_progress",
    )
    assert world.linked(contact.ref) == contact_id
    assert world.linked(task.ref) == task_id

    world.fake.expire_delta_tokens()
    again = await world.sync(mailbox)

    assert again.status is RunStatus.SUCCEEDED, again.error
    assert writes(again) == [], "the replay after a lost state is absorbed by the mappings"
    assert len(world.storage.act_records(ActEntity.CONTACT)) == 1
