"""The Graph ACT mapping's pure parts: field values to Graph JSON and back, Windows zone
names, recurrences, and the transactionId of an event created for a CRM record."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from serversync.adapters.transports.graph._act import transaction_id
from serversync.adapters.transports.graph._act_fields import (
    FieldError,
    from_graph,
    iana_zone,
    to_graph,
    windows_zone,
)
from serversync.model import RecordRef
from serversync.model.act import ActEntity, Attendee, FieldValue, Recurrence, RecurrenceKind

BERLIN = ZoneInfo("Europe/Berlin")


def test_an_appointment_round_trips_through_graph_json_in_its_zone() -> None:
    start = datetime(2026, 3, 30, 10, 0, tzinfo=BERLIN)  # after the DST change
    fields: dict[str, FieldValue] = {
        "subject": "Planning",
        "body": "Agenda",
        "location": "Room 1",
        "start": start,
        "end": start.replace(hour=11),
        "time_zone": "Europe/Berlin",
        "is_all_day": False,
        "importance": "high",
        "show_time_as": "out_of_office",
        "attendees": (Attendee(address="jane@fabrikam.example", optional=True),),
        "recurrence": Recurrence(
            kind=RecurrenceKind.WEEKLY,
            weekdays=(1, 3),
            start_date=date(2026, 3, 30),
            count=6,
            time_zone="Europe/Berlin",
        ),
    }
    written = to_graph(ActEntity.APPOINTMENT, fields)
    assert written["start"] == {
        "dateTime": "2026-03-30T10:00:00",
        "timeZone": "W. Europe Standard Time",
    }
    assert written["showAs"] == "oof"
    assert written["attendees"] == [
        {"emailAddress": {"address": "jane@fabrikam.example"}, "type": "optional"}
    ]
    assert written["recurrence"]["pattern"]["daysOfWeek"] == ["monday", "wednesday"]
    # As Graph answers it: in UTC, with the zone the event was created in.
    answered = {
        **written,
        "start": {"dateTime": "2026-03-30T08:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2026-03-30T09:00:00.0000000", "timeZone": "UTC"},
        "originalStartTimeZone": "W. Europe Standard Time",
        "organizer": {"emailAddress": {"address": "alice@contoso.example"}},
    }
    read = from_graph(ActEntity.APPOINTMENT, answered)
    assert read["start"] == start
    assert isinstance(read["start"], datetime)
    assert read["start"].tzinfo == BERLIN, "given back in the appointment's own zone"
    assert read["organizer"] == "alice@contoso.example"
    assert {k: read[k] for k in fields} == fields


def test_contact_lists_keep_their_positions_and_addresses_merge() -> None:
    current = {
        "emailAddresses": [{"address": "ada@example.org", "name": "Ada"}],
        "businessPhones": ["+44 1"],
        "businessAddress": {"street": "1 Main St", "city": "London"},
    }
    written = to_graph(
        ActEntity.CONTACT,
        {"email3": "third@example.org", "business_phone": None, "business_address_city": "Bath"},
        current,
    )
    assert [e["address"] for e in written["emailAddresses"]] == [
        "ada@example.org",
        "",
        "third@example.org",
    ]
    assert written["businessPhones"] == []
    assert written["businessAddress"] == {"street": "1 Main St", "city": "Bath"}
    read = from_graph(ActEntity.CONTACT, {**current, **written, "birthday": "1815-12-10T11:00:00Z"})
    assert (read["email1"], read["email2"], read["email3"]) == (
        "ada@example.org",
        None,
        "third@example.org",
    )
    assert read["birthday"] == date(1815, 12, 10)


def test_fields_graph_does_not_hold_and_bad_values_are_refused() -> None:
    with pytest.raises(FieldError, match="fax"):
        to_graph(ActEntity.CONTACT, {"fax": "42"})
    with pytest.raises(FieldError, match="percent_complete"):
        to_graph(ActEntity.TASK, {"percent_complete": 50})
    with pytest.raises(FieldError, match="status"):
        to_graph(ActEntity.TASK, {"status": "done"})
    with pytest.raises(FieldError, match="timezone-aware"):
        to_graph(
            ActEntity.APPOINTMENT, {"start": datetime(2026, 1, 1), "end": datetime(2026, 1, 2)}
        )
    with pytest.raises(FieldError, match="Windows"):
        windows_zone("Mars/Olympus_Mons")


def test_windows_and_iana_zone_names() -> None:
    assert windows_zone("Europe/Berlin") == "W. Europe Standard Time"
    assert iana_zone("W. Europe Standard Time") == "Europe/Berlin"
    assert iana_zone("India Standard Time") in {"Asia/Calcutta", "Asia/Kolkata"}
    assert iana_zone("UTC") == "UTC"
    assert iana_zone(None) == "UTC"
    assert iana_zone("Not A Zone") == "UTC"


def test_a_task_maps_to_a_to_do_task() -> None:
    written = to_graph(
        ActEntity.TASK,
        {
            "subject": "Call",
            "due": date(2026, 1, 9),
            "status": "waiting_on_others",
            "priority": "low",
        },
    )
    assert written == {
        "title": "Call",
        "dueDateTime": {"dateTime": "2026-01-09T00:00:00", "timeZone": "UTC"},
        "status": "waitingOnOthers",
        "importance": "low",
    }
    read = from_graph(ActEntity.TASK, written)
    assert (read["subject"], read["due"], read["status"], read["priority"]) == (
        "Call",
        date(2026, 1, 9),
        "waiting_on_others",
        "low",
    )


def test_the_transaction_id_is_the_same_for_every_retry_of_one_record() -> None:
    meeting = RecordRef("appointment", "a1")
    first = transaction_id("Alice@contoso.example", meeting, {"subject": "A"})
    assert first == transaction_id("alice@contoso.example", meeting, {"subject": "B"})
    assert first != transaction_id("alice@contoso.example", RecordRef("appointment", "a2"), {})
    assert first != transaction_id("bob@contoso.example", meeting, {})
    anonymous = transaction_id("alice@contoso.example", None, {"subject": "A"})
    assert anonymous == transaction_id("alice@contoso.example", None, {"subject": "A"})
    assert anonymous != transaction_id("alice@contoso.example", None, {"subject": "B"})
