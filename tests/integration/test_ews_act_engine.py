"""Appointment, contact and task sync end to end: SyncEngine with the EWS ACT transport
against the EWS test server, unmodified exchangelib in between.

The CRM side is the in-memory storage; Outlook is played by exchangelib on the same mailbox,
editing items directly. The test server shares the engine's fake clock, so "modified last"
compares the two sides on one time line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest
from exchangelib import (  # type: ignore[import-untyped]
    DELEGATE,
    Account,
    Configuration,
    close_connections,
)
from exchangelib import Credentials as ExchangelibCredentials
from exchangelib.indexed_properties import PhoneNumber  # type: ignore[import-untyped]
from exchangelib.protocol import FailFast  # type: ignore[import-untyped]
from exchangelib.transport import BASIC  # type: ignore[import-untyped]
from exchangelib.version import EXCHANGE_2016, Version  # type: ignore[import-untyped]

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
    SkipReason,
    SyncDirection,
    SyncEngine,
    SyncSettings,
    TestStatus,
    Transports,
    Workload,
)
from serversync.adapters.transports import EXCHANGE_SERVER_TYPES, EwsTransport
from serversync.model import (
    Credentials,
    Mailbox,
    MailboxId,
    RecordRef,
    Secret,
    ServerEndpoint,
    ServerType,
    TlsMode,
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
from serversync.testing.ews import EwsTestServer, ServerBusy

pytestmark = pytest.mark.integration

ALICE = "alice@contoso.example"
PASSWORD = "correct horse"
BERLIN = ZoneInfo("Europe/Berlin")


@attrs.define
class ActWorld:
    """The CRM in memory, Alice's calendar, contacts and tasks on the EWS test server."""

    server: EwsTestServer
    clock: FakeClock
    storage: InMemoryStorage = attrs.field()
    directory: InMemoryDirectory = attrs.Factory(InMemoryDirectory)
    credentials: dict[MailboxId, Credentials] = attrs.Factory(dict)
    settings: SyncSettings = attrs.Factory(SyncSettings)
    ews: EwsTransport = attrs.field()

    @storage.default
    def _storage(self) -> InMemoryStorage:
        return InMemoryStorage(clock=self.clock)

    @ews.default
    def _ews(self) -> EwsTransport:
        return EwsTransport(clock=self.clock)

    def add_user(self, *, password: str = PASSWORD) -> tuple[Mailbox, RecordRef]:
        self.server.add_mailbox(ALICE, password=PASSWORD, display_name="Alice Contoso")
        record = a_user(ALICE)
        self.directory.add(record)
        profile = a_profile(
            server_type=ServerType.EXCHANGE_SERVER,
            incoming=ServerEndpoint(host=self.server.url, tls=TlsMode.NONE),
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
        self.credentials[mailbox.id] = Credentials(username=ALICE, secret=Secret(password))
        return mailbox, record.ref

    def engine(self) -> SyncEngine:
        return SyncEngine(
            repositories=self.storage,
            directory=self.directory,
            transports=Transports.by_server_type(
                incoming=dict.fromkeys(EXCHANGE_SERVER_TYPES, self.ews.incoming),
                outgoing=dict.fromkeys(EXCHANGE_SERVER_TYPES, self.ews.outgoing),
                act=dict.fromkeys(EXCHANGE_SERVER_TYPES, self.ews.act),
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


@pytest.fixture
async def world() -> AsyncIterator[ActWorld]:
    clock = FakeClock()
    async with EwsTestServer(now=clock.now) as server:
        yield ActWorld(server, clock)


@pytest.fixture
def outlook(world: ActWorld) -> Iterator[Any]:
    """Another client on Alice's mailbox (Outlook), editing items through exchangelib."""
    config = Configuration(
        service_endpoint=world.server.url,
        credentials=ExchangelibCredentials(ALICE, PASSWORD),
        auth_type=BASIC,
        version=Version(build=EXCHANGE_2016),
        retry_policy=FailFast(),
    )
    try:
        yield Account(ALICE, config=config, autodiscover=False, access_type=DELEGATE)
    finally:
        close_connections()


def actions(report: MailboxRunReport) -> list[tuple[ActEntity, ActAction]]:
    return [(o.entity, o.action) for o in report.act]


def writes(report: MailboxRunReport) -> list[tuple[ActEntity, ActAction]]:
    """What was written to either side: echoes and mappings brought up to date are not."""
    return [
        (o.entity, o.action)
        for o in report.act
        if o.action is not ActAction.ECHO and not o.explanation.startswith("nothing to write")
    ]


def crm(world: ActWorld, ref: RecordRef) -> dict[str, Any]:
    record = world.storage.act_record(ref)
    assert record is not None
    return dict(record.fields)


async def test_a_contact_created_in_crm_appears_in_exchange_and_outlook_changes_flow_back(
    world: ActWorld, outlook: Any
) -> None:
    mailbox, alice = world.add_user()
    world.storage.add_sync_filter(a_sync_filter(alice, ActEntity.CONTACT))
    contact = world.storage.add_act_record(
        ActEntity.CONTACT,
        alice,
        {
            "salutation": "Dr.",  # Exchange has no place for it: it stays in the CRM
            "first_name": "Ada",
            "last_name": "Lovelace",
            "suffix": "Jr.",
            "nickname": "Enchantress",
            "company": "Analytical Engines",
            "department": "Research",
            "email1": "ada@example.org",
            "business_phone2": "+44 20 7946 0001",
            "website": "https://example.org/ada",
            "birthday": date(1815, 12, 10),
            "business_address_city": "London",
            "home_address_city": "Marylebone",  # home addresses do not sync by default
            "body": "Met at the Royal Society",
        },
    )

    first = await world.sync(mailbox)

    assert first.status is RunStatus.SUCCEEDED, first.error
    assert writes(first) == [(ActEntity.CONTACT, ActAction.CREATED_IN_EXCHANGE)]
    item_id = world.linked(contact.ref)
    seen = outlook.contacts.get(id=item_id)
    assert (seen.given_name, seen.surname, seen.generation) == ("Ada", "Lovelace", "Jr.")
    assert (seen.nickname, seen.department) == ("Enchantress", "Research")
    assert seen.business_homepage == "https://example.org/ada"
    assert seen.birthday == date(1815, 12, 10)
    assert {p.label: p.phone_number for p in seen.phone_numbers} == {
        "BusinessPhone2": "+44 20 7946 0001"
    }
    assert [(a.label, a.city) for a in seen.physical_addresses] == [("Business", "London")]
    assert "Royal Society" in str(seen.body)

    quiet = await world.sync(mailbox)
    assert writes(quiet) == [], "our own write and the fields Exchange lacks are no change"

    world.clock.advance(60)
    seen.job_title = "Countess"
    seen.spouse_name = "William King"
    seen.phone_numbers = [*seen.phone_numbers, PhoneNumber(label="BusinessFax", phone_number="42")]
    seen.save(update_fields=["job_title", "spouse_name", "phone_numbers"])

    back = await world.sync(mailbox)

    assert writes(back) == [(ActEntity.CONTACT, ActAction.UPDATED)]
    fields = crm(world, contact.ref)
    assert (fields["job_title"], fields["spouse_name"], fields["fax"]) == (
        "Countess",
        "William King",
        "42",
    )
    assert fields["salutation"] == "Dr.", "a field Exchange does not return is not emptied"
    assert fields["home_address_city"] == "Marylebone"
    assert fields["birthday"] == date(1815, 12, 10)
    assert writes(await world.sync(mailbox)) == [], "nothing left to do"


async def test_behaviour_14_a_crm_to_exchange_field_changed_in_outlook_does_not_flow_back(
    world: ActWorld, outlook: Any
) -> None:
    world.settings = SyncSettings(
        act=ActSettings(
            field_directions={ActEntity.CONTACT: {"job_title": SyncDirection.TO_EXCHANGE}}
        )
    )
    mailbox, alice = world.add_user()
    world.storage.add_sync_filter(a_sync_filter(alice, ActEntity.CONTACT))
    contact = world.storage.add_act_record(
        ActEntity.CONTACT, alice, {"last_name": "Hopper", "job_title": "Rear Admiral"}
    )
    await world.sync(mailbox)
    seen = outlook.contacts.get(id=world.linked(contact.ref))
    assert seen.job_title == "Rear Admiral"

    world.clock.advance(60)
    seen.job_title = "Commodore"
    seen.department = "Navy"
    seen.save(update_fields=["job_title", "department"])
    report = await world.sync(mailbox)

    assert report.status is RunStatus.SUCCEEDED, report.error
    fields = crm(world, contact.ref)
    assert fields["job_title"] == "Rear Admiral", "a CRM → Exchange field is not written back"
    assert fields["department"] == "Navy", "two-way fields still flow back"

    world.clock.advance(60)
    world.storage.edit_act_record(contact.ref, {"job_title": "Admiral"})
    await world.sync(mailbox)
    assert outlook.contacts.get(id=seen.id).job_title == "Admiral", "CRM changes go out"


async def test_behaviour_15_an_appointment_deleted_in_outlook_is_deleted_in_crm(
    world: ActWorld, outlook: Any
) -> None:
    mailbox, alice = world.add_user()
    world.storage.add_sync_filter(a_sync_filter(alice, ActEntity.APPOINTMENT))
    start = (world.clock.now() + timedelta(days=2)).astimezone(BERLIN)
    meeting = world.storage.add_act_record(
        ActEntity.APPOINTMENT,
        alice,
        {
            "subject": "Contract review",
            "start": start,
            "end": start + timedelta(hours=1),
            "time_zone": "Europe/Berlin",
            "importance": "high",
            "show_time_as": "tentative",
            "regarding": "account:fabrikam",  # a CRM link Exchange does not hold
        },
        organizer=ALICE,
    )
    created = await world.sync(mailbox)
    assert writes(created) == [(ActEntity.APPOINTMENT, ActAction.CREATED_IN_EXCHANGE)]
    seen = outlook.calendar.get(id=world.linked(meeting.ref))
    assert (seen.importance, seen.legacy_free_busy_status) == ("High", "Tentative")

    assert crm(world, meeting.ref)["regarding"] == "account:fabrikam"

    # Deleted before any sync state listed it: Exchange reports no delete for it.
    seen.delete()
    report = await world.sync(mailbox)

    assert writes(report) == [(ActEntity.APPOINTMENT, ActAction.DELETED_IN_CRM)]
    assert world.storage.act_record(meeting.ref) is None
    (mapping,) = world.storage.mappings()
    assert mapping.is_deleted_in_exchange


async def test_behaviour_15_an_appointment_deleted_after_a_cycle_read_it_is_deleted_in_crm(
    world: ActWorld, outlook: Any
) -> None:
    mailbox, alice = world.add_user()
    world.storage.add_sync_filter(a_sync_filter(alice, ActEntity.APPOINTMENT))
    start = (world.clock.now() + timedelta(days=2)).astimezone(BERLIN)
    meeting = world.storage.add_act_record(
        ActEntity.APPOINTMENT,
        alice,
        {"subject": "Review", "start": start, "end": start + timedelta(hours=1)},
        organizer=ALICE,
    )
    await world.sync(mailbox)
    assert writes(await world.sync(mailbox)) == [], "the creation reads back as an echo"
    outlook.calendar.get(id=world.linked(meeting.ref)).delete()

    report = await world.sync(mailbox)

    assert writes(report) == [(ActEntity.APPOINTMENT, ActAction.DELETED_IN_CRM)]
    assert world.storage.act_record(meeting.ref) is None


@pytest.mark.parametrize("outlook_later", [True, False], ids=["Outlook later", "CRM later"])
async def test_a_conflict_follows_the_documented_policy(
    world: ActWorld, outlook: Any, outlook_later: bool
) -> None:
    mailbox, alice = world.add_user()
    world.storage.add_sync_filter(a_sync_filter(alice, ActEntity.TASK))
    task = world.storage.add_act_record(
        ActEntity.TASK,
        alice,
        {"subject": "Send the offer", "status": "not_started", "due": date(2026, 1, 9)},
    )
    await world.sync(mailbox)
    seen = outlook.tasks.get(id=world.linked(task.ref))

    def in_outlook() -> None:
        seen.subject = "Send the offer (Outlook)"
        seen.status = "WaitingOnOthers"
        seen.save(update_fields=["subject", "status"])

    def in_crm() -> None:
        world.storage.edit_act_record(
            task.ref, {"subject": "Send the offer (CRM)", "due": date(2026, 1, 12)}
        )

    first, second = (in_crm, in_outlook) if outlook_later else (in_outlook, in_crm)
    world.clock.advance(60)
    first()
    world.clock.advance(60)
    second()
    report = await world.sync(mailbox)

    winner = "exchange" if outlook_later else "crm"
    expected = "Send the offer (Outlook)" if outlook_later else "Send the offer (CRM)"
    fields = crm(world, task.ref)
    now = outlook.tasks.get(id=seen.id)
    assert (fields["subject"], now.subject) == (expected, expected), "the later side wins"
    assert fields["status"] == "waiting_on_others", "a change on one side only still flows"
    assert now.due_date == date(2026, 1, 12)
    (update,) = [o for o in report.act if o.action is ActAction.UPDATED]
    assert f"subject: changed on both sides, {winner} wins (latest)" in update.explanation


async def test_a_recurring_meeting_with_one_moved_occurrence_round_trips(
    world: ActWorld, outlook: Any
) -> None:
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
    # As a CRM row has them: the exception's write changes the master's change key, so the
    # next cycle compares every field of the master.
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
    series = outlook.calendar.get(id=master_id)
    assert [(o.id, o.original_start, o.start) for o in series.modified_occurrences] == [
        (moved_id, second, second + timedelta(hours=2))
    ], "the CRM exception is the moved occurrence in Exchange"
    assert writes(await world.sync(mailbox)) == [], "the series reads back unchanged"

    # In Outlook, the third meeting moves to the afternoon.
    world.clock.advance(60)
    third = first + timedelta(weeks=2)
    occurrence = series.occurrence(3)
    occurrence.refresh()
    occurrence.start += timedelta(hours=4)
    occurrence.end += timedelta(hours=4)
    occurrence.save(update_fields=["start", "end"])
    back = await world.sync(mailbox)

    assert back.status is RunStatus.SUCCEEDED, back.error
    (added,) = [
        r
        for r in world.storage.act_records(ActEntity.APPOINTMENT)
        if r.ref not in {master.ref, moved.ref}
    ]
    assert (added.series, added.original_start) == (master.ref, third)
    assert added.fields["start"] == third + timedelta(hours=4)
    assert world.linked(added.ref) == occurrence.id
    assert crm(world, moved.ref)["start"] == second + timedelta(hours=2)
    assert crm(world, master.ref)["recurrence"] == weekly


async def test_throttling_backs_off_and_the_next_cycle_completes(world: ActWorld) -> None:
    mailbox, alice = world.add_user()
    world.storage.add_sync_filter(a_sync_filter(alice, ActEntity.CONTACT))
    contact = world.storage.add_act_record(ActEntity.CONTACT, alice, {"last_name": "Lamarr"})
    world.server.inject(ServerBusy(back_off_ms=20 * 60 * 1000), operation="SyncFolderItems")

    async with world.engine() as engine:
        busy = await engine.run_once(workloads=[Workload.ACT])
        (failed,) = busy.mailboxes
        assert failed.status is RunStatus.FAILED
        assert failed.error is not None
        assert (failed.error.error_type, failed.error.transient) == ("ServerBusyError", True)
        state = await world.storage.get_workload_state(mailbox.id, Workload.ACT)
        assert state is not None
        assert state.next_run_at is not None
        assert state.next_run_at >= failed.finished_at + timedelta(minutes=20), (
            "Exchange's BackOffMilliseconds decides when to come back"
        )
        assert world.storage.mappings() == []

        world.clock.advance(timedelta(minutes=10))
        world.server.clear_requests()
        waiting = await engine.run_once(workloads=[Workload.ACT])
        assert [r.skip_reason for r in waiting.mailboxes] == [SkipReason.NOT_DUE]
        assert world.server.requests == (), "nothing is asked of a busy server"

        world.clock.advance(timedelta(minutes=11))
        done = await engine.run_once(workloads=[Workload.ACT])

    (completed,) = done.mailboxes
    assert completed.status is RunStatus.SUCCEEDED, completed.error
    assert writes(completed) == [(ActEntity.CONTACT, ActAction.CREATED_IN_EXCHANGE)]
    assert world.linked(contact.ref)


async def test_a_401_disables_the_act_workload_with_the_reason(world: ActWorld) -> None:
    mailbox, alice = world.add_user(password="not-the-password")
    world.storage.add_sync_filter(a_sync_filter(alice, ActEntity.CONTACT))
    world.storage.add_act_record(ActEntity.CONTACT, alice, {"last_name": "Lovelace"})

    report = await world.sync(mailbox)

    assert report.status is RunStatus.FAILED
    assert report.error is not None
    assert (report.error.error_type, report.error.server_code) == (
        "AuthenticationError",
        "HTTP 401",
    )
    assert not report.error.transient
    assert "not-the-password" not in report.error.message
    stored = await world.storage.get_mailbox(mailbox.id)
    assert stored is not None
    assert not stored.enabled_for_act, "a permanent failure disables the workload"
    assert stored.act_status is TestStatus.FAILURE
    state = await world.storage.get_workload_state(mailbox.id, Workload.ACT)
    assert state is not None
    assert state.last_error is not None
    assert state.last_error.error_type == "AuthenticationError"
    assert world.storage.mappings() == []
    again = await world.sync(mailbox)
    assert again.skip_reason is SkipReason.WORKLOAD_DISABLED
