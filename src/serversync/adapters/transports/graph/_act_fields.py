"""serversync's ACT field values to Microsoft Graph JSON (event, contact, To Do task) and back.

Field names and values are those of :data:`serversync.act.FIELDS`. Graph holds fewer fields
than the table: an appointment's ``regarding`` (a CRM concept), a contact's ``fax`` and
``anniversary`` (v1.0 contacts have neither), a task's ``percent_complete`` (To Do has none).

Times: Graph answers in UTC (the session asks ``Prefer: outlook.timezone="UTC"``); an
appointment's times are given back in its ``time_zone``, the IANA name of the Windows zone
it was created in (``originalStartTimeZone``). Writes send the wall-clock time with the
Windows zone name, as Outlook does, so recurring series keep their local time across DST.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from exchangelib.winzone import (  # type: ignore[import-untyped]
    IANA_TO_MS_TIMEZONE_MAP,
    MS_TIMEZONE_TO_IANA_MAP,
)

from serversync.act.fields import IMPORTANCE_VALUES, SHOW_TIME_AS_VALUES, TASK_STATUS_VALUES
from serversync.mime.compose import html_to_text
from serversync.model.act import (
    ActEntity,
    Attendee,
    FieldValue,
    FieldValues,
    Recurrence,
    RecurrenceKind,
)

__all__ = [
    "FIELDS",
    "FieldError",
    "from_graph",
    "graph_datetime",
    "iana_zone",
    "parse_graph_datetime",
    "to_graph",
    "windows_zone",
]

APPOINTMENT_FIELDS: Final = (
    "subject",
    "body",
    "location",
    "start",
    "end",
    "is_all_day",
    "time_zone",
    "importance",
    "attendees",
    "organizer",
    "show_time_as",
    "recurrence",
)
_ADDRESS_KINDS: Final = {
    "business_address": "businessAddress",
    "home_address": "homeAddress",
    "other_address": "otherAddress",
}
_ADDRESS_PARTS: Final = {
    "street": "street",
    "city": "city",
    "state": "state",
    "postal_code": "postalCode",
    "country": "countryOrRegion",
}
_ADDRESS_FIELDS: Final = {
    f"{prefix}_{part}": (kind, key)
    for prefix, kind in _ADDRESS_KINDS.items()
    for part, key in _ADDRESS_PARTS.items()
}
_CONTACT_TEXT: Final = {
    "salutation": "title",
    "first_name": "givenName",
    "middle_name": "middleName",
    "last_name": "surname",
    "suffix": "generation",
    "nickname": "nickName",
    "company": "companyName",
    "job_title": "jobTitle",
    "department": "department",
    "mobile_phone": "mobilePhone",
    "website": "businessHomePage",
    "spouse_name": "spouseName",
    "body": "personalNotes",
}
_CONTACT_LISTS: Final = {
    "email1": ("emailAddresses", 0),
    "email2": ("emailAddresses", 1),
    "email3": ("emailAddresses", 2),
    "business_phone": ("businessPhones", 0),
    "business_phone2": ("businessPhones", 1),
    "home_phone": ("homePhones", 0),
}
CONTACT_FIELDS: Final = (
    *_CONTACT_TEXT,
    *_CONTACT_LISTS,
    "birthday",
    *_ADDRESS_FIELDS,
)
TASK_FIELDS: Final = ("subject", "body", "start", "due", "status", "priority")
FIELDS: Final[Mapping[ActEntity, tuple[str, ...]]] = {
    ActEntity.APPOINTMENT: APPOINTMENT_FIELDS,
    ActEntity.CONTACT: CONTACT_FIELDS,
    ActEntity.TASK: TASK_FIELDS,
}
"""The fields Graph holds, per entity."""

_SHOW_AS: Final = dict(
    zip(
        SHOW_TIME_AS_VALUES,
        ("free", "tentative", "busy", "oof", "workingElsewhere", "unknown"),
        strict=True,
    )
)
_STATUS: Final = dict(
    zip(
        TASK_STATUS_VALUES,
        ("notStarted", "inProgress", "completed", "waitingOnOthers", "deferred"),
        strict=True,
    )
)
_IMPORTANCE: Final = {v: v for v in IMPORTANCE_VALUES}
_PATTERNS: Final = {
    RecurrenceKind.DAILY: "daily",
    RecurrenceKind.WEEKLY: "weekly",
    RecurrenceKind.ABSOLUTE_MONTHLY: "absoluteMonthly",
    RecurrenceKind.ABSOLUTE_YEARLY: "absoluteYearly",
}
_WEEKDAYS: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class FieldError(ValueError):
    """A field value the adapter cannot write to Graph."""


# -- time zones and times ------------------------------------------------------------------


def iana_zone(name: str | None) -> str:
    """The IANA name of a Windows (or IANA) zone name; ``UTC`` when empty or unknown."""
    if not name or name.strip().upper() in ("UTC", "ETC/UTC", "TZONE://MICROSOFT/UTC"):
        return "UTC"
    iana = str(MS_TIMEZONE_TO_IANA_MAP.get(name, name))
    try:
        ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError):
        return "UTC"
    return "UTC" if iana in ("Etc/UTC", "Etc/GMT") else iana


def windows_zone(name: str) -> str:
    """The Windows zone name Outlook uses for an IANA name; :class:`FieldError` when there
    is none."""
    if name.upper() in ("UTC", "ETC/UTC"):
        return "UTC"
    found = IANA_TO_MS_TIMEZONE_MAP.get(name)
    if found is None:
        raise FieldError(f"time zone {name!r} has no Outlook (Windows) equivalent")
    return str(found[0])


def parse_graph_datetime(value: Any) -> datetime | None:
    """A ``dateTimeTimeZone`` (``{"dateTime", "timeZone"}``) as an aware datetime."""
    if not isinstance(value, Mapping) or not value.get("dateTime"):
        return None
    text = str(value["dateTime"]).rstrip("Z")
    if "." in text:
        head, fraction = text.split(".", 1)
        text = f"{head}.{fraction[:6]}"
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=ZoneInfo(iana_zone(value.get("timeZone"))))


def graph_datetime(value: FieldValue, name: str, zone: str) -> dict[str, str]:
    """An aware datetime as Graph's wall-clock ``dateTimeTimeZone`` in ``zone``."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise FieldError(f"{name} must be a timezone-aware datetime, not {value!r}")
    local = value.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    return {"dateTime": local.isoformat(timespec="seconds"), "timeZone": windows_zone(zone)}


