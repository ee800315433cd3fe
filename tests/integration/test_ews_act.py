"""Appointments, contacts and tasks over EWS against the EWS test server, unmodified
exchangelib in between: each entity created, read, updated and deleted; change keys guarding
updates; SyncFolderItems paging, deletions and resets; recurring series with a moved
occurrence; time zones across DST; throttling and refused credentials."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from exchangelib import (  # type: ignore[import-untyped]
    DELEGATE,
    Account,
    Configuration,
    Contact,
    HTMLBody,
    close_connections,
)
from exchangelib import Credentials as ExchangelibCredentials
from exchangelib.protocol import FailFast  # type: ignore[import-untyped]
from exchangelib.transport import BASIC  # type: ignore[import-untyped]
from exchangelib.version import EXCHANGE_2016, Version  # type: ignore[import-untyped]

from serversync.adapters.transports import ACT_FIELDS, EwsActTransport, EwsTransport
from serversync.adapters.transports._ews_act_fields import occurrence_index
from serversync.errors import (
    AuthenticationError,
    ErrorScope,
    PermanentError,
    ServerBusyError,
    StorageConflictError,
)
from serversync.model import (
    Credentials,
    EmailServerProfile,
    Secret,
    ServerEndpoint,
    ServerType,
    TlsMode,
)
from serversync.model.act import (
    ActEntity,
    Attendee,
    ExchangeItem,
    ExchangeItemKey,
    FieldValues,
    Recurrence,
    RecurrenceKind,
)
from serversync.ports.act import ExchangeItemsSession, ExchangeItemsTransport
from serversync.settings import Timeouts
from serversync.testing import a_mailbox, a_profile, check_exchange_items_session
from serversync.testing.ews import Delay, EwsTestServer, HttpError, ServerBusy

pytestmark = pytest.mark.integration

ALICE = "alice@contoso.example"
SERVICE = "svc-crm@contoso.example"
PASSWORD = "correct horse"
BERLIN = ZoneInfo("Europe/Berlin")
TYPES = "http://schemas.microsoft.com/exchange/services/2006/types"
FAST = Timeouts(
    connect=timedelta(seconds=5),
    command=timedelta(seconds=5),
    fetch=timedelta(seconds=5),
    send=timedelta(seconds=5),
    close=timedelta(seconds=2),
)
Open = Callable[..., AbstractAsyncContextManager[ExchangeItemsSession]]


def _is_the_port(transport: EwsActTransport) -> ExchangeItemsTransport:
    return transport  # mypy compares the adapter with its port structurally


@pytest.fixture
async def ews() -> AsyncIterator[EwsTestServer]:
    async with EwsTestServer() as server:
        server.add_mailbox(ALICE, password=PASSWORD, display_name="Alice Contoso")
        yield server


def profile_for(server: EwsTestServer, **overrides: Any) -> EmailServerProfile:
    endpoint = ServerEndpoint(host=server.url, tls=TlsMode.NONE)
    return a_profile(server_type=ServerType.EXCHANGE_SERVER, incoming=endpoint, **overrides)


@pytest.fixture
def open_session(ews: EwsTestServer) -> Open:
    transport = EwsTransport(timeouts=FAST).act

    def open_(
        user: str = ALICE, secret: str = PASSWORD, **profile: Any
    ) -> AbstractAsyncContextManager[ExchangeItemsSession]:
        return transport.open(
            a_mailbox(ALICE),
            profile_for(ews, **profile),
            Credentials(username=user, secret=Secret(secret)),
        )

    return open_


def meeting(start: datetime, **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "subject": "Contract review",
        "body": "Agenda: terms",
        "location": "Room 1",
        "start": start,
        "end": start + timedelta(hours=1),
        "time_zone": "Europe/Berlin",
        "importance": "high",
        "show_time_as": "busy",
        "attendees": (
            Attendee(address="carol@fabrikam.example"),
            Attendee(address="dave@fabrikam.example", optional=True),
        ),
    }
    values.update(fields)
    return values


async def read_one(session: ExchangeItemsSession, entity: ActEntity, item_id: str) -> ExchangeItem:
    [item] = await session.get_items(entity, [item_id])
    return item


async def sync_all(
    session: ExchangeItemsSession, entity: ActEntity, state: str | None, *, limit: int = 100
) -> tuple[list[ExchangeItem], list[str], str, int]:
    """Every page after ``state``: changed items, deleted ids, the last state, the pages."""
    changed: list[ExchangeItem] = []
    deleted: list[str] = []
    pages = 0
    while True:
        page = await session.sync_items(entity, state, limit=limit)
        pages += 1
        changed += page.changed
        deleted += page.deleted
        state = page.state
        if not page.more:
            return changed, deleted, state, pages


# -- each entity --------------------------------------------------------------------------------


async def test_an_appointment_is_created_read_updated_and_deleted(
    ews: EwsTestServer, open_session: Open
) -> None:
    start = datetime(2026, 3, 10, 9, 0, tzinfo=BERLIN)
    async with open_session() as session:
        key = await session.create_item(ActEntity.APPOINTMENT, meeting(start))
        stored = ews.item(key.item_id)
        assert stored is not None
        assert stored.properties["Start"] == "2026-03-10T08:00:00Z"
        # A CRM meeting is saved, not sent: the host invites the attendees.
        assert not ews.outbox

        item = await read_one(session, ActEntity.APPOINTMENT, key.item_id)
        assert item.key == key
        assert item.organizer == ALICE
        assert item.series_id is None
        fields = item.fields
        assert set(fields) == set(ACT_FIELDS[ActEntity.APPOINTMENT])
        assert fields["subject"] == "Contract review"
        assert fields["body"] == "Agenda: terms"
        assert fields["location"] == "Room 1"
        assert fields["start"] == start
        assert fields["end"] == start + timedelta(hours=1)
        assert fields["start"].tzinfo == BERLIN  # type: ignore[union-attr]
        assert fields["time_zone"] == "Europe/Berlin"
        assert fields["importance"] == "high"
        assert fields["show_time_as"] == "busy"
        assert fields["is_all_day"] is False
        assert fields["recurrence"] is None
        assert fields["attendees"] == (
            Attendee(address="carol@fabrikam.example"),
            Attendee(address="dave@fabrikam.example", optional=True),
        )

        later = start + timedelta(days=1)
        new_key = await session.update_item(
            ActEntity.APPOINTMENT,
            key,
            {"subject": "Contract signing", "start": later, "end": later + timedelta(hours=2)},
        )
        assert new_key.item_id == key.item_id
        assert new_key.change_key != key.change_key
        assert not ews.outbox
        item = await read_one(session, ActEntity.APPOINTMENT, key.item_id)
        assert item.key == new_key
        assert item.fields["subject"] == "Contract signing"
        assert item.fields["start"] == later
        assert item.fields["end"] == later + timedelta(hours=2)
        assert item.fields["location"] == "Room 1"

        await session.delete_item(ActEntity.APPOINTMENT, key.item_id)
        assert await session.get_items(ActEntity.APPOINTMENT, [key.item_id]) == []
        assert [i.subject for i in ews.items(ALICE, "deleteditems")] == ["Contract signing"]
        assert not ews.outbox
        # Deleting what is gone is no error.
        await session.delete_item(ActEntity.APPOINTMENT, key.item_id)


async def test_an_all_day_appointment_keeps_its_midnights(open_session: Open) -> None:
    start = datetime(2026, 7, 1, tzinfo=BERLIN)
    fields = meeting(start, end=start + timedelta(days=2), is_all_day=True, attendees=())
    async with open_session() as session:
        key = await session.create_item(ActEntity.APPOINTMENT, fields)
        item = await read_one(session, ActEntity.APPOINTMENT, key.item_id)
    assert item.fields["is_all_day"] is True
    assert item.fields["start"] == start
    assert item.fields["end"] == start + timedelta(days=2)
    assert item.fields["attendees"] == ()


async def test_deleting_a_meeting_can_send_cancellations(
    ews: EwsTestServer, open_session: Open
) -> None:
    start = datetime(2026, 4, 2, 10, 0, tzinfo=BERLIN)
    async with open_session() as session:
        quiet = await session.create_item(ActEntity.APPOINTMENT, meeting(start))
        loud = await session.create_item(ActEntity.APPOINTMENT, meeting(start))
        await session.delete_item(ActEntity.APPOINTMENT, quiet.item_id)
        assert not ews.outbox
        await session.delete_item(ActEntity.APPOINTMENT, loud.item_id, send_cancellations=True)
    sent: list[tuple[str, str]] = [(m.kind, r) for m in ews.outbox for r in m.recipients]
    kinds = sorted(sent)
    assert kinds == [
        ("MeetingCancellation", "carol@fabrikam.example"),
        ("MeetingCancellation", "dave@fabrikam.example"),
    ]


async def test_a_contact_is_created_read_updated_and_deleted(
    ews: EwsTestServer, open_session: Open
) -> None:
    fields: dict[str, Any] = {
        "first_name": "Dana",
        "last_name": "Scully",
        "middle_name": "Katherine",
        "company": "Fabrikam",
        "job_title": "Agent",
        "email1": "dana@fabrikam.example",
        "email2": "dks@home.example",
        "business_phone": "+1 555 0100",
        "mobile_phone": "+1 555 0142",
        "business_address_street": "1 Main St",
        "business_address_city": "Springfield",
        "business_address_state": "VA",
        "business_address_postal_code": "22150",
        "business_address_country": "USA",
        "home_address_city": "Annapolis",
        "other_address_street": "2 Lake Rd",
        "body": "Met at the conference",
        "suffix": "Jr.",
        "nickname": "Starbuck",
        "department": "X-Files",
        "business_phone2": "+1 555 0101",
        "fax": "+1 555 0102",
        "website": "https://fabrikam.example/dana",
        "birthday": date(1964, 2, 23),
        "anniversary": date(1990, 6, 1),
        "spouse_name": "None yet",
    }
    async with open_session() as session:
        key = await session.create_item(ActEntity.CONTACT, fields)
        stored = ews.item(key.item_id)
        assert stored is not None
        assert stored.properties["DisplayName"] == "Dana Scully"
        assert stored.folder_id == ews.folder(ALICE, "contacts").id

        item = await read_one(session, ActEntity.CONTACT, key.item_id)
        assert set(item.fields) == set(ACT_FIELDS[ActEntity.CONTACT])
        assert {k: v for k, v in item.fields.items() if v is not None} == fields
        assert item.organizer is None

        changes: dict[str, Any] = {
            "email2": None,
            "email3": "dana@fbi.example",
            "mobile_phone": "+1 555 0199",
            "business_address_city": "Arlington",
            "home_address_city": None,
            "birthday": date(1964, 2, 24),
            "fax": None,
            "job_title": None,
        }
        new_key = await session.update_item(ActEntity.CONTACT, key, changes)
        item = await read_one(session, ActEntity.CONTACT, key.item_id)
        assert item.key == new_key
        expected = {**fields, **changes}
        assert {k: v for k, v in item.fields.items() if v is not None} == {
            k: v for k, v in expected.items() if v is not None
        }

        await session.delete_item(ActEntity.CONTACT, key.item_id)
        assert await session.get_items(ActEntity.CONTACT, [key.item_id]) == []


async def test_a_task_is_created_read_updated_and_deleted(open_session: Open) -> None:
    fields: dict[str, Any] = {
        "subject": "Send the offer",
        "body": "Prices as agreed",
        "start": date(2026, 6, 1),
        "due": date(2026, 6, 5),
        "status": "in_progress",
        "priority": "low",
        "percent_complete": 40,
    }
    async with open_session() as session:
        key = await session.create_item(ActEntity.TASK, fields)
        item = await read_one(session, ActEntity.TASK, key.item_id)
        assert set(item.fields) == set(ACT_FIELDS[ActEntity.TASK])
        assert item.fields == fields

        new_key = await session.update_item(ActEntity.TASK, key, {"status": "completed"})
        item = await read_one(session, ActEntity.TASK, key.item_id)
        assert item.key == new_key
        # Exchange completes the percentage with the status.
        assert (item.fields["status"], item.fields["percent_complete"]) == ("completed", 100)

        await session.delete_item(ActEntity.TASK, key.item_id)
        assert await session.get_items(ActEntity.TASK, [key.item_id]) == []


async def test_an_unknown_field_or_a_bad_value_fails_that_item(open_session: Open) -> None:
    async with open_session() as session:
        for entity, fields in [
            (ActEntity.CONTACT, {"first_name": "A", "salutation": "Dr."}),
            (ActEntity.TASK, {"subject": "T", "status": "someday"}),
            (ActEntity.APPOINTMENT, meeting(datetime(2026, 1, 5, 9, tzinfo=UTC), time_zone="Mars")),
        ]:
            with pytest.raises(PermanentError) as caught:
                await session.create_item(entity, fields)
            assert caught.value.scope is ErrorScope.ITEM
        # The session goes on.
        await session.create_item(ActEntity.TASK, {"subject": "fine"})


# -- the port's promises, entity by entity ------------------------------------------------------


async def check_items_session(
    session: ExchangeItemsSession, entity: ActEntity, fields: FieldValues, changes: FieldValues
) -> None:
    """What :class:`ExchangeItemsSession` promises for one entity, through one session."""
    start = await session.sync_items(entity, None, limit=100)
    assert not start.more
    # A deleted item's id: get_items leaves it out, delete_item does nothing.
    gone = await session.create_item(entity, fields)
    await session.delete_item(entity, gone.item_id)
    state = (await session.sync_items(entity, start.state, limit=100)).state

    key = await session.create_item(entity, fields)
    page = await session.sync_items(entity, state, limit=100)
    [created] = page.changed
    assert (created.entity, created.key, page.deleted, page.reset) == (entity, key, (), False)
    assert {name: created.fields[name] for name in fields} == dict(fields)
    assert set(created.fields) == set(ACT_FIELDS[entity])
    assert [i.key for i in await session.get_items(entity, [gone.item_id, key.item_id])] == [key]

    new_key = await session.update_item(entity, key, changes)
    assert new_key.item_id == key.item_id
    assert new_key.change_key != key.change_key
    with pytest.raises(StorageConflictError):
        await session.update_item(entity, key, changes)
    page = await session.sync_items(entity, page.state, limit=100)
    [updated] = page.changed
    assert updated.key == new_key
    assert {name: updated.fields[name] for name in changes} == dict(changes)
    assert updated.last_modified >= created.last_modified

    await session.delete_item(entity, key.item_id)
    await session.delete_item(entity, key.item_id)
    await session.delete_item(entity, gone.item_id)
    page = await session.sync_items(entity, page.state, limit=100)
    assert (page.changed, page.deleted, page.more) == ((), (key.item_id,), False)
    assert await session.get_items(entity, [key.item_id]) == []


@pytest.mark.parametrize(
    ("entity", "fields", "changes"),
    [
        (
            ActEntity.APPOINTMENT,
            meeting(datetime(2026, 10, 5, 14, 0, tzinfo=BERLIN)),
            {
                "location": "Room 9",
                "attendees": (Attendee(address="erin@fabrikam.example", optional=True),),
                "show_time_as": "tentative",
            },
        ),
        (
            ActEntity.CONTACT,
            {"first_name": "Walter", "last_name": "Skinner", "email1": "ws@fbi.example"},
            {"email1": "walter@fbi.example", "home_phone": "+1 555 0111"},
        ),
        (
            ActEntity.TASK,
            {"subject": "Renew the contract", "due": date(2026, 12, 1), "priority": "high"},
            {"due": date(2026, 12, 15), "percent_complete": 50},
        ),
    ],
    ids=["appointment", "contact", "task"],
)
async def test_the_session_keeps_the_port_s_promises(
    open_session: Open, entity: ActEntity, fields: FieldValues, changes: FieldValues
) -> None:
    async with open_session() as session:
        await check_items_session(session, entity, fields, changes)


# -- change keys --------------------------------------------------------------------------------


async def test_a_stale_change_key_is_a_storage_conflict(
    ews: EwsTestServer, open_session: Open
) -> None:
    async with open_session() as session:
        key = await session.create_item(ActEntity.CONTACT, {"first_name": "Fox"})
        # Someone edits the contact in Outlook meanwhile.
        fresh = await session.update_item(ActEntity.CONTACT, key, {"last_name": "Mulder"})
        with pytest.raises(StorageConflictError):
            await session.update_item(ActEntity.CONTACT, key, {"job_title": "Agent"})
        item = await read_one(session, ActEntity.CONTACT, key.item_id)
        assert item.key == fresh
        assert item.fields["job_title"] is None
        # With the change key read again the write goes through.
        await session.update_item(ActEntity.CONTACT, fresh, {"job_title": "Agent"})


async def test_a_change_between_read_and_write_is_refused_by_exchange(
    ews: EwsTestServer, open_session: Open
) -> None:
    # Outlook saves the task after the adapter read it (the change key matched) and before
    # its UpdateItem arrives: Exchange refuses the write (NeverOverwrite).
    async with open_session() as session:
        key = await session.create_item(ActEntity.TASK, {"subject": "Call back"})
        reads = ews.operations().count("GetItem")
        ews.inject(Delay(1.0), operation="UpdateItem")
        update = asyncio.create_task(
            session.update_item(ActEntity.TASK, key, {"subject": "Call back today"})
        )
        for _ in range(500):
            if ews.operations().count("GetItem") > reads:
                break
            await asyncio.sleep(0.01)
        ews.set_properties(key.item_id, Subject="Edited in Outlook")
        with pytest.raises(StorageConflictError) as caught:
            await update
        assert caught.value.server_code == "ErrorIrresolvableConflict"
        item = await read_one(session, ActEntity.TASK, key.item_id)
        assert item.fields["subject"] == "Edited in Outlook"


# -- sync -------------------------------------------------------------------------------------


async def test_sync_pages_through_the_folder_and_reports_deletions(
    ews: EwsTestServer, open_session: Open
) -> None:
    async with open_session() as session:
        keys = [
            await session.create_item(ActEntity.CONTACT, {"first_name": f"Contact {n}"})
            for n in range(5)
        ]
        first = await session.sync_items(ActEntity.CONTACT, None, limit=2)
        assert first.more
        assert not first.reset
        assert len(first.changed) == 2
        changed, deleted, state, pages = await sync_all(
            session, ActEntity.CONTACT, first.state, limit=2
        )
        assert pages == 2
        assert [i.key for i in (*first.changed, *changed)] == keys
        assert deleted == []

        quiet = await session.sync_items(ActEntity.CONTACT, state, limit=2)
        assert (quiet.changed, quiet.deleted, quiet.more) == ((), (), False)

        await session.update_item(ActEntity.CONTACT, keys[1], {"last_name": "Changed"})
        await session.delete_item(ActEntity.CONTACT, keys[3].item_id)
        ews.delete_item(keys[4].item_id)  # deleted in Outlook, for good
        after = await session.sync_items(ActEntity.CONTACT, quiet.state, limit=10)
        assert [(i.key.item_id, i.fields["last_name"]) for i in after.changed] == [
            (keys[1].item_id, "Changed")
        ]
        assert sorted(after.deleted) == sorted([keys[3].item_id, keys[4].item_id])
        assert not after.more


async def test_an_unknown_sync_state_lists_the_folder_again(
    ews: EwsTestServer, open_session: Open
) -> None:
    async with open_session() as session:
        key = await session.create_item(ActEntity.TASK, {"subject": "Kept"})
        done = await session.sync_items(ActEntity.TASK, None, limit=10)
        ews.reset_sync_states(ALICE)
        again = await session.sync_items(ActEntity.TASK, done.state, limit=10)
        assert again.reset
        assert [i.key for i in again.changed] == [key]
        garbage = await session.sync_items(ActEntity.TASK, "bm90IGEgc3RhdGU=", limit=10)
        assert garbage.reset
        assert [i.key for i in garbage.changed] == [key]


async def test_each_entity_syncs_its_own_folder(open_session: Open) -> None:
    start = datetime(2026, 2, 2, 9, tzinfo=BERLIN)
    async with open_session() as session:
        created: dict[ActEntity, ExchangeItemKey] = {
            ActEntity.APPOINTMENT: await session.create_item(ActEntity.APPOINTMENT, meeting(start)),
            ActEntity.CONTACT: await session.create_item(ActEntity.CONTACT, {"first_name": "C"}),
            ActEntity.TASK: await session.create_item(ActEntity.TASK, {"subject": "T"}),
        }
        for entity, key in created.items():
            page = await session.sync_items(entity, None, limit=10)
            assert [i.key for i in page.changed] == [key]
            assert all(i.entity is entity for i in page.changed)


# -- recurring series and time zones -----------------------------------------------------------


@pytest.fixture
def outlook(ews: EwsTestServer) -> Iterator[Any]:
    """An exchangelib account on Alice's mailbox: another client (Outlook) changing it."""
    config = Configuration(
        service_endpoint=ews.url,
        credentials=ExchangelibCredentials(ALICE, PASSWORD),
        auth_type=BASIC,
        version=Version(build=EXCHANGE_2016),
        retry_policy=FailFast(),
    )
    try:
        yield Account(ALICE, config=config, autodiscover=False, access_type=DELEGATE)
    finally:
        close_connections()


