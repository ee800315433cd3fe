"""serversync's ACT field values to exchangelib items and back.

Field names and values are those of :data:`serversync.act.FIELDS`. One table per entity
names the fields Exchange holds (:data:`APPOINTMENT_FIELDS`, :data:`CONTACT_FIELDS`,
:data:`TASK_FIELDS`); the session advertises them (``held_fields``) so that the engine
never sends the others, and a field outside its entity's table is refused on writes and
never returned on reads. Not held: an appointment's ``regarding`` (a CRM concept; Exchange
has no property for it) and a contact's ``salutation`` (EWS exposes the title only inside
the read-only CompleteName).

Values: text fields are ``str`` (a body is plain text); ``start``/``end`` of an appointment
are timezone-aware datetimes in the appointment's ``time_zone`` (an IANA name); a task's
``start``/``due`` and a contact's ``birthday``/``anniversary`` are dates; the choice fields
use the lower-case names of :mod:`serversync.act.fields`; ``attendees`` is a tuple of
:class:`~serversync.model.act.Attendee`; ``recurrence`` a
:class:`~serversync.model.act.Recurrence`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from exchangelib import Attendee as EwsAttendee  # type: ignore[import-untyped]
from exchangelib import (
    CalendarItem,
    Contact,
    EWSDate,
    EWSDateTime,
    EWSTimeZone,
    Task,
)
from exchangelib.errors import UnknownTimeZone  # type: ignore[import-untyped]
from exchangelib.indexed_properties import (  # type: ignore[import-untyped]
    EmailAddress,
    PhoneNumber,
    PhysicalAddress,
)
from exchangelib.properties import Body, HTMLBody  # type: ignore[import-untyped]
from exchangelib.properties import Mailbox as EwsMailbox
from exchangelib.recurrence import (  # type: ignore[import-untyped]
    AbsoluteMonthlyPattern,
    AbsoluteYearlyPattern,
    DailyPattern,
    EndDatePattern,
    NoEndPattern,
    NumberedPattern,
    WeeklyPattern,
)
from exchangelib.recurrence import Recurrence as EwsRecurrence

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
    "APPOINTMENT_FIELDS",
    "CONTACT_FIELDS",
    "FIELDS",
    "IMPORTANCE",
    "ITEM_CLASS",
    "SHOW_TIME_AS",
    "TASK_FIELDS",
    "TASK_STATUS",
    "FieldError",
    "apply_fields",
    "iana_name",
    "occurrence_index",
    "read_fields",
    "read_only_fields",
    "time_zone",
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
"""Appointment fields, as calendar items carry them. ``organizer`` is read only (Exchange
makes the mailbox owner the organizer of what it creates)."""
_ADDRESS_LABELS: Final = {
    "business_address": "Business",
    "home_address": "Home",
    "other_address": "Other",
}
_ADDRESS_PARTS: Final = {
    "street": "street",
    "city": "city",
    "state": "state",
    "postal_code": "zipcode",
    "country": "country",
}
_ADDRESS_FIELDS: Final = {
    f"{prefix}_{part}": (label, attr)
    for prefix, label in _ADDRESS_LABELS.items()
    for part, attr in _ADDRESS_PARTS.items()
}
CONTACT_FIELDS: Final = (
    "first_name",
    "middle_name",
    "last_name",
    "suffix",
    "nickname",
    "company",
    "job_title",
    "department",
    "email1",
    "email2",
    "email3",
    "business_phone",
    "business_phone2",
    "home_phone",
    "mobile_phone",
    "fax",
    "website",
    "birthday",
    "anniversary",
    "spouse_name",
    *_ADDRESS_FIELDS,
    "body",
)
"""Contact fields; ``body`` is the contact's notes, ``suffix`` its generation, ``fax`` the
business fax, ``website`` the business home page."""
TASK_FIELDS: Final = ("subject", "body", "start", "due", "status", "priority", "percent_complete")
"""Task fields; ``start`` and ``due`` are dates, ``priority`` is the task's importance."""
FIELDS: Final[Mapping[ActEntity, tuple[str, ...]]] = {
    ActEntity.APPOINTMENT: APPOINTMENT_FIELDS,
    ActEntity.CONTACT: CONTACT_FIELDS,
    ActEntity.TASK: TASK_FIELDS,
}
_READ_ONLY: Final[Mapping[ActEntity, frozenset[str]]] = {
    ActEntity.APPOINTMENT: frozenset({"organizer"}),
    ActEntity.CONTACT: frozenset(),
    ActEntity.TASK: frozenset(),
}
ITEM_CLASS: Final[Mapping[ActEntity, Any]] = {
    ActEntity.APPOINTMENT: CalendarItem,
    ActEntity.CONTACT: Contact,
    ActEntity.TASK: Task,
}

