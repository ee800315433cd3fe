"""Calendar items, contacts and tasks through exchangelib: create, update, delete, change
keys that change on every update, and conflicts on a stale change key."""

from __future__ import annotations

import email
from datetime import timedelta
from email import policy

import pytest
from exchangelib import (  # type: ignore[import-untyped]
    Attendee,
    CalendarItem,
    Contact,
    EWSDate,
    EWSDateTime,
    EWSTimeZone,
    Mailbox,
    Task,
)
from exchangelib.errors import (  # type: ignore[import-untyped]
    ErrorInvalidChangeKey,
    ErrorIrresolvableConflict,
)
from exchangelib.indexed_properties import (  # type: ignore[import-untyped]
    EmailAddress,
    PhoneNumber,
    PhysicalAddress,
)
from exchangelib.items import (  # type: ignore[import-untyped]
    ALWAYS_OVERWRITE,
    NEVER_OVERWRITE,
    SEND_TO_ALL_AND_SAVE_COPY,
)
from exchangelib.recurrence import DailyPattern, Recurrence  # type: ignore[import-untyped]

from serversync.testing.ews import EwsTestServer
from tests.integration.ews.conftest import ALICE, Connect

pytestmark = pytest.mark.integration

BERLIN = EWSTimeZone("Europe/Berlin")


def test_a_calendar_item_round_trips_in_utc(ews: EwsTestServer, connect: Connect) -> None:
    account = connect()
    start = EWSDateTime(2026, 3, 10, 9, 0, tzinfo=BERLIN)  # 08:00 UTC, before DST
    item = CalendarItem(
        account=account,
        folder=account.calendar,
        subject="Contract review",
        start=start,
        end=start + timedelta(hours=1),
        location="Room 1",
        body="Agenda",
    )
    item.save()

    stored = ews.item(item.id)
    assert stored is not None
    assert stored.folder_id == ews.folder(ALICE, "calendar").id
    assert stored.kind == "CalendarItem"
    assert stored.properties["Start"] == "2026-03-10T08:00:00Z"
    assert stored.properties["End"] == "2026-03-10T09:00:00Z"
    assert stored.properties["CalendarItemType"] == "Single"
    assert stored.addresses["Organizer"] == (ALICE,)

    fetched = account.calendar.get(id=item.id)
    assert fetched.subject == "Contract review"
    assert fetched.start == start
    assert fetched.end == start + timedelta(hours=1)
    assert fetched.location == "Room 1"
    assert fetched.organizer.email_address == ALICE
    window = account.calendar.view(start=start - timedelta(days=1), end=start + timedelta(days=1))
    assert [c.id for c in window] == [item.id]
    assert (
        list(account.calendar.view(start=start + timedelta(hours=2), end=start + timedelta(days=1)))
        == []
    )


def test_updates_change_the_change_key_and_deletes_remove(
    ews: EwsTestServer, connect: Connect
) -> None:
    account = connect()
    start = EWSDateTime(2026, 7, 1, 14, 0, tzinfo=BERLIN)  # 12:00 UTC, in DST
    item = CalendarItem(
        account=account,
        folder=account.calendar,
        subject="Call",
        start=start,
        end=start + timedelta(minutes=30),
    )
    item.save()
    keys = {item.changekey}

    item.location = "Phone"
    item.save(update_fields=["location"])
    keys.add(item.changekey)
    item.start, item.end = start + timedelta(hours=1), start + timedelta(hours=2)
    item.save(update_fields=["start", "end"])
    keys.add(item.changekey)

    assert len(keys) == 3
    stored = ews.item(item.id)
    assert stored is not None
    assert stored.changekey == item.changekey
    assert stored.properties["Location"] == "Phone"
    assert stored.properties["Start"] == "2026-07-01T13:00:00Z"

    item.location = None
    item.save(update_fields=["location"])
    stored = ews.item(item.id)
    assert stored is not None
    assert "Location" not in stored.properties

    item_id = item.id
    item.delete()
    assert ews.item(item_id) is None
    assert ews.items(ALICE, "calendar") == []


def test_meeting_requests_and_cancellations_go_to_attendees(
    ews: EwsTestServer, connect: Connect
) -> None:
    account = connect()
    start = EWSDateTime(2026, 4, 2, 10, 0, tzinfo=BERLIN)
    meeting = CalendarItem(
        account=account,
        folder=account.calendar,
        subject="Kick-off",
        start=start,
        end=start + timedelta(hours=1),
        required_attendees=[Attendee(mailbox=Mailbox(email_address="carol@fabrikam.example"))],
    )

    meeting.save(send_meeting_invitations=SEND_TO_ALL_AND_SAVE_COPY)
    meeting.delete(send_meeting_cancellations=SEND_TO_ALL_AND_SAVE_COPY)

    request, cancellation = ews.outbox
    assert (request.kind, request.recipients) == ("MeetingRequest", ("carol@fabrikam.example",))
    assert cancellation.kind == "MeetingCancellation"
    calendar = email.message_from_bytes(request.mime, policy=policy.default)
    [ical] = [p for p in calendar.walk() if p.get_content_type() == "text/calendar"]
    text = ical.get_content()
    assert "METHOD:REQUEST" in text
    assert "DTSTART:20260402T080000Z" in text
    assert "ATTENDEE;ROLE=REQ-PARTICIPANT:mailto:carol@fabrikam.example" in text
    assert "STATUS:CANCELLED" in email.message_from_bytes(cancellation.mime).as_string()