def _series_by_id(items: Sequence[ExchangeItem]) -> dict[str, ExchangeItem]:
    return {i.key.item_id: i for i in items}


async def test_a_recurring_meeting_with_one_moved_occurrence_round_trips(
    ews: EwsTestServer, open_session: Open, outlook: Any
) -> None:
    first = datetime(2026, 5, 4, 10, 0, tzinfo=BERLIN)  # a Monday
    weekly = Recurrence(
        kind=RecurrenceKind.WEEKLY,
        weekdays=(1,),
        start_date=first.date(),
        count=5,
        time_zone="Europe/Berlin",
    )
    async with open_session() as session:
        key = await session.create_item(
            ActEntity.APPOINTMENT, meeting(first, subject="Weekly sync", recurrence=weekly)
        )
        page = await session.sync_items(ActEntity.APPOINTMENT, None, limit=10)
        [master] = page.changed
        assert master.key == key
        assert master.fields["recurrence"] == weekly
        assert master.fields["start"] == first
        assert master.series_id is None

        # In Outlook, the third meeting moves two hours later.
        third = first + timedelta(weeks=2)
        occurrence = outlook.calendar.get(id=key.item_id).occurrence(3)
        occurrence.refresh()
        assert occurrence.start == third
        occurrence.start += timedelta(hours=2)
        occurrence.end += timedelta(hours=2)
        occurrence.save(update_fields=["start", "end"])

        page = await session.sync_items(ActEntity.APPOINTMENT, page.state, limit=10)
        found = _series_by_id(page.changed)
        assert set(found) == {key.item_id, occurrence.id}
        assert found[key.item_id].fields["recurrence"] == weekly
        moved = found[occurrence.id]
        assert moved.series_id == key.item_id
        assert moved.original_start == third
        assert moved.fields["start"] == third + timedelta(hours=2)
        assert moved.fields["subject"] == "Weekly sync"
        assert moved.fields["recurrence"] is None

        # Read on its own, the exception still names its series.
        [alone] = await session.get_items(ActEntity.APPOINTMENT, [occurrence.id])
        assert (alone.series_id, alone.original_start) == (key.item_id, third)

        # The CRM moves it back to the afternoon, by the exception's own key.
        afternoon = third + timedelta(hours=5)
        back = await session.update_item(
            ActEntity.APPOINTMENT,
            moved.key,
            {"start": afternoon, "end": afternoon + timedelta(hours=1)},
        )
        assert back.item_id == occurrence.id

        # ... and renames the fourth, which Exchange has not seen as an exception yet.
        fourth = first + timedelta(weeks=3)
        master_now = (await session.get_items(ActEntity.APPOINTMENT, [key.item_id]))[0]
        renamed = await session.update_item(
            ActEntity.APPOINTMENT,
            ExchangeItemKey(
                item_id=key.item_id,
                change_key=master_now.key.change_key,
                original_start=fourth,
            ),
            {"subject": "Weekly sync (board)"},
        )
        assert renamed.item_id not in (key.item_id, occurrence.id)

        page = await session.sync_items(ActEntity.APPOINTMENT, page.state, limit=10)
        found = _series_by_id(page.changed)
        assert set(found) == {key.item_id, occurrence.id, renamed.item_id}
        assert found[occurrence.id].fields["start"] == afternoon
        assert found[renamed.item_id].original_start == fourth
        assert found[renamed.item_id].fields["start"] == fourth
        assert found[renamed.item_id].fields["subject"] == "Weekly sync (board)"
        assert found[key.item_id].fields["subject"] == "Weekly sync"

    # Outlook sees the same series: two exceptions, the rest as the pattern says.
    series = outlook.calendar.get(id=key.item_id)
    assert sorted((o.original_start, o.start) for o in series.modified_occurrences) == [
        (third, afternoon),
        (fourth, fourth),
    ]
    fifth = series.occurrence(5)
    fifth.refresh()
    assert (fifth.type, fifth.start) == ("Occurrence", first + timedelta(weeks=4))