IMPORTANCE: Final = dict(zip(IMPORTANCE_VALUES, ("Low", "Normal", "High"), strict=True))
"""``importance`` (appointments) and ``priority`` (tasks) values to EWS Importance."""
SHOW_TIME_AS: Final = dict(
    zip(
        SHOW_TIME_AS_VALUES,
        ("Free", "Tentative", "Busy", "OOF", "WorkingElsewhere", "NoData"),
        strict=True,
    )
)
"""``show_time_as`` values to EWS LegacyFreeBusyStatus."""
TASK_STATUS: Final = dict(
    zip(
        TASK_STATUS_VALUES,
        ("NotStarted", "InProgress", "Completed", "WaitingOnOthers", "Deferred"),
        strict=True,
    )
)
"""Task ``status`` values to EWS task Status."""

_EMAIL_LABELS: Final = {
    "email1": "EmailAddress1",
    "email2": "EmailAddress2",
    "email3": "EmailAddress3",
}
_PHONE_LABELS: Final = {
    "business_phone": "BusinessPhone",
    "business_phone2": "BusinessPhone2",
    "home_phone": "HomePhone",
    "mobile_phone": "MobilePhone",
    "fax": "BusinessFax",
}
_CONTACT_DATES: Final = {"birthday": "birthday", "anniversary": "wedding_anniversary"}
_SIMPLE: Final[Mapping[ActEntity, Mapping[str, str]]] = {
    ActEntity.APPOINTMENT: {"subject": "subject", "location": "location"},
    ActEntity.CONTACT: {
        "first_name": "given_name",
        "middle_name": "middle_name",
        "last_name": "surname",
        "suffix": "generation",
        "nickname": "nickname",
        "company": "company_name",
        "job_title": "job_title",
        "department": "department",
        "website": "business_homepage",
        "spouse_name": "spouse_name",
    },
    ActEntity.TASK: {"subject": "subject"},
}
_RECURRENCE_FIELDS: Final = (
    "type",
    "recurrence",
    "original_start",
    "modified_occurrences",
    "deleted_occurrences",
    "_start_timezone",
    "_end_timezone",
)
_ONLY_FIELDS: Final[Mapping[ActEntity, tuple[str, ...]]] = {
    ActEntity.APPOINTMENT: (
        "subject",
        "body",
        "location",
        "start",
        "end",
        "is_all_day",
        "importance",
        "required_attendees",
        "optional_attendees",
        "organizer",
        "legacy_free_busy_status",
        "last_modified_time",
        *_RECURRENCE_FIELDS,
    ),
    ActEntity.CONTACT: (
        "given_name",
        "surname",
        "middle_name",
        "generation",
        "nickname",
        "company_name",
        "job_title",
        "department",
        "business_homepage",
        "spouse_name",
        "birthday",
        "wedding_anniversary",
        "email_addresses",
        "phone_numbers",
        "physical_addresses",
        "body",
        "display_name",
        "last_modified_time",
    ),
    ActEntity.TASK: (
        "subject",
        "body",
        "start_date",
        "due_date",
        "status",
        "importance",
        "percent_complete",
        "last_modified_time",
    ),
}
_WEEKDAYS: Final = range(1, 8)
_NAMING: Final = frozenset({"first_name", "last_name", "company", "email1"})