def _graph_date(value: FieldValue, name: str) -> dict[str, str] | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        value = value.date()
    if not isinstance(value, date):
        raise FieldError(f"{name} must be a date, not {value!r}")
    return {"dateTime": f"{value.isoformat()}T00:00:00", "timeZone": "UTC"}


def _date_of(value: Any) -> date | None:
    moment = parse_graph_datetime(value)
    return moment.date() if moment is not None else None


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _body_text(value: Any) -> str | None:
    if not isinstance(value, Mapping):
        return None
    content = _text(value.get("content"))
    if content is not None and str(value.get("contentType", "")).lower() == "html":
        return html_to_text(content).strip() or None
    return content


def _reverse(table: Mapping[str, str], value: Any) -> str | None:
    if value is None:
        return None
    return next((k for k, v in table.items() if v.lower() == str(value).lower()), None)


def _choice(table: Mapping[str, str], name: str, value: FieldValue) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in table:
        raise FieldError(f"{name} must be one of {', '.join(table)}, not {value!r}")
    return table[value]


def _string(name: str, value: FieldValue) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise FieldError(f"{name} must be text, not {type(value).__name__}")


# -- recurrence -----------------------------------------------------------------------------


def recurrence_to_graph(recurrence: Recurrence) -> dict[str, Any]:
    """Graph's ``patternedRecurrence`` for a :class:`Recurrence`."""
    pattern: dict[str, Any] = {"type": _PATTERNS[recurrence.kind], "interval": recurrence.interval}
    if recurrence.kind is RecurrenceKind.WEEKLY:
        if not recurrence.weekdays or any(d not in range(1, 8) for d in recurrence.weekdays):
            raise FieldError(f"a weekly recurrence needs weekdays 1-7, not {recurrence.weekdays}")
        pattern["daysOfWeek"] = [_WEEKDAYS[d - 1] for d in sorted(recurrence.weekdays)]
        pattern["firstDayOfWeek"] = "monday"
    elif recurrence.kind is RecurrenceKind.ABSOLUTE_MONTHLY:
        if recurrence.day_of_month is None:
            raise FieldError("a monthly recurrence needs day_of_month")
        pattern["dayOfMonth"] = recurrence.day_of_month
    elif recurrence.kind is RecurrenceKind.ABSOLUTE_YEARLY:
        if recurrence.day_of_month is None or recurrence.month is None:
            raise FieldError("a yearly recurrence needs day_of_month and month")
        pattern.update(dayOfMonth=recurrence.day_of_month, month=recurrence.month)
    span: dict[str, Any] = {
        "startDate": recurrence.start_date.isoformat(),
        "recurrenceTimeZone": windows_zone(recurrence.time_zone),
    }
    if recurrence.count is not None:
        span.update(type="numbered", numberOfOccurrences=recurrence.count)
    elif recurrence.end_date is not None:
        span.update(type="endDate", endDate=recurrence.end_date.isoformat())
    else:
        span["type"] = "noEnd"
    return {"pattern": pattern, "range": span}


