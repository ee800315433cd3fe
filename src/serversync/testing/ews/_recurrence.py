"""Occurrences of a recurring calendar item, as Exchange expands them.

A master's ``t:Recurrence`` holds a pattern (daily, weekly, absolute monthly, absolute
yearly) and a range (no end, an end date, a number of occurrences). Occurrences happen on the
pattern's dates at the master's wall-clock start time in its start time zone, so that a
09:00 Europe/Berlin series stays at 09:00 local time across daylight-saving changes.
Occurrence *n* is the n-th pattern date from the range's start date (InstanceIndex), deleted
occurrences included. Relative patterns ("the second Tuesday") are not expanded.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# CLDR's table of Windows time zone ids, as the exchangelib package ships it: Exchange names
# zones by Windows id, and the server needs the rules behind each one.
from exchangelib.winzone import MS_TIMEZONE_TO_IANA_MAP  # type: ignore[import-untyped]

from serversync.testing.ews._xml import EwsError, T, local_name, parse_datetime, qname, text_of

__all__ = ["Occurrence", "occurrence", "occurrences", "series_zone"]

_WEEKDAYS: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS: Final = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
# Expanding a series without an end stops here, as a client's index never gets near it.
_MAX_OCCURRENCES: Final = 10_000

Occurrence = tuple[datetime, datetime]
"""An occurrence's start and end, in UTC."""


def series_zone(props: dict[str, ET.Element]) -> ZoneInfo:
    """The zone a series repeats in: its StartTimeZone (a Windows id, or an IANA name some
    clients send), UTC when it has none."""
    elem = props.get("StartTimeZone")
    if elem is None:
        elem = props.get("MeetingTimeZone")
    zone_id = (elem.get("Id") or elem.get("TimeZoneName") or "") if elem is not None else ""
    name = MS_TIMEZONE_TO_IANA_MAP.get(zone_id, zone_id) or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise EwsError(
            "ErrorTimeZone", f"The time zone {zone_id!r} is not known to the server."
        ) from None


def _date(elem: ET.Element | None, name: str) -> date:
    found = elem.find(qname(T, name)) if elem is not None else None
    text = text_of(found)[:10]
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise EwsError("ErrorInvalidRecurrence", f"{name} {text!r} is not a date.") from None


def _int(elem: ET.Element, name: str, default: int | None = None) -> int:
    text = text_of(elem.find(qname(T, name)))
    if not text and default is not None:
        return default
    try:
        return int(text)
    except ValueError:
        raise EwsError("ErrorInvalidRecurrence", f"{name} {text!r} is not a number.") from None


def _pattern_dates(pattern: ET.Element, first: date) -> Iterator[date]:
    kind = local_name(pattern.tag)
    if kind == "DailyRecurrence":
        step = _int(pattern, "Interval", 1)
        day = first
        while True:
            yield day
            day += timedelta(days=step)
    elif kind == "WeeklyRecurrence":
        step = _int(pattern, "Interval", 1)
        names = text_of(pattern.find(qname(T, "DaysOfWeek"))).split()
        weekdays = sorted({_WEEKDAYS.index(n) for n in names if n in _WEEKDAYS})
        if not weekdays:
            raise EwsError("ErrorInvalidRecurrence", "A weekly pattern needs DaysOfWeek.")
        week = first - timedelta(days=first.weekday())
        while True:
            for weekday in weekdays:
                day = week + timedelta(days=weekday)
                if day >= first:
                    yield day
            week += timedelta(weeks=step)
    elif kind in ("AbsoluteMonthlyRecurrence", "AbsoluteYearlyRecurrence"):
        monthly = kind == "AbsoluteMonthlyRecurrence"
        step = _int(pattern, "Interval", 1) if monthly else 12
        day_of_month = _int(pattern, "DayOfMonth")
        month_name = text_of(pattern.find(qname(T, "Month")))
        if not monthly and month_name not in _MONTHS:
            raise EwsError("ErrorInvalidRecurrence", f"{month_name!r} is not a month.")
        year = first.year
        month = first.month if monthly else _MONTHS.index(month_name) + 1
        while True:
            # A day the month lacks (the 31st in April) is its last day.
            for candidate in range(day_of_month, 0, -1):
                try:
                    day = date(year, month, candidate)
                except ValueError:
                    continue
                if day >= first:
                    yield day
                break
            month += step
            year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    else:
        raise EwsError(
            "ErrorInvalidRecurrence", f"The EWS test server does not expand {kind} patterns."
        )


def _dates(recurrence: ET.Element) -> Iterator[date]:
    """The occurrence dates of a ``t:Recurrence``, in order."""
    parts = [c for c in recurrence if local_name(c.tag).endswith("Recurrence")]
    if len(parts) != 2:
        raise EwsError("ErrorInvalidRecurrence", "A recurrence needs a pattern and a range.")
    pattern, limit = parts
    kind = local_name(limit.tag)
    first = _date(limit, "StartDate")
    end = _date(limit, "EndDate") if kind == "EndDateRecurrence" else None
    count = _int(limit, "NumberOfOccurrences") if kind == "NumberedRecurrence" else None
    for index, day in enumerate(_pattern_dates(pattern, first), start=1):
        if index > (count or _MAX_OCCURRENCES) or (end is not None and day > end):
            return
        yield day


def occurrences(props: dict[str, ET.Element]) -> Iterator[tuple[int, Occurrence]]:
    """The occurrences of the series with ``props``, with their 1-based indexes, in order
    (deleted ones included)."""
    recurrence = props.get("Recurrence")
    start = parse_datetime(text_of(props.get("Start")))
    end = parse_datetime(text_of(props.get("End")))
    if recurrence is None or start is None or end is None:
        return
    zone = series_zone(props)
    local = start.astimezone(zone)
    for index, day in enumerate(_dates(recurrence), start=1):
        begins = datetime.combine(day, local.time(), tzinfo=zone).astimezone(UTC)
        yield index, (begins, begins + (end - start))


def occurrence(props: dict[str, ET.Element], index: int) -> Occurrence | None:
    """Occurrence ``index`` (1-based) of the series with ``props``, or None when the series
    has fewer."""
    if index < 1:
        return None
    return next((when for n, when in occurrences(props) if n == index), None)