class FieldError(ValueError):
    """A field value the adapter cannot write to Exchange."""


def read_only_fields(entity: ActEntity) -> tuple[str, ...]:
    """The exchangelib field names GetItem asks for, for ``entity``."""
    return _ONLY_FIELDS[entity]


# -- time zones --------------------------------------------------------------------------------


def iana_name(zone: Any) -> str:
    """The IANA name of an exchangelib time zone read from Exchange.

    Exchange stores Windows zone ids; exchangelib maps each to CLDR's primary IANA zone
    (``W. Europe Standard Time`` is ``Europe/Berlin`` whether it was written as Berlin or
    Vienna). Windows ``UTC`` becomes ``UTC``, not ``Etc/UTC``.
    """
    key = str(getattr(zone, "key", "UTC"))
    return "UTC" if key in ("Etc/UTC", "Etc/GMT", "UTC") else key


def time_zone(name: str) -> Any:
    """The exchangelib time zone for an IANA name; :class:`FieldError` when Exchange has no
    Windows zone for it."""
    try:
        return EWSTimeZone(name)
    except (UnknownTimeZone, ZoneInfoNotFoundError, ValueError) as exc:
        raise FieldError(f"time zone {name!r} has no Exchange (Windows) equivalent") from exc


def _aware(value: Any, zone: str) -> datetime:
    """A plain datetime in ``zone`` from an exchangelib date or datetime."""
    tz = ZoneInfo(zone)
    if isinstance(value, datetime):
        return datetime.fromtimestamp(value.timestamp(), tz=tz)
    return datetime.combine(date(value.year, value.month, value.day), time(0), tzinfo=tz)


def _ews_datetime(value: FieldValue, name: str, zone: Any) -> Any:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise FieldError(f"{name} must be a timezone-aware datetime, not {value!r}")
    return EWSDateTime.from_datetime(value.astimezone(UTC)).astimezone(zone)


def _plain_date(value: Any) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        value = value.date()
    return date(value.year, value.month, value.day)


# -- recurrence --------------------------------------------------------------------------------


def recurrence_to_ews(recurrence: Recurrence) -> Any:
    """exchangelib's recurrence for a :class:`Recurrence`."""
    kind = recurrence.kind
    if kind is RecurrenceKind.DAILY:
        pattern = DailyPattern(interval=recurrence.interval)
    elif kind is RecurrenceKind.WEEKLY:
        if not recurrence.weekdays or any(d not in _WEEKDAYS for d in recurrence.weekdays):
            raise FieldError(f"a weekly recurrence needs weekdays 1-7, not {recurrence.weekdays}")
        pattern = WeeklyPattern(interval=recurrence.interval, weekdays=list(recurrence.weekdays))
    elif kind is RecurrenceKind.ABSOLUTE_MONTHLY:
        if recurrence.day_of_month is None:
            raise FieldError("a monthly recurrence needs day_of_month")
        pattern = AbsoluteMonthlyPattern(
            interval=recurrence.interval, day_of_month=recurrence.day_of_month
        )
    else:
        if recurrence.day_of_month is None or recurrence.month is None:
            raise FieldError("a yearly recurrence needs day_of_month and month")
        pattern = AbsoluteYearlyPattern(
            day_of_month=recurrence.day_of_month, month=recurrence.month
        )
    start = EWSDate.from_date(recurrence.start_date)
    if recurrence.count is not None:
        boundary = NumberedPattern(start=start, number=recurrence.count)
    elif recurrence.end_date is not None:
        boundary = EndDatePattern(start=start, end=EWSDate.from_date(recurrence.end_date))
    else:
        boundary = NoEndPattern(start=start)
    return EwsRecurrence(pattern=pattern, boundary=boundary)