def recurrence_from_graph(value: Any, zone: str) -> Recurrence | None:
    """The :class:`Recurrence` of a ``patternedRecurrence``; ``None`` for patterns
    serversync does not model (relative monthly and yearly: "the second Tuesday")."""
    if not isinstance(value, Mapping):
        return None
    pattern = value.get("pattern") or {}
    span = value.get("range") or {}
    kind = next((k for k, v in _PATTERNS.items() if v == pattern.get("type")), None)
    if kind is None or not span.get("startDate"):
        return None
    common: dict[str, Any] = {
        "kind": kind,
        "interval": int(pattern.get("interval") or 1),
        "start_date": date.fromisoformat(str(span["startDate"])),
        "time_zone": iana_zone(span.get("recurrenceTimeZone"))
        if span.get("recurrenceTimeZone")
        else zone,
    }
    if span.get("type") == "numbered":
        common["count"] = int(span.get("numberOfOccurrences") or 0)
    elif span.get("type") == "endDate" and span.get("endDate"):
        common["end_date"] = date.fromisoformat(str(span["endDate"]))
    if kind is RecurrenceKind.WEEKLY:
        days = [str(d).lower() for d in pattern.get("daysOfWeek") or ()]
        common["weekdays"] = tuple(sorted(_WEEKDAYS.index(d) + 1 for d in days if d in _WEEKDAYS))
    if kind in (RecurrenceKind.ABSOLUTE_MONTHLY, RecurrenceKind.ABSOLUTE_YEARLY):
        common["day_of_month"] = int(pattern.get("dayOfMonth") or 1)
    if kind is RecurrenceKind.ABSOLUTE_YEARLY:
        common["month"] = int(pattern.get("month") or 1)
        common["interval"] = 1
    return Recurrence(**common)


# -- reading --------------------------------------------------------------------------------


def from_graph(entity: ActEntity, row: Mapping[str, Any]) -> dict[str, FieldValue]:
    """The field values of a Graph event, contact or task (every held field, ``None`` for
    an empty one)."""
    if entity is ActEntity.APPOINTMENT:
        return _read_event(row)
    if entity is ActEntity.CONTACT:
        return _read_contact(row)
    return _read_task(row)