async def test_deleted_occurrences_are_listed_on_the_master(
    open_session: Open, outlook: Any
) -> None:
    first = datetime(2026, 9, 1, 8, 30, tzinfo=BERLIN)
    monthly = Recurrence(
        kind=RecurrenceKind.ABSOLUTE_MONTHLY,
        day_of_month=1,
        start_date=first.date(),
        end_date=date(2026, 12, 31),
        time_zone="Europe/Berlin",
    )
    october = first.replace(month=10)
    november = first.replace(month=11)
    async with open_session() as session:
        key = await session.create_item(
            ActEntity.APPOINTMENT, meeting(first, subject="Monthly report", recurrence=monthly)
        )
        exception = await session.update_item(
            ActEntity.APPOINTMENT,
            ExchangeItemKey(item_id=key.item_id, change_key="", original_start=october),
            {"subject": "Monthly report (Q3)"},
        )
        state = (await session.sync_items(ActEntity.APPOINTMENT, None, limit=10)).state
        # The CRM deletes the changed October meeting; Outlook deletes November's.
        await session.delete_item(ActEntity.APPOINTMENT, exception.item_id)
        gone = outlook.calendar.get(id=key.item_id).occurrence(3)
        gone.refresh()
        gone.delete()
        page = await session.sync_items(ActEntity.APPOINTMENT, state, limit=10)
    [master] = page.changed
    assert master.key.item_id == key.item_id
    assert master.deleted_occurrences == (october, november)
    assert master.fields["recurrence"] == monthly