def test_a_recurring_series_is_one_master(ews: EwsTestServer, connect: Connect) -> None:
    account = connect()
    start = EWSDateTime(2026, 5, 4, 9, 0, tzinfo=BERLIN)
    series = CalendarItem(
        account=account,
        folder=account.calendar,
        subject="Stand-up",
        start=start,
        end=start + timedelta(minutes=15),
        recurrence=Recurrence(pattern=DailyPattern(interval=1), start=start.date(), number=5),
    )
    series.save()

    fetched = account.calendar.get(id=series.id)
    assert fetched.type == "RecurringMaster"
    assert fetched.recurrence.pattern == DailyPattern(interval=1)
    assert fetched.recurrence.boundary.number == 5


def test_a_contact_round_trips_with_indexed_properties(
    ews: EwsTestServer, connect: Connect
) -> None:
    account = connect()
    contact = Contact(
        account=account,
        folder=account.contacts,
        display_name="Dana Scully",
        given_name="Dana",
        surname="Scully",
        company_name="Fabrikam",
        email_addresses=[EmailAddress(email="dana@fabrikam.example", label="EmailAddress1")],
        phone_numbers=[PhoneNumber(label="BusinessPhone", phone_number="+1 555 0100")],
        physical_addresses=[
            PhysicalAddress(label="Business", street="1 Main St", city="Springfield")
        ],
    )
    contact.save()
    first_key = contact.changekey
    assert ews.item(contact.id).properties["FileAs"] == "Scully, Dana"  # type: ignore[union-attr]

    contact.phone_numbers = [
        PhoneNumber(label="BusinessPhone", phone_number="+1 555 0199"),
        PhoneNumber(label="MobilePhone", phone_number="+1 555 0142"),
    ]
    contact.physical_addresses = [
        PhysicalAddress(label="Business", street="2 Main St", city="Springfield")
    ]
    contact.save(update_fields=["phone_numbers", "physical_addresses"])

    fetched = account.contacts.get(id=contact.id)
    assert fetched.changekey == contact.changekey != first_key
    assert fetched.display_name == "Dana Scully"
    assert fetched.company_name == "Fabrikam"
    assert fetched.email_addresses == [
        EmailAddress(email="dana@fabrikam.example", label="EmailAddress1")
    ]
    assert sorted((p.label, p.phone_number) for p in fetched.phone_numbers) == [
        ("BusinessPhone", "+1 555 0199"),
        ("MobilePhone", "+1 555 0142"),
    ]
    [address] = fetched.physical_addresses
    assert (address.street, address.city) == ("2 Main St", "Springfield")


def test_a_task_completes(ews: EwsTestServer, connect: Connect) -> None:
    account = connect()
    task = Task(
        account=account, folder=account.tasks, subject="Send quote", due_date=EWSDate(2026, 3, 12)
    )
    task.save()
    stored = ews.item(task.id)
    assert stored is not None
    assert stored.properties["Status"] == "NotStarted"

    task.status = "Completed"
    task.save(update_fields=["status"])

    fetched = account.tasks.get(id=task.id)
    assert fetched.status == "Completed"
    assert fetched.is_complete is True
    assert fetched.percent_complete == 100
    assert fetched.due_date == EWSDate(2026, 3, 12)
    task.delete()
    assert ews.items(ALICE, "tasks") == []


def test_a_stale_change_key_conflicts(ews: EwsTestServer, connect: Connect) -> None:
    account = connect()
    contact = Contact(
        account=account,
        folder=account.contacts,
        display_name="Fox Mulder",
        company_name="FBI",
        job_title="Agent",
    )
    contact.save()
    stale_key = contact.changekey
    # Someone changes the company in Outlook meanwhile.
    ews.set_properties(contact.id, CompanyName="Lone Gunmen")

    contact.company_name = "X-Files"
    with pytest.raises(ErrorIrresolvableConflict):
        contact.save(update_fields=["company_name"], conflict_resolution=NEVER_OVERWRITE)

    # AutoResolve (exchangelib's default) overwrites, as MS-OXWSCORE describes it.
    contact.job_title = "Special Agent"
    contact.save(update_fields=["company_name", "job_title"])
    fetched = account.contacts.get(id=contact.id)
    assert (fetched.company_name, fetched.job_title) == ("X-Files", "Special Agent")

    # AlwaysOverwrite too, even from the stale key.
    contact.changekey = stale_key
    contact.company_name = "Fabrikam"
    contact.save(update_fields=["company_name"], conflict_resolution=ALWAYS_OVERWRITE)
    assert account.contacts.get(id=contact.id).company_name == "Fabrikam"

    contact.changekey = "bm90IGEgY2hhbmdlIGtleQ=="
    with pytest.raises(ErrorInvalidChangeKey):
        contact.save(update_fields=["company_name"])