def event_zone(row: Mapping[str, Any]) -> str:
    """The IANA zone an event was created in."""
    return iana_zone(row.get("originalStartTimeZone") or (row.get("start") or {}).get("timeZone"))


def _read_event(row: Mapping[str, Any]) -> dict[str, FieldValue]:
    zone = event_zone(row)
    tz = ZoneInfo(zone)
    start = parse_graph_datetime(row.get("start"))
    end = parse_graph_datetime(row.get("end"))
    location = row.get("location") or {}
    organizer = ((row.get("organizer") or {}).get("emailAddress") or {}).get("address")
    attendees = tuple(
        Attendee(address=str(address), optional=str(a.get("type", "")).lower() == "optional")
        for a in row.get("attendees") or ()
        if (address := (a.get("emailAddress") or {}).get("address"))
    )
    return {
        "subject": _text(row.get("subject")),
        "body": _body_text(row.get("body")),
        "location": _text(location.get("displayName")) if isinstance(location, Mapping) else None,
        "start": start.astimezone(tz) if start is not None else None,
        "end": end.astimezone(tz) if end is not None else None,
        "is_all_day": bool(row.get("isAllDay")),
        "time_zone": zone,
        "importance": _reverse(_IMPORTANCE, row.get("importance")),
        "show_time_as": _reverse(_SHOW_AS, row.get("showAs")),
        "attendees": attendees,
        "organizer": _text(organizer),
        "recurrence": recurrence_from_graph(row.get("recurrence"), zone),
    }


def _read_contact(row: Mapping[str, Any]) -> dict[str, FieldValue]:
    values: dict[str, FieldValue] = {
        name: _text(row.get(key)) for name, key in _CONTACT_TEXT.items()
    }
    for name, (key, index) in _CONTACT_LISTS.items():
        entries = list(row.get(key) or ())
        entry = entries[index] if index < len(entries) else None
        if isinstance(entry, Mapping):
            entry = entry.get("address")
        values[name] = _text(entry)
    for name, (kind, key) in _ADDRESS_FIELDS.items():
        address = row.get(kind) or {}
        values[name] = _text(address.get(key)) if isinstance(address, Mapping) else None
    birthday = row.get("birthday")
    values["birthday"] = date.fromisoformat(str(birthday)[:10]) if birthday else None
    return values


def _read_task(row: Mapping[str, Any]) -> dict[str, FieldValue]:
    return {
        "subject": _text(row.get("title")),
        "body": _body_text(row.get("body")),
        "start": _date_of(row.get("startDateTime")),
        "due": _date_of(row.get("dueDateTime")),
        "status": _reverse(_STATUS, row.get("status")),
        "priority": _reverse(_IMPORTANCE, row.get("importance")),
    }


# -- writing --------------------------------------------------------------------------------