def recurrence_from_ews(value: Any, zone: str) -> Recurrence | None:
    """The :class:`Recurrence` of exchangelib's; ``None`` for patterns serversync does not
    model (relative monthly and yearly: "the second Tuesday")."""
    pattern, boundary = value.pattern, value.boundary
    common: dict[str, Any] = {"start_date": _plain_date(boundary.start), "time_zone": zone}
    if isinstance(boundary, NumberedPattern):
        common["count"] = boundary.number
    elif isinstance(boundary, EndDatePattern):
        common["end_date"] = _plain_date(boundary.end)
    if isinstance(pattern, DailyPattern):
        return Recurrence(kind=RecurrenceKind.DAILY, interval=pattern.interval, **common)
    if isinstance(pattern, WeeklyPattern):
        days = pattern.weekdays
        weekdays = tuple(sorted(int(d) for d in (days if isinstance(days, list) else [days])))
        return Recurrence(
            kind=RecurrenceKind.WEEKLY, interval=pattern.interval, weekdays=weekdays, **common
        )
    if isinstance(pattern, AbsoluteMonthlyPattern):
        return Recurrence(
            kind=RecurrenceKind.ABSOLUTE_MONTHLY,
            interval=pattern.interval,
            day_of_month=pattern.day_of_month,
            **common,
        )
    if isinstance(pattern, AbsoluteYearlyPattern):
        return Recurrence(
            kind=RecurrenceKind.ABSOLUTE_YEARLY,
            day_of_month=pattern.day_of_month,
            month=int(pattern.month),
            **common,
        )
    return None


def _pattern_dates(recurrence: Recurrence) -> Any:
    """The dates the pattern gives from ``start_date`` on, in order, without the range end."""
    first = recurrence.start_date
    step = recurrence.interval
    if recurrence.kind is RecurrenceKind.DAILY:
        day = first
        while True:
            yield day
            day += timedelta(days=step)
    if recurrence.kind is RecurrenceKind.WEEKLY:
        week = first - timedelta(days=first.isoweekday() - 1)
        while True:
            for weekday in sorted(recurrence.weekdays):
                day = week + timedelta(days=weekday - 1)
                if day >= first:
                    yield day
            week += timedelta(weeks=step)
    months = step if recurrence.kind is RecurrenceKind.ABSOLUTE_MONTHLY else 12
    year, month = first.year, first.month if recurrence.month is None else recurrence.month
    while True:
        assert recurrence.day_of_month is not None
        # A day the month lacks (the 31st in April) falls on its last day, as in Exchange.
        for day_of_month in range(recurrence.day_of_month, 0, -1):
            try:
                day = date(year, month, day_of_month)
            except ValueError:
                continue
            if day >= first:
                yield day
            break
        month += months
        year, month = year + (month - 1) // 12, (month - 1) % 12 + 1


def occurrence_index(recurrence: Recurrence, original_start: datetime) -> int | None:
    """The 1-based InstanceIndex of the occurrence of ``recurrence`` that starts (or started,
    before it was moved) at ``original_start``; ``None`` when the series has no occurrence
    on that day. Occurrences are counted by their date in the series' time zone."""
    wanted = original_start.astimezone(ZoneInfo(recurrence.time_zone)).date()
    for index, day in enumerate(_pattern_dates(recurrence), start=1):
        if day > wanted or (recurrence.count is not None and index > recurrence.count):
            return None
        if recurrence.end_date is not None and day > recurrence.end_date:
            return None
        if day == wanted:
            return index
    return None  # pragma: no cover - the generators never end


# -- reading -----------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return str(value) or None if value is not None else None