async def test_writing_a_series_again_keeps_its_exceptions(
    open_session: Open, outlook: Any
) -> None:
    first = datetime(2026, 5, 4, 10, 0, tzinfo=BERLIN)
    daily = Recurrence(
        kind=RecurrenceKind.DAILY, start_date=first.date(), count=3, time_zone="Europe/Berlin"
    )
    fields = meeting(first, recurrence=daily)
    async with open_session() as session:
        key = await session.create_item(ActEntity.APPOINTMENT, fields)
        second = first + timedelta(days=1)
        exception = await session.update_item(
            ActEntity.APPOINTMENT,
            ExchangeItemKey(item_id=key.item_id, change_key="", original_start=second),
            {"location": "Room 7"},
        )
        [master] = await session.get_items(ActEntity.APPOINTMENT, [key.item_id])
        # The CRM writes back every field it has: nothing changed, nothing is written.
        same = await session.update_item(ActEntity.APPOINTMENT, master.key, fields)
        assert same == master.key
        # A real change writes only itself; the pattern is not set again.
        renamed = await session.update_item(
            ActEntity.APPOINTMENT, same, {**fields, "subject": "New"}
        )
        items = await session.get_items(ActEntity.APPOINTMENT, [key.item_id, exception.item_id])
        assert [i.key.item_id for i in items] == [renamed.item_id, exception.item_id]
        assert items[0].fields["subject"] == "New"
        # An occurrence has no pattern of its own.
        with pytest.raises(PermanentError):
            await session.update_item(ActEntity.APPOINTMENT, items[1].key, {"recurrence": daily})
        await session.update_item(
            ActEntity.APPOINTMENT, items[1].key, {"recurrence": None, "location": "Room 8"}
        )
    assert [o.id for o in outlook.calendar.get(id=key.item_id).modified_occurrences] == [
        exception.item_id
    ]


