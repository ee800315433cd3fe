"""FindItem: the items of folders as summaries, filtered, sorted and paged; with a
CalendarView, the calendar items that overlap a time window, recurring series expanded into
their occurrences and exceptions."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime

from serversync.testing.ews._context import OperationContext
from serversync.testing.ews._items import item_values
from serversync.testing.ews._operations._common import child, response
from serversync.testing.ews._recurrence import occurrences
from serversync.testing.ews._render import parse_shape, render_item
from serversync.testing.ews._restriction import matches, sort
from serversync.testing.ews._schema import CALENDAR
from serversync.testing.ews._store import Item, Mailbox
from serversync.testing.ews._xml import (
    EwsError,
    error_message,
    m,
    parse_datetime,
    success_message,
    t,
    xml_bool,
)

OPERATION = "FindItem"


def _overlaps(item: Item, view: ET.Element) -> bool:
    start = parse_datetime(view.get("StartDate", ""))
    end = parse_datetime(view.get("EndDate", ""))
    item_start = parse_datetime(item.text("Start"))
    item_end = parse_datetime(item.text("End")) or item_start
    if item.kind != CALENDAR or item_start is None or item_end is None:
        return False
    return (end is None or item_start < end) and (start is None or item_end > start)


def _expand(items: list[Item], view: ET.Element, ctx: OperationContext) -> list[Item]:
    """Single items, occurrences and exceptions in the window: a series is never listed
    itself in a calendar view."""
    end = parse_datetime(view.get("EndDate", ""))
    out: list[Item] = []
    for item in items:
        if item.text("CalendarItemType") != "RecurringMaster":
            out.append(item)
            continue
        mailbox = ctx.store.mailboxes[item.mailbox]
        exceptions = {
            o.instance_index: o for o in mailbox.occurrences_of(item.id) if o.is_exception
        }
        out += exceptions.values()
        for index, when in occurrences(item.props):
            if end is not None and when[0] >= end:
                break
            # Only occurrences in the window get ids: a long series stays cheap.
            skip = index in exceptions or index in item.deleted_occurrences
            if not skip and _overlaps_times(when, view):
                out.append(ctx.store.occurrence(item, index))
    return out


def _overlaps_times(when: tuple[datetime, datetime], view: ET.Element) -> bool:
    start = parse_datetime(view.get("StartDate", ""))
    end = parse_datetime(view.get("EndDate", ""))
    return (end is None or when[0] < end) and (start is None or when[1] > start)


def _in_view(
    items: list[Item], request: ET.Element, mailbox: Mailbox, ctx: OperationContext
) -> list[Item]:
    restriction = child(request, "Restriction")
    if restriction is not None and len(restriction):
        expression = restriction[0]

        def matching(item: Item) -> bool:
            return matches(expression, lambda path: item_values(item, mailbox, path))

        items = [i for i in items if matching(i)]
    calendar = child(request, "CalendarView")
    if calendar is not None:
        items = [i for i in _expand(items, calendar, ctx) if _overlaps(i, calendar)]
        return sorted(items, key=lambda i: i.text("Start"))
    # Without a sort order Exchange lists the newest first.
    items = sorted(items, key=lambda i: (i.received, i.created), reverse=True)
    order = child(request, "SortOrder")
    return (
        sort(items, order, lambda i, p: item_values(i, mailbox, p)) if order is not None else items
    )


def handle(request: ET.Element, ctx: OperationContext) -> ET.Element:
    shape = parse_shape(child(request, "ItemShape"))
    messages = []
    for folder in ctx.folders(child(request, "ParentFolderIds")):
        if isinstance(folder, EwsError):
            messages.append(error_message(OPERATION, folder))
            continue
        mailbox = ctx.store.mailbox_of_folder(folder)
        try:
            found = _in_view(mailbox.items_in(folder.id), request, mailbox, ctx)
        except EwsError as error:
            messages.append(error_message(OPERATION, error))
            continue
        total = len(found)
        attrs: dict[str, str] = {"TotalItemsInView": str(total)}
        paged = child(request, "IndexedPageItemView")
        calendar = child(request, "CalendarView")
        view = paged if paged is not None else calendar
        offset = int(paged.get("Offset", "0")) if paged is not None else 0
        limit = int(view.get("MaxEntriesReturned", str(total))) if view is not None else total
        if paged is not None and paged.get("BasePoint") == "End":
            offset = max(total - offset - limit, 0)
        page = found[offset : offset + limit]
        if paged is not None:
            attrs["IndexedPagingOffset"] = str(offset + len(page))
        attrs["IncludesLastItemInRange"] = xml_bool(offset + len(page) >= total)
        rendered = [render_item(i, mailbox, shape, summary=True) for i in page]
        root = m("RootFolder", attrs=attrs, children=[t("Items", children=rendered)])
        messages.append(success_message(OPERATION, [root]))
    return response(OPERATION, messages)
