"""Recurring calendar items through exchangelib: occurrences by index, with ids of their
own and wall-clock times that survive DST; exceptions and deleted occurrences on the master;
the master's change key and sync entry standing for the whole series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from exchangelib import (  # type: ignore[import-untyped]
    CalendarItem,
    EWSDate,
    EWSDateTime,
    EWSTimeZone,
)
from exchangelib.errors import (  # type: ignore[import-untyped]
    ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange,
    ErrorCalendarOccurrenceIsDeletedFromRecurrence,
)
from exchangelib.properties import RecurringMasterItemId  # type: ignore[import-untyped]
from exchangelib.recurrence import (  # type: ignore[import-untyped]
    AbsoluteMonthlyPattern,
    AbsoluteYearlyPattern,
    DailyPattern,
    Recurrence,
    WeeklyPattern,
)

from serversync.testing.ews import EwsTestServer
from tests.integration.ews.conftest import ALICE, Connect

pytestmark = pytest.mark.integration

BERLIN = EWSTimeZone("Europe/Berlin")


def _series(account: Any, start: Any, recurrence: Any, subject: str = "Series") -> Any:
    item = CalendarItem(
        account=account,
        folder=account.calendar,
        subject=subject,
        start=start,
        end=start + timedelta(hours=1),
        recurrence=recurrence,
    )
    item.save()
    return item


def _starts(series: Any, count: int) -> list[str]:
    out = []
    for index in range(1, count + 1):
        occurrence = series.occurrence(index)
        occurrence.refresh()
        assert occurrence.type == "Occurrence"
        utc = datetime.fromtimestamp(occurrence.start.timestamp(), UTC)
        out.append(utc.strftime("%Y-%m-%d %H:%M"))
    return out


def test_occurrences_keep_their_wall_clock_time_across_dst(
    ews: EwsTestServer, connect: Connect
) -> None:
    account = connect()
    # Europe/Berlin: UTC+2 until Sunday 25 October 2026, UTC+1 after.
    start = EWSDateTime(2026, 10, 19, 9, 0, tzinfo=BERLIN)
    weekly = Recurrence(
        pattern=WeeklyPattern(interval=1, weekdays=[1, 3]), start=start.date(), number=4
    )
    series = _series(account, start, weekly)
    assert _starts(series, 4) == [
        "2026-10-19 07:00",
        "2026-10-21 07:00",
        "2026-10-26 08:00",
        "2026-10-28 08:00",
    ]
    with pytest.raises(ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange):
        series.occurrence(5).refresh()


def test_monthly_and_yearly_patterns_fall_back_to_the_last_day_of_short_months(
    ews: EwsTestServer, connect: Connect
) -> None:
    account = connect()
    utc = EWSTimeZone("UTC")
    start = EWSDateTime(2026, 1, 31, 12, 0, tzinfo=utc)
    monthly = Recurrence(
        pattern=AbsoluteMonthlyPattern(interval=1, day_of_month=31),
        start=start.date(),
        end=EWSDate(2026, 4, 30),
    )
    assert _starts(_series(account, start, monthly), 4) == [
        "2026-01-31 12:00",
        "2026-02-28 12:00",
        "2026-03-31 12:00",
        "2026-04-30 12:00",
    ]
    leap = EWSDateTime(2028, 2, 29, 12, 0, tzinfo=utc)
    yearly = Recurrence(
        pattern=AbsoluteYearlyPattern(day_of_month=29, month=2), start=leap.date(), number=2
    )
    assert _starts(_series(account, leap, yearly), 2) == ["2028-02-29 12:00", "2029-02-28 12:00"]


def test_a_changed_occurrence_becomes_an_exception_of_its_master(
    ews: EwsTestServer, connect: Connect
) -> None:
    account = connect()
    start = EWSDateTime(2026, 6, 1, 10, 0, tzinfo=BERLIN)
    daily = Recurrence(pattern=DailyPattern(interval=1), start=start.date(), number=5)
    series = _series(account, start, daily)
    list(account.calendar.sync_items(sync_state=None, only_fields=["subject"]))
    sync_state = account.calendar.item_sync_state
    before = series.changekey

    second = series.occurrence(2)
    second.refresh()
    again = series.occurrence(2)
    again.refresh()
    assert second.id == again.id  # an occurrence keeps the id it was given
    assert second.id != series.id
    second.subject = "Moved"
    second.start += timedelta(hours=3)
    second.end += timedelta(hours=3)
    second.save(update_fields=["subject", "start", "end"])

    master = account.calendar.get(id=series.id)
    assert master.changekey != before
    [modified] = master.modified_occurrences
    assert modified.id == second.id
    assert modified.original_start == start + timedelta(days=1)
    assert modified.start == start + timedelta(days=1, hours=3)
    exception = account.calendar.get(id=second.id)
    assert (exception.type, exception.subject) == ("Exception", "Moved")
    # By index, the changed occurrence is the exception.
    by_index = series.occurrence(2)
    by_index.refresh()
    assert (by_index.id, by_index.subject) == (second.id, "Moved")
    [owner] = account.fetch([RecurringMasterItemId(id=second.id)], only_fields=["subject"])
    assert owner.id == series.id

    # The folder lists the master only, and the sync reports the master's change.
    assert [i.id for i in account.calendar.all()] == [series.id]
    changes = list(account.calendar.sync_items(sync_state=sync_state, only_fields=["subject"]))
    assert [(kind, item.id) for kind, item in changes] == [("update", series.id)]


def test_deleted_occurrences_leave_the_series(ews: EwsTestServer, connect: Connect) -> None:
    account = connect()
    start = EWSDateTime(2026, 6, 1, 10, 0, tzinfo=BERLIN)
    daily = Recurrence(pattern=DailyPattern(interval=2), start=start.date(), number=4)
    series = _series(account, start, daily)
    third = series.occurrence(3)
    third.refresh()
    third.delete()
    with pytest.raises(ErrorCalendarOccurrenceIsDeletedFromRecurrence):
        series.occurrence(3).refresh()
    master = account.calendar.get(id=series.id)
    assert [d.start for d in master.deleted_occurrences] == [start + timedelta(days=4)]
    assert ews.item(third.id) is None


def test_a_new_pattern_drops_the_exceptions(ews: EwsTestServer, connect: Connect) -> None:
    account = connect()
    start = EWSDateTime(2026, 6, 1, 10, 0, tzinfo=BERLIN)
    series = _series(
        account, start, Recurrence(pattern=DailyPattern(interval=1), start=start.date(), number=3)
    )
    first = series.occurrence(1)
    first.refresh()
    first.subject = "Changed"
    first.save(update_fields=["subject"])
    master = account.calendar.get(id=series.id)
    master.recurrence = Recurrence(pattern=DailyPattern(interval=1), start=start.date(), number=5)
    master.save(update_fields=["recurrence"])
    master = account.calendar.get(id=series.id)
    assert master.modified_occurrences is None
    assert ews.item(first.id) is None
    assert ews.items(ALICE, "calendar")[0].id == series.id


def test_a_calendar_view_expands_series(ews: EwsTestServer, connect: Connect) -> None:
    account = connect()
    start = EWSDateTime(2026, 6, 1, 10, 0, tzinfo=BERLIN)
    single = CalendarItem(
        account=account,
        folder=account.calendar,
        subject="Single",
        start=start + timedelta(days=2, hours=3),
        end=start + timedelta(days=2, hours=4),
    )
    single.save()
    daily = Recurrence(pattern=DailyPattern(interval=1), start=start.date(), number=10)
    series = _series(account, start, daily, subject="Daily")
    moved = series.occurrence(4)
    moved.refresh()
    moved.start += timedelta(days=-2, hours=5)  # from day 4 into day 2
    moved.end += timedelta(days=-2, hours=5)
    moved.save(update_fields=["start", "end"])
    dropped = series.occurrence(3)
    dropped.refresh()
    dropped.delete()

    window = account.calendar.view(start=start + timedelta(days=1), end=start + timedelta(days=4))
    seen = [(i.subject, i.type, i.start - start) for i in window]
    assert seen == [
        ("Daily", "Occurrence", timedelta(days=1)),
        ("Daily", "Exception", timedelta(days=1, hours=5)),
        ("Single", "Single", timedelta(days=2, hours=3)),
    ]
    assert moved.id in [i.id for i in window]