async def test_an_html_body_from_outlook_is_read_as_text(open_session: Open, outlook: Any) -> None:
    contact = Contact(
        account=outlook,
        folder=outlook.contacts,
        display_name="Monica Reyes",
        given_name="Monica",
        body=HTMLBody("<html><body><p>Prefers <b>email</b>.</p></body></html>"),
    )
    contact.save()
    async with open_session() as session:
        [item] = await session.get_items(ActEntity.CONTACT, [contact.id])
    assert item.fields["body"] == "Prefers email."


async def test_an_occurrence_is_deleted_through_its_own_key(open_session: Open) -> None:
    first = datetime(2026, 11, 2, 16, 0, tzinfo=BERLIN)
    daily = Recurrence(
        kind=RecurrenceKind.DAILY, start_date=first.date(), count=3, time_zone="Europe/Berlin"
    )
    async with open_session() as session:
        key = await session.create_item(ActEntity.APPOINTMENT, meeting(first, recurrence=daily))
        second = first + timedelta(days=1)
        # No changes: the occurrence's own key, and the occurrence stays as it is.
        own = await session.update_item(
            ActEntity.APPOINTMENT,
            ExchangeItemKey(item_id=key.item_id, change_key="", original_start=second),
            {},
        )
        assert own.item_id != key.item_id
        [master] = await session.get_items(ActEntity.APPOINTMENT, [key.item_id])
        assert master.key == key
        await session.delete_item(ActEntity.APPOINTMENT, own.item_id, send_cancellations=True)
        [master] = await session.get_items(ActEntity.APPOINTMENT, [key.item_id])
    assert master.deleted_occurrences == (second,)