def _body(value: Any) -> str | None:
    # Outlook writes HTML bodies; the CRM field is text.
    if isinstance(value, HTMLBody):
        return html_to_text(str(value)).strip() or None
    return _text(value)


def _by_label(entries: Any) -> dict[str, Any]:
    return {e.label: e for e in entries or ()}


def _reverse(table: Mapping[str, str], value: Any) -> str | None:
    if value is None:
        return None
    return next((k for k, v in table.items() if v == value), str(value).lower())


def read_fields(entity: ActEntity, item: Any) -> dict[str, FieldValue]:
    """The field values of an exchangelib item (every field of the entity, ``None`` for an
    empty one)."""
    if entity is ActEntity.APPOINTMENT:
        return _read_appointment(item)
    if entity is ActEntity.CONTACT:
        return _read_contact(item)
    return _read_task(item)


def _read_appointment(item: Any) -> dict[str, FieldValue]:
    zone = iana_name(item._start_timezone) if item._start_timezone is not None else "UTC"
    values: dict[str, FieldValue] = {
        "subject": _text(item.subject),
        "body": _body(item.body),
        "location": _text(item.location),
        "is_all_day": bool(item.is_all_day),
        "time_zone": zone,
        "importance": _reverse(IMPORTANCE, item.importance),
        "show_time_as": _reverse(SHOW_TIME_AS, item.legacy_free_busy_status),
        "organizer": item.organizer.email_address if item.organizer is not None else None,
    }
    start, end = item.start, item.end
    if item.is_all_day and not isinstance(end, datetime) and end is not None:
        # exchangelib gives an all-day event's end as its last day; serversync keeps the
        # midnight after it, as Exchange stores it.
        end = end + timedelta(days=1)
    values["start"] = _aware(start, zone) if start is not None else None
    values["end"] = _aware(end, zone) if end is not None else None
    attendees = [Attendee(address=a.mailbox.email_address) for a in item.required_attendees or ()]
    attendees += [
        Attendee(address=a.mailbox.email_address, optional=True)
        for a in item.optional_attendees or ()
    ]
    values["attendees"] = tuple(a for a in attendees if a.address)
    recurrence = item.recurrence
    values["recurrence"] = recurrence_from_ews(recurrence, zone) if recurrence else None
    return values


def _read_contact(item: Any) -> dict[str, FieldValue]:
    values: dict[str, FieldValue] = {
        name: _text(getattr(item, attr)) for name, attr in _SIMPLE[ActEntity.CONTACT].items()
    }
    emails = _by_label(item.email_addresses)
    for name, label in _EMAIL_LABELS.items():
        values[name] = _text(emails[label].email) if label in emails else None
    phones = _by_label(item.phone_numbers)
    for name, label in _PHONE_LABELS.items():
        values[name] = _text(phones[label].phone_number) if label in phones else None
    addresses = _by_label(item.physical_addresses)
    for name, (label, part) in _ADDRESS_FIELDS.items():
        address = addresses.get(label)
        values[name] = _text(getattr(address, part)) if address is not None else None
    for name, attr in _CONTACT_DATES.items():
        values[name] = _plain_date(getattr(item, attr))
    values["body"] = _body(item.body)
    return values


def _read_task(item: Any) -> dict[str, FieldValue]:
    percent = item.percent_complete
    return {
        "subject": _text(item.subject),
        "body": _body(item.body),
        "start": _plain_date(item.start_date),
        "due": _plain_date(item.due_date),
        "status": _reverse(TASK_STATUS, item.status),
        "priority": _reverse(IMPORTANCE, item.importance),
        "percent_complete": int(percent) if percent is not None else None,
    }


# -- writing -----------------------------------------------------------------------------------


def _choice(table: Mapping[str, str], name: str, value: FieldValue) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in table:
        raise FieldError(f"{name} must be one of {', '.join(table)}, not {value!r}")
    return table[value]