def to_graph(
    entity: ActEntity, fields: FieldValues, current: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The Graph JSON that writes ``fields``; ``current`` is the item as read, for the
    values that live in lists and objects (e-mail addresses, phones, addresses) and for an
    appointment's zone. Unknown fields raise :class:`FieldError`."""
    unknown = set(fields) - set(FIELDS[entity])
    if unknown:
        raise FieldError(f"Graph holds no {entity} field {', '.join(sorted(unknown))}")
    if entity is ActEntity.APPOINTMENT:
        return _write_event(fields, current or {})
    if entity is ActEntity.CONTACT:
        return _write_contact(fields, current or {})
    return _write_task(fields)


def _write_event(fields: FieldValues, current: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    zone = fields.get("time_zone") or (event_zone(current) if current else "UTC")
    if not isinstance(zone, str):
        raise FieldError(f"time_zone must be an IANA name, not {zone!r}")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise FieldError(f"unknown time zone {zone!r}") from exc
    if "subject" in fields:
        out["subject"] = _string("subject", fields["subject"]) or ""
    if "body" in fields:
        out["body"] = {"contentType": "text", "content": _string("body", fields["body"]) or ""}
    if "location" in fields:
        out["location"] = {"displayName": _string("location", fields["location"]) or ""}
    moved = {"start", "end", "time_zone"} & set(fields)
    if moved:
        for name in ("start", "end"):
            value = fields.get(name)
            if value is None and current:
                value = parse_graph_datetime(current.get(name))
            if value is None:
                raise FieldError(f"an appointment needs {name}")
            out[name] = graph_datetime(value, name, zone)
    if "is_all_day" in fields:
        out["isAllDay"] = bool(fields["is_all_day"])
    if "importance" in fields:
        table = _IMPORTANCE
        out["importance"] = _choice(table, "importance", fields["importance"]) or "normal"
    if "show_time_as" in fields:
        out["showAs"] = _choice(_SHOW_AS, "show_time_as", fields["show_time_as"]) or "busy"
    if "attendees" in fields:
        attendees = fields["attendees"] or ()
        if not isinstance(attendees, tuple) or not all(isinstance(a, Attendee) for a in attendees):
            raise FieldError("attendees must be a tuple of Attendee")
        out["attendees"] = [
            {
                "emailAddress": {"address": a.address},
                "type": "optional" if a.optional else "required",
            }
            for a in attendees
        ]
    if "recurrence" in fields:
        recurrence = fields["recurrence"]
        if recurrence is not None and not isinstance(recurrence, Recurrence):
            raise FieldError("recurrence must be a Recurrence")
        out["recurrence"] = recurrence_to_graph(recurrence) if recurrence else None
    # organizer is read only: Exchange makes the mailbox owner the organizer.
    return out


def _write_contact(fields: FieldValues, current: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, key in _CONTACT_TEXT.items():
        if name in fields:
            out[key] = _string(name, fields[name])
    lists: dict[str, list[Any]] = {}
    for name, (key, index) in _CONTACT_LISTS.items():
        if name not in fields:
            continue
        if key not in lists:
            lists[key] = [
                (e.get("address") if isinstance(e, Mapping) else e) or ""
                for e in current.get(key) or ()
            ]
        entries = lists[key]
        while len(entries) <= index:
            entries.append("")
        entries[index] = _string(name, fields[name]) or ""
    for key, entries in lists.items():
        while entries and not entries[-1]:
            entries.pop()
        if key == "emailAddresses":
            out[key] = [{"address": e, "name": e} for e in entries]
        else:
            out[key] = entries
    for name, (kind, key) in _ADDRESS_FIELDS.items():
        if name in fields:
            address = out.setdefault(kind, dict(current.get(kind) or {}))
            address[key] = _string(name, fields[name])
    if "birthday" in fields:
        birthday = fields["birthday"]
        if birthday is not None and not isinstance(birthday, date):
            raise FieldError(f"birthday must be a date, not {birthday!r}")
        day = birthday.date() if isinstance(birthday, datetime) else birthday
        out["birthday"] = f"{day.isoformat()}T00:00:00Z" if day is not None else None
    return out


def _write_task(fields: FieldValues) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "subject" in fields:
        out["title"] = _string("subject", fields["subject"]) or ""
    if "body" in fields:
        out["body"] = {"contentType": "text", "content": _string("body", fields["body"]) or ""}
    if "start" in fields:
        out["startDateTime"] = _graph_date(fields["start"], "start")
    if "due" in fields:
        out["dueDateTime"] = _graph_date(fields["due"], "due")
    if "status" in fields:
        out["status"] = _choice(_STATUS, "status", fields["status"]) or "notStarted"
    if "priority" in fields:
        table = _IMPORTANCE
        out["importance"] = _choice(table, "priority", fields["priority"]) or "normal"
    return out


def utc(moment: datetime) -> str:
    """``moment`` as Graph's UTC query form (``2030-03-04T09:00:00Z``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