async def test_an_occurrence_the_series_lacks_fails_that_item(open_session: Open) -> None:
    first = datetime(2026, 5, 4, 10, 0, tzinfo=BERLIN)
    daily = Recurrence(kind=RecurrenceKind.DAILY, start_date=first.date(), count=3)
    async with open_session() as session:
        key = await session.create_item(
            ActEntity.APPOINTMENT, meeting(first, recurrence=daily, time_zone="UTC")
        )
        for original in (first + timedelta(days=3), first + timedelta(hours=1)):
            missing = ExchangeItemKey(item_id=key.item_id, change_key="", original_start=original)
            with pytest.raises(PermanentError) as caught:
                await session.update_item(ActEntity.APPOINTMENT, missing, {"subject": "x"})
            assert caught.value.scope is ErrorScope.ITEM


async def test_a_weekly_series_keeps_its_local_time_across_dst(
    ews: EwsTestServer, open_session: Open, outlook: Any
) -> None:
    # Europe/Berlin moves from UTC+1 to UTC+2 on Sunday 29 March 2026.
    first = datetime(2026, 3, 16, 9, 0, tzinfo=BERLIN)
    weekly = Recurrence(
        kind=RecurrenceKind.WEEKLY,
        weekdays=(1,),
        start_date=first.date(),
        count=4,
        time_zone="Europe/Berlin",
    )
    async with open_session() as session:
        key = await session.create_item(
            ActEntity.APPOINTMENT, meeting(first, subject="Planning", recurrence=weekly)
        )
        stored = ews.item(key.item_id)
        assert stored is not None
        assert stored.properties["Start"] == "2026-03-16T08:00:00Z"
        zone = stored.element().find(f"{{{TYPES}}}StartTimeZone")
        assert zone is not None
        assert zone.get("Id") == "W. Europe Standard Time"

        series = outlook.calendar.get(id=key.item_id)
        starts = []
        for index in range(1, 5):
            occurrence = series.occurrence(index)
            occurrence.refresh()
            # EWSDateTime.astimezone() takes only exchangelib's own time zones.
            utc = datetime.fromtimestamp(occurrence.start.timestamp(), UTC)
            starts.append(utc.strftime("%m-%d %H:%M"))
        assert starts == ["03-16 08:00", "03-23 08:00", "03-30 07:00", "04-06 07:00"]

        # The CRM changes the first meeting after the change by its local start time.
        after = datetime(2026, 3, 30, 9, 0, tzinfo=BERLIN)
        exception = await session.update_item(
            ActEntity.APPOINTMENT,
            ExchangeItemKey(item_id=key.item_id, change_key="", original_start=after),
            {"location": "Room 2"},
        )
        [read] = await session.get_items(ActEntity.APPOINTMENT, [exception.item_id])
    assert read.original_start == after
    assert read.fields["start"] == after
    assert read.fields["start"].hour == 9  # type: ignore[union-attr]
    assert read.fields["time_zone"] == "Europe/Berlin"
    assert read.fields["location"] == "Room 2"