def _string(name: str, value: FieldValue) -> str | None:
    if value is not None and not isinstance(value, str):
        raise FieldError(f"{name} must be text, not {value!r}")
    return value or None


def apply_fields(entity: ActEntity, item: Any, fields: FieldValues) -> list[str]:
    """Set ``fields`` on an exchangelib item; the exchangelib field names that changed.

    Raises :class:`FieldError` for a field the entity does not have, a read-only one, or a
    value Exchange cannot take.
    """
    allowed = FIELDS[entity]
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise FieldError(f"{entity} has no field {', '.join(unknown)} over EWS")
    fields = {k: v for k, v in fields.items() if k not in _READ_ONLY[entity]}
    writer: Callable[[Any, FieldValues], list[str]] = {
        ActEntity.APPOINTMENT: _write_appointment,
        ActEntity.CONTACT: _write_contact,
        ActEntity.TASK: _write_task,
    }[entity]
    return writer(item, fields)


def _write_simple(entity: ActEntity, item: Any, fields: FieldValues) -> list[str]:
    changed = []
    for name, attr in _SIMPLE[entity].items():
        if name in fields:
            setattr(item, attr, _string(name, fields[name]))
            changed.append(attr)
    return changed


def _write_body(item: Any, name: str, fields: FieldValues) -> list[str]:
    if name not in fields:
        return []
    text = _string(name, fields[name])
    item.body = Body(text) if text is not None else None
    return ["body"]


def _write_appointment(item: Any, fields: FieldValues) -> list[str]:
    changed = _write_simple(ActEntity.APPOINTMENT, item, fields)
    changed += _write_body(item, "body", fields)
    zone_name = fields.get("time_zone")
    if zone_name is not None and not isinstance(zone_name, str):
        raise FieldError(f"time_zone must be an IANA name, not {zone_name!r}")
    if zone_name is None and "time_zone" not in fields:
        zone_name = iana_name(item._start_timezone) if item._start_timezone else None
    if zone_name is None:
        start = fields.get("start")
        key = getattr(start.tzinfo, "key", None) if isinstance(start, datetime) else None
        zone_name = key if isinstance(key, str) else "UTC"
    zone = time_zone(zone_name)
    if "time_zone" in fields or "start" in fields or "end" in fields:
        item._start_timezone = zone
        item._end_timezone = zone
        for name in ("start", "end"):
            value = fields.get(name, getattr(item, name))
            if value is None:
                raise FieldError(f"an appointment needs {name}")
            if not isinstance(value, datetime):
                value = _aware(value, zone_name)
            setattr(item, name, _ews_datetime(value, name, zone))
        changed += ["start", "end"]
    if "is_all_day" in fields:
        item.is_all_day = bool(fields["is_all_day"])
        changed.append("is_all_day")
    if "importance" in fields:
        item.importance = _choice(IMPORTANCE, "importance", fields["importance"]) or "Normal"
        changed.append("importance")
    if "show_time_as" in fields:
        status = _choice(SHOW_TIME_AS, "show_time_as", fields["show_time_as"])
        item.legacy_free_busy_status = status or "Busy"
        changed.append("legacy_free_busy_status")
    if "attendees" in fields:
        attendees = fields["attendees"] or ()
        if not isinstance(attendees, tuple) or not all(isinstance(a, Attendee) for a in attendees):
            raise FieldError("attendees must be a tuple of Attendee")
        required = [a for a in attendees if not a.optional]
        optional = [a for a in attendees if a.optional]
        item.required_attendees = [_attendee(a) for a in required] or None
        item.optional_attendees = [_attendee(a) for a in optional] or None
        changed += ["required_attendees", "optional_attendees"]
    if "recurrence" in fields:
        recurrence = fields["recurrence"]
        if recurrence is not None and not isinstance(recurrence, Recurrence):
            raise FieldError(f"recurrence must be a Recurrence, not {recurrence!r}")
        item.recurrence = recurrence_to_ews(recurrence) if recurrence is not None else None
        changed.append("recurrence")
    return changed