async def test_time_zones_come_back_as_the_windows_zone_s_iana_name(open_session: Open) -> None:
    vienna = ZoneInfo("Europe/Vienna")
    start = datetime(2026, 8, 3, 14, 0, tzinfo=vienna)
    async with open_session() as session:
        key = await session.create_item(
            ActEntity.APPOINTMENT, meeting(start, time_zone="Europe/Vienna")
        )
        new_york = await session.create_item(
            ActEntity.APPOINTMENT,
            meeting(datetime(2026, 8, 3, 9, tzinfo=UTC), time_zone="America/New_York"),
        )
        [vienna_item, ny_item] = await session.get_items(
            ActEntity.APPOINTMENT, [key.item_id, new_york.item_id]
        )
    # Exchange keeps the Windows zone (W. Europe Standard Time): the same rules, CLDR's name.
    assert vienna_item.fields["time_zone"] == "Europe/Berlin"
    assert vienna_item.fields["start"] == start
    assert ny_item.fields["time_zone"] == "America/New_York"
    assert ny_item.fields["start"].hour == 5  # type: ignore[union-attr]


# -- errors -----------------------------------------------------------------------------------


async def test_throttling_is_server_busy_with_retry_after(
    ews: EwsTestServer, open_session: Open
) -> None:
    async with open_session() as session:
        ews.inject(ServerBusy(back_off_ms=30_000), operation="SyncFolderItems")
        with pytest.raises(ServerBusyError) as caught:
            await session.sync_items(ActEntity.CONTACT, None, limit=10)
        assert caught.value.retry_after == timedelta(seconds=30)
        # Backing off and coming back completes.
        page = await session.sync_items(ActEntity.CONTACT, None, limit=10)
        assert page.changed == ()


async def test_refused_credentials_are_an_authentication_error(
    ews: EwsTestServer, open_session: Open
) -> None:
    with pytest.raises(AuthenticationError):
        async with open_session(secret="wrong"):
            pass
    ews.inject(HttpError(401), operation="CreateItem")
    async with open_session() as session:
        with pytest.raises(AuthenticationError):
            await session.create_item(ActEntity.TASK, {"subject": "T"})


async def test_impersonation_follows_the_incoming_setting(
    ews: EwsTestServer, open_session: Open
) -> None:
    ews.add_user(SERVICE, password=PASSWORD)
    ews.allow_impersonation(SERVICE)
    async with open_session(SERVICE, incoming_use_impersonation=True) as session:
        key = await session.create_item(ActEntity.TASK, {"subject": "For Alice"})
    assert [i.id for i in ews.items(ALICE, "tasks")] == [key.item_id]


# -- pure helpers -------------------------------------------------------------------------------


def test_occurrence_indexes_count_pattern_dates_in_the_series_time_zone() -> None:
    weekly = Recurrence(
        kind=RecurrenceKind.WEEKLY,
        weekdays=(1, 3),
        start_date=date(2026, 3, 18),  # a Wednesday
        count=6,
        time_zone="Europe/Berlin",
    )
    assert occurrence_index(weekly, datetime(2026, 3, 18, 9, tzinfo=BERLIN)) == 1
    assert occurrence_index(weekly, datetime(2026, 3, 23, 9, tzinfo=BERLIN)) == 2
    # 00:30 Berlin on Wednesday 1 April is still Tuesday in UTC.
    assert occurrence_index(weekly, datetime(2026, 3, 31, 22, 30, tzinfo=UTC)) == 5
    assert occurrence_index(weekly, datetime(2026, 3, 24, 9, tzinfo=BERLIN)) is None
    assert occurrence_index(weekly, datetime(2026, 4, 6, 9, tzinfo=BERLIN)) == 6
    assert occurrence_index(weekly, datetime(2026, 4, 8, 9, tzinfo=BERLIN)) is None
    monthly = Recurrence(
        kind=RecurrenceKind.ABSOLUTE_MONTHLY, day_of_month=31, start_date=date(2026, 1, 31)
    )
    assert occurrence_index(monthly, datetime(2026, 2, 28, 9, tzinfo=UTC)) == 2
    assert occurrence_index(monthly, datetime(2026, 4, 30, 9, tzinfo=UTC)) == 4
    yearly = Recurrence(
        kind=RecurrenceKind.ABSOLUTE_YEARLY,
        day_of_month=29,
        month=2,
        start_date=date(2024, 2, 29),
        end_date=date(2030, 1, 1),
    )
    assert occurrence_index(yearly, datetime(2025, 2, 28, 9, tzinfo=UTC)) == 2
    assert occurrence_index(yearly, datetime(2028, 2, 29, 9, tzinfo=UTC)) == 5
    assert occurrence_index(yearly, datetime(2030, 2, 28, 9, tzinfo=UTC)) is None
    daily = Recurrence(kind=RecurrenceKind.DAILY, interval=2, start_date=date(2026, 1, 1))
    assert occurrence_index(daily, datetime(2026, 1, 5, 9, tzinfo=UTC)) == 3
    assert occurrence_index(daily, datetime(2026, 1, 6, 9, tzinfo=UTC)) is None


async def test_the_ews_session_keeps_the_exchange_items_session_contract(
    open_session: Open,
) -> None:
    await check_exchange_items_session(open_session)