def _attendee(attendee: Attendee) -> Any:
    return EwsAttendee(mailbox=EwsMailbox(email_address=attendee.address))


def _write_contact(item: Any, fields: FieldValues) -> list[str]:
    changed = _write_simple(ActEntity.CONTACT, item, fields)
    changed += _write_body(item, "body", fields)
    if any(name in fields for name in _EMAIL_LABELS):
        emails = _by_label(item.email_addresses)
        for name, label in _EMAIL_LABELS.items():
            if name in fields:
                address = _string(name, fields[name])
                emails.pop(label, None)
                if address:
                    emails[label] = EmailAddress(email=address, label=label)
        item.email_addresses = [emails[k] for k in sorted(emails)] or None
        changed.append("email_addresses")
    if any(name in fields for name in _PHONE_LABELS):
        phones = _by_label(item.phone_numbers)
        for name, label in _PHONE_LABELS.items():
            if name in fields:
                number = _string(name, fields[name])
                phones.pop(label, None)
                if number:
                    phones[label] = PhoneNumber(label=label, phone_number=number)
        item.phone_numbers = [phones[k] for k in sorted(phones)] or None
        changed.append("phone_numbers")
    if any(name in fields for name in _ADDRESS_FIELDS):
        addresses = _by_label(item.physical_addresses)
        for name, (label, part) in _ADDRESS_FIELDS.items():
            if name in fields:
                address = addresses.get(label) or PhysicalAddress(label=label)
                setattr(address, part, _string(name, fields[name]))
                addresses[label] = address
        for label in list(addresses):
            if not any(getattr(addresses[label], part) for part in _ADDRESS_PARTS.values()):
                del addresses[label]
        item.physical_addresses = [addresses[k] for k in sorted(addresses)] or None
        changed.append("physical_addresses")
    for name, attr in _CONTACT_DATES.items():
        if name in fields:
            setattr(item, attr, _ews_date(name, fields[name]))
            changed.append(attr)
    if not item.display_name or _NAMING.intersection(fields):
        # Exchange requires a display name; Outlook's default is "First Last". One set in
        # Outlook stays until a field it is made of changes.
        emails = _by_label(item.email_addresses)
        first = emails.get("EmailAddress1")
        item.display_name = (
            " ".join(p for p in (item.given_name, item.surname) if p)
            or item.company_name
            or (first.email if first is not None else None)
            or item.display_name
            or "(no name)"
        )
        changed.append("display_name")
    return changed


def _ews_date(name: str, value: FieldValue) -> Any:
    if isinstance(value, datetime):
        value = value.date()
    if value is not None and not isinstance(value, date):
        raise FieldError(f"{name} must be a date, not {value!r}")
    return EWSDate.from_date(value) if value is not None else None


def _write_task(item: Any, fields: FieldValues) -> list[str]:
    changed = _write_simple(ActEntity.TASK, item, fields)
    changed += _write_body(item, "body", fields)
    for name, attr in (("start", "start_date"), ("due", "due_date")):
        if name in fields:
            setattr(item, attr, _ews_date(name, fields[name]))
            changed.append(attr)
    if "status" in fields:
        item.status = _choice(TASK_STATUS, "status", fields["status"]) or "NotStarted"
        changed.append("status")
    if "priority" in fields:
        item.importance = _choice(IMPORTANCE, "priority", fields["priority"]) or "Normal"
        changed.append("importance")
    if "percent_complete" in fields:
        percent = fields["percent_complete"]
        if percent is not None and (
            isinstance(percent, bool)
            or not isinstance(percent, int | float)
            or not 0 <= percent <= 100
        ):
            raise FieldError(f"percent_complete must be 0-100, not {percent!r}")
        item.percent_complete = Decimal(str(percent or 0))
        changed.append("percent_complete")
    return changed
