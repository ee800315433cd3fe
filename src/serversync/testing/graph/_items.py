"""The fake Graph's calendar events, contacts and To Do tasks: their resources, their delta
rounds, and the hooks tests use to play the Outlook user.

- Events: ``calendarView/delta`` over ``startDateTime``/``endDateTime`` (the window is kept
  in the round: single events outside it, and changes outside it, come as ``@removed``),
  series masters with a ``recurrence`` that delta lists as their occurrences and exceptions
  (never the master), ``instances``, ``exceptionOccurrences`` (under ``$expand``) and
  ``cancelledOccurrences`` on a master's GET, ``transactionId`` on POST (a repeated one
  answers the existing event), PATCH under ``If-Match`` (412 on a stale change key; an
  occurrence PATCHed becomes an exception), DELETE (an occurrence deleted is cancelled).
- Contacts of the default folder with ``contacts/delta``.
- To Do lists (``todo/lists``, ``todo/lists/delta``) with a default list, tasks with
  ``tasks/delta`` and ``linkedResources``.
- Single-value extended properties are kept as sent (``singleValueExtendedProperties``) and
  returned under ``$expand=singleValueExtendedProperties``.

Every write bumps the item's ``changeKey`` (``@odata.etag`` is ``W/"<changeKey>"``). Times
are answered in UTC. The handler returns ``(status, JSON value or None, headers)``; the core
wraps it (this module does not import the core).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from exchangelib.winzone import MS_TIMEZONE_TO_IANA_MAP  # type: ignore[import-untyped]

__all__ = ["ITEM_RESOURCES", "FakeItems"]

ITEM_RESOURCES: Final = frozenset({"events", "calendarView", "contacts", "todo"})
"""The first path segments under ``/users/{id}`` this module answers."""

_DEFAULT_PAGE: Final = 10
_MAX_PAGE: Final = re.compile(r"odata\.maxpagesize=(\d+)")
_CALENDAR: Final = "calendar"
_CONTACTS: Final = "contacts"
_WEEKDAYS: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

Answer = tuple[int, Any, dict[str, str]]


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.answer: Answer = (status, {"error": {"code": code, "message": message}}, {})


def _gone() -> _Refused:
    return _Refused(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def zone_of(name: str | None) -> ZoneInfo:
    """A Windows or IANA zone name as a :class:`ZoneInfo` (UTC when unknown)."""
    if not name or name.upper() == "UTC":
        return ZoneInfo("UTC")
    iana = MS_TIMEZONE_TO_IANA_MAP.get(name, name)
    try:
        return ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def parse_dtz(value: Mapping[str, Any] | None) -> datetime | None:
    """A Graph ``dateTimeTimeZone`` as an aware datetime."""
    if not value or not value.get("dateTime"):
        return None
    text = str(value["dateTime"]).rstrip("Z")
    if "." in text:
        head, fraction = text.split(".", 1)
        text = f"{head}.{fraction[:6]}"
    return datetime.fromisoformat(text).replace(tzinfo=zone_of(value.get("timeZone")))


def _utc_dtz(moment: datetime) -> dict[str, str]:
    return {
        "dateTime": moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000"),
        "timeZone": "UTC",
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.define
class _Item:
    id: str
    data: dict[str, Any]
    change: int = 1
    list_id: str | None = None
    created: datetime = attrs.field(factory=lambda: datetime.now(UTC))
    modified: datetime = attrs.field(factory=lambda: datetime.now(UTC))

    @property
    def change_key(self) -> str:
        raw = f"{self.id}:{self.change}".encode()
        return base64.b64encode(raw[-24:]).decode()


@attrs.define
class _Box:
    address: str
    events: dict[str, _Item] = attrs.Factory(dict)
    contacts: dict[str, _Item] = attrs.Factory(dict)
    tasks: dict[str, _Item] = attrs.Factory(dict)
    lists: dict[str, str] = attrs.Factory(dict)
    default_list: str = ""
    transactions: dict[str, str] = attrs.Factory(dict)
    # (collection, item id): "calendar", "contacts" or "todo:{list id}".
    log: list[tuple[str, str]] = attrs.Factory(list)


@attrs.define
class _Round:
    address: str
    collection: str
    position: int
    window: tuple[datetime, datetime] | None = None
    entries: list[dict[str, Any]] = attrs.Factory(list)
    offset: int = 0


@attrs.frozen
class _PendingEdit:
    address: str
    item_id: str
    changes: Mapping[str, Any]


class FakeItems:
    """Events, contacts and To Do tasks of every fake mailbox (see the module
    documentation). Reached as ``FakeGraph.items``."""

    def __init__(
        self,
        *,
        lock: threading.RLock,
        new_id: Callable[[str], str],
        now: Callable[[], datetime],
    ) -> None:
        self._lock = lock
        self._new_id = new_id
        self._now = now
        self._boxes: dict[str, _Box] = {}
        self._rounds: dict[str, _Round] = {}
        self._pending: list[_PendingEdit] = []
        self.duplicate_posts_answered = 0
        """POSTs of an event whose ``transactionId`` was known: answered, not created."""

    # -- arranging and playing Outlook ----------------------------------------------------

    def add_mailbox(self, address: str) -> None:
        """Give a mailbox its calendar, contacts and default To Do list ("Tasks")."""
        with self._lock:
            box = _Box(address=address)
            box.default_list = self._new_id("todolist")
            box.lists[box.default_list] = "Tasks"
            self._boxes[address.lower()] = box

    def forget_rounds(self) -> None:
        """Forget every delta round: links answer 410 ``SyncStateNotFound``."""
        with self._lock:
            self._rounds.clear()

    def events(self, address: str) -> list[dict[str, Any]]:
        """Every stored event (single events, series masters, exceptions) as Graph JSON."""
        with self._lock:
            box = self._box(address)
            return [
                self._event_json(box, e, expand=True, extended=True) for e in box.events.values()
            ]

    def contacts(self, address: str) -> list[dict[str, Any]]:
        """Every contact as Graph JSON."""
        with self._lock:
            box = self._box(address)
            return [self._plain_json(c, extended=True) for c in box.contacts.values()]

    def tasks(self, address: str) -> list[dict[str, Any]]:
        """Every To Do task (all lists) as Graph JSON."""
        with self._lock:
            box = self._box(address)
            return [self._plain_json(t, extended=True) for t in box.tasks.values()]

    def item(self, address: str, item_id: str) -> dict[str, Any]:
        """One event (an occurrence too), contact or task as Graph JSON, with its extended
        properties and, for a series master, its exceptions; KeyError when gone."""
        with self._lock:
            box = self._box(address)
            if item_id in box.contacts:
                return self._plain_json(box.contacts[item_id], extended=True)
            if item_id in box.tasks:
                return self._plain_json(box.tasks[item_id], extended=True)
            try:
                return self._event_view(box, item_id, expand=True, extended=True)
            except _Refused:
                raise KeyError(item_id) from None

    def occurrences(self, address: str, master_id: str) -> list[dict[str, Any]]:
        """A series' occurrences and exceptions as Graph JSON, in order (cancelled ones
        left out), whatever the window."""
        with self._lock:
            box = self._box(address)
            return self._instances(box, box.events[master_id])

    def add_event(self, address: str, event: Mapping[str, Any]) -> str:
        """An event created in Outlook (Graph JSON, as for a POST); returns its id."""
        with self._lock:
            box = self._box(address)
            return str(self._create_event(box, dict(event))["id"])

    def add_contact(self, address: str, contact: Mapping[str, Any]) -> str:
        """A contact created in Outlook (Graph JSON); returns its id."""
        with self._lock:
            box = self._box(address)
            return self._store(box, box.contacts, _CONTACTS, dict(contact)).id

    def add_task(self, address: str, task: Mapping[str, Any], *, list_id: str | None = None) -> str:
        """A task created in To Do (Graph JSON), in the default list unless ``list_id``
        names another; returns its id."""
        with self._lock:
            box = self._box(address)
            target = list_id or box.default_list
            return self._store(box, box.tasks, f"todo:{target}", dict(task), list_id=target).id

    def edit(self, address: str, item_id: str, changes: Mapping[str, Any]) -> None:
        """The user edits an item in Outlook: ``changes`` (Graph JSON) are merged and the
        change key moves on. An occurrence edited becomes an exception."""
        with self._lock:
            box = self._box(address)
            self._patch(box, item_id, dict(changes), if_match=None)

    def remove(self, address: str, item_id: str) -> None:
        """The user deletes an item in Outlook (an occurrence: it is cancelled)."""
        with self._lock:
            self._delete(self._box(address), item_id)

    def edit_before_next_write(
        self, address: str, item_id: str, changes: Mapping[str, Any]
    ) -> None:
        """Play an Outlook edit of ``item_id`` just before the next PATCH of it is
        answered: a client holding the older change key meets a 412."""
        with self._lock:
            self._pending.append(_PendingEdit(address, item_id, dict(changes)))

    def _box(self, address: str) -> _Box:
        return self._boxes[address.lower()]

    # -- dispatch -----------------------------------------------------------------------------

    def handle(
        self,
        address: str,
        method: str,
        rest: list[str],
        params: Mapping[str, str],
        headers: Mapping[str, str],
        base: str,
        body: bytes,
    ) -> Answer:
        """Answer a request under ``/users/{address}/`` whose path continues with ``rest``."""
        box = self._box(address)
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            return _Refused(400, "RequestBodyRead", "The body is no JSON.").answer
        size_match = _MAX_PAGE.search(headers.get("prefer", ""))
        size = int(size_match.group(1)) if size_match else _DEFAULT_PAGE
        if_match = headers.get("if-match")
        user = f"{base}/users/{quote(box.address, safe='@')}"
        try:
            return self._route(box, method, rest, params, size, if_match, user, payload)
        except _Refused as refused:
            return refused.answer

    def _route(
        self,
        box: _Box,
        method: str,
        rest: list[str],
        params: Mapping[str, str],
        size: int,
        if_match: str | None,
        user: str,
        payload: Any,
    ) -> Answer:
        head, tail = rest[0], rest[1:]
        if head == "calendarView" and tail == ["delta"] and method == "GET":
            return self._delta(box, _CALENDAR, params, size, f"{user}/calendarView/delta")
        if head == "events":
            if not tail and method == "POST":
                return self._post_event(box, payload)
            if not tail and method == "GET":
                top = int(params.get("$top") or _DEFAULT_PAGE)
                value = [self._event_json(box, e, expand=False) for e in box.events.values()]
                return 200, {"value": value[:top]}, {}
            if len(tail) == 1:
                return self._one(box, "event", tail[0], method, params, if_match, payload)
            if len(tail) == 2 and tail[1] == "instances" and method == "GET":
                return self._instances_of(box, tail[0], params)
        if head == "contacts":
            if tail == ["delta"] and method == "GET":
                return self._delta(box, _CONTACTS, params, size, f"{user}/contacts/delta")
            if not tail and method == "POST":
                item = self._store(box, box.contacts, _CONTACTS, payload)
                return 201, self._plain_json(item), {}
            if len(tail) == 1:
                return self._one(box, "contact", tail[0], method, params, if_match, payload)
        if head == "todo" and tail[:1] == ["lists"]:
            return self._todo(box, method, tail[1:], params, size, if_match, user, payload)
        raise _Refused(400, "BadRequest", "unsupported resource")

    def _one(
        self,
        box: _Box,
        kind: str,
        item_id: str,
        method: str,
        params: Mapping[str, str],
        if_match: str | None,
        payload: Any,
    ) -> Answer:
        if method == "GET":
            wanted = params.get("$expand", "")
            extended = "singleValueExtendedProperties" in wanted
            if kind == "event":
                expand = "exceptionOccurrences" in wanted
                return 200, self._event_view(box, item_id, expand=expand, extended=extended), {}
            found = self._find(box, item_id)
            return 200, self._plain_json(found, extended=extended), {}
        if method == "PATCH":
            return 200, self._patch(box, item_id, payload, if_match=if_match), {}
        if method == "DELETE":
            self._delete(box, item_id)
            return 204, None, {}
        raise _Refused(405, "ErrorInvalidRequest", "unsupported method")

    def _todo(
        self,
        box: _Box,
        method: str,
        rest: list[str],
        params: Mapping[str, str],
        size: int,
        if_match: str | None,
        user: str,
        payload: Any,
    ) -> Answer:
        if not rest and method == "GET":
            return 200, {"value": [self._list_json(box, i) for i in box.lists]}, {}
        if rest == ["delta"] and method == "GET":
            # Lists change only when tests add them: every round lists them all.
            value = [self._list_json(box, i) for i in box.lists]
            token = secrets.token_urlsafe(12)
            return (
                200,
                {
                    "value": value,
                    "@odata.deltaLink": f"{user}/todo/lists/delta?$deltatoken={token}",
                },
                {},
            )
        list_id = rest[0]
        if list_id not in box.lists:
            raise _gone()
        tail = rest[1:]
        collection = f"todo:{list_id}"
        if tail == ["tasks", "delta"] and method == "GET":
            link = f"{user}/todo/lists/{list_id}/tasks/delta"
            return self._delta(box, collection, params, size, link)
        if tail == ["tasks"] and method == "POST":
            item = self._store(box, box.tasks, collection, payload, list_id=list_id)
            return 201, self._plain_json(item), {}
        if len(tail) >= 2 and tail[0] == "tasks":
            task = box.tasks.get(tail[1])
            if task is None or task.list_id != list_id:
                raise _gone()
            if len(tail) == 2:
                return self._one(box, "task", tail[1], method, params, if_match, payload)
            if tail[2:] == ["linkedResources"] and method == "GET":
                return 200, {"value": list(task.data.get("linkedResources", []))}, {}
            if tail[2:] == ["linkedResources"] and method == "POST":
                resource = {"id": self._new_id("link"), **payload}
                task.data.setdefault("linkedResources", []).append(resource)
                self._touch(box, collection, task)
                return 201, resource, {}
        raise _Refused(400, "BadRequest", "unsupported To Do request")

    def _list_json(self, box: _Box, list_id: str) -> dict[str, Any]:
        return {
            "id": list_id,
            "displayName": box.lists[list_id],
            "isOwner": True,
            "wellknownListName": "defaultList" if list_id == box.default_list else "none",
        }

    # -- generic items ------------------------------------------------------------------------

    def _collection(self, box: _Box, item: _Item) -> str:
        if item.id in box.contacts:
            return _CONTACTS
        if item.id in box.tasks:
            return f"todo:{item.list_id}"
        return _CALENDAR

    def _touch(self, box: _Box, collection: str, item: _Item, *, new: bool = False) -> None:
        if not new:
            item.change += 1
        item.modified = self._now()
        box.log.append((collection, item.id))

    def _store(
        self,
        box: _Box,
        into: dict[str, _Item],
        collection: str,
        payload: Any,
        *,
        list_id: str | None = None,
    ) -> _Item:
        if not isinstance(payload, dict):
            raise _Refused(400, "ErrorInvalidRequest", "the body must be a JSON object")
        data = {k: v for k, v in payload.items() if not k.startswith("@") and k != "id"}
        for resource in data.get("linkedResources") or ():
            resource.setdefault("id", self._new_id("link"))
        now = self._now()
        item = _Item(id=self._new_id(collection.split(":")[0]), data=data, list_id=list_id)
        item.created = item.modified = now
        into[item.id] = item
        self._touch(box, collection, item, new=True)
        return item

    def _find(self, box: _Box, item_id: str) -> _Item:
        found = box.contacts.get(item_id) or box.tasks.get(item_id) or box.events.get(item_id)
        if found is None:
            raise _gone()
        return found

    def _plain_json(self, item: _Item, *, extended: bool = False) -> dict[str, Any]:
        data = json.loads(json.dumps(item.data))
        if not extended:
            # Graph returns extended properties only under $expand.
            data.pop("singleValueExtendedProperties", None)
        return {
            "@odata.etag": f'W/"{item.change_key}"',
            "id": item.id,
            "changeKey": item.change_key,
            "createdDateTime": _iso(item.created),
            "lastModifiedDateTime": _iso(item.modified),
            **data,
        }

    def _patch(
        self, box: _Box, item_id: str, changes: Any, *, if_match: str | None
    ) -> dict[str, Any]:
        if not isinstance(changes, dict):
            raise _Refused(400, "ErrorInvalidRequest", "the body must be a JSON object")
        for pending in list(self._pending):
            if pending.address.lower() == box.address.lower() and pending.item_id == item_id:
                self._pending.remove(pending)
                self._patch(box, item_id, dict(pending.changes), if_match=None)
        item = box.events.get(item_id) or box.contacts.get(item_id) or box.tasks.get(item_id)
        if item is None:
            item = self._occurrence_to_exception(box, item_id)
            if item is None:
                raise _gone()
        if if_match is not None:
            wanted = if_match.strip()
            if wanted.startswith("W/"):
                wanted = wanted[2:]
            if wanted.strip('"') != item.change_key:
                raise _Refused(
                    412,
                    "ErrorIrresolvableConflict",
                    "The send or update operation could not be performed because the change "
                    "key passed in the request does not match the current change key for the "
                    "item.",
                )
        if item.id in box.events and item.data.get("type") == "exception":
            changes.pop("recurrence", None)
        if "transactionId" in changes and item.data.get("transactionId"):
            raise _Refused(400, "ErrorInvalidRequest", "transactionId cannot change")
        for key, value in changes.items():
            if key.startswith("@") or key in ("id", "changeKey", "type", "seriesMasterId"):
                continue
            if key == "singleValueExtendedProperties":
                kept = {p["id"]: p for p in item.data.get(key) or ()}
                kept.update({p["id"]: p for p in value or ()})
                item.data[key] = list(kept.values())
            else:
                item.data[key] = value
        if item.id in box.events:
            self._normalize_event(item)
        self._touch(box, self._collection(box, item), item)
        if item.id in box.events:
            master = box.events.get(str(item.data.get("seriesMasterId") or ""))
            if master is not None:
                # An exception changes its series (Exchange gives the master a new key).
                self._touch(box, _CALENDAR, master)
            return self._event_json(box, item, expand=False)
        return self._plain_json(item)

    def _delete(self, box: _Box, item_id: str) -> None:
        for into in (box.contacts, box.tasks):
            if item_id in into:
                item = into.pop(item_id)
                collection = _CONTACTS if into is box.contacts else f"todo:{item.list_id}"
                box.log.append((collection, item_id))
                return
        event = box.events.pop(item_id, None)
        if event is not None:
            box.log.append((_CALENDAR, item_id))
            if event.data.get("type") == "seriesMaster":
                for other in [e for e in box.events.values() if self._master_of(e) == item_id]:
                    box.events.pop(other.id)
                    box.log.append((_CALENDAR, other.id))
            master = box.events.get(self._master_of(event) or "")
            if master is not None and event.data.get("originalStart"):
                self._cancel(box, master, str(event.data["originalStart"]))
            return
        occurrence = self._occurrence(box, item_id)
        if occurrence is None:
            raise _gone()
        master, original = occurrence
        self._cancel(box, master, _iso(original))
        box.log.append((_CALENDAR, item_id))

    def _cancel(self, box: _Box, master: _Item, original: str) -> None:
        cancelled = master.data.setdefault("_cancelled", [])
        if original not in cancelled:
            cancelled.append(original)
        self._touch(box, _CALENDAR, master)

    # -- events -------------------------------------------------------------------------------

    def _post_event(self, box: _Box, payload: Any) -> Answer:
        if not isinstance(payload, dict):
            raise _Refused(400, "ErrorInvalidRequest", "the body must be a JSON object")
        transaction = payload.get("transactionId")
        if transaction and transaction in box.transactions:
            known = box.events.get(box.transactions[transaction])
            if known is not None:
                self.duplicate_posts_answered += 1
                return 201, self._event_json(box, known, expand=False), {}
        return 201, self._create_event(box, payload), {}

    def _create_event(self, box: _Box, payload: dict[str, Any]) -> dict[str, Any]:
        if parse_dtz(payload.get("start")) is None or parse_dtz(payload.get("end")) is None:
            raise _Refused(400, "ErrorInvalidRequest", "an event needs start and end")
        item = self._store(box, box.events, _CALENDAR, payload)
        item.data["type"] = "seriesMaster" if item.data.get("recurrence") else "singleInstance"
        item.data.setdefault(
            "organizer", {"emailAddress": {"address": box.address, "name": box.address}}
        )
        item.data["iCalUId"] = "040000008200E000" + secrets.token_hex(16).upper()
        self._normalize_event(item)
        if payload.get("transactionId"):
            box.transactions[str(payload["transactionId"])] = item.id
        return self._event_json(box, item, expand=False)

    def _normalize_event(self, item: _Item) -> None:
        # Kept as written: originalStartTimeZone is the zone of the start the client sent.
        start = item.data.get("start") or {}
        end = item.data.get("end") or {}
        if item.data.get("type") != "exception":
            item.data["originalStartTimeZone"] = start.get("timeZone") or "UTC"
            item.data["originalEndTimeZone"] = end.get("timeZone") or "UTC"
        if item.data.get("recurrence") and item.data.get("type") == "singleInstance":
            item.data["type"] = "seriesMaster"

    def _master_of(self, event: _Item) -> str | None:
        value = event.data.get("seriesMasterId")
        return str(value) if value else None

    def _occurrence_id(self, master: _Item, original: datetime) -> str:
        return f"{master.id}_{original.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}"

    def _starts(self, master: _Item) -> Iterator[datetime]:
        """The original starts of a series' occurrences, cancelled ones included."""
        recurrence = master.data.get("recurrence") or {}
        pattern = recurrence.get("pattern") or {}
        span = recurrence.get("range") or {}
        first = parse_dtz(master.data.get("start"))
        if first is None:
            return
        zone = zone_of(span.get("recurrenceTimeZone") or master.data.get("originalStartTimeZone"))
        local = first.astimezone(zone)
        count = int(span["numberOfOccurrences"]) if span.get("type") == "numbered" else None
        until = date.fromisoformat(span["endDate"]) if span.get("type") == "endDate" else None
        start_date = date.fromisoformat(span.get("startDate") or local.date().isoformat())
        for n, day in enumerate(_days(pattern, start_date)):
            if (count is not None and n >= count) or (until is not None and day > until):
                return
            if day > start_date + timedelta(days=3660):
                return
            yield datetime.combine(day, time(local.hour, local.minute, local.second), zone)

    def _instances(self, box: _Box, master: _Item) -> list[dict[str, Any]]:
        """The occurrences and exceptions of a series, as Graph JSON, in order."""
        exceptions = {
            str(e.data.get("originalStart")): e
            for e in box.events.values()
            if self._master_of(e) == master.id
        }
        cancelled = set(master.data.get("_cancelled") or ())
        first = parse_dtz(master.data.get("start"))
        last = parse_dtz(master.data.get("end"))
        length = (last - first) if first is not None and last is not None else timedelta(0)
        out = []
        for start in self._starts(master):
            original = _iso(start)
            if original in cancelled:
                continue
            exception = exceptions.get(original)
            if exception is not None:
                out.append(self._event_json(box, exception, expand=False))
                continue
            out.append(self._occurrence_json(master, start, length))
        return out

    def _occurrence_json(self, master: _Item, start: datetime, length: timedelta) -> dict[str, Any]:
        data = {
            k: v
            for k, v in master.data.items()
            if not k.startswith("_")
            and k not in ("recurrence", "transactionId", "singleValueExtendedProperties")
        }
        data.update(
            id=self._occurrence_id(master, start),
            type="occurrence",
            seriesMasterId=master.id,
            originalStart=_iso(start),
            start=_utc_dtz(start),
            end=_utc_dtz(start + length),
            recurrence=None,
        )
        return {
            "@odata.etag": f'W/"{master.change_key}"',
            "changeKey": master.change_key,
            "createdDateTime": _iso(master.created),
            "lastModifiedDateTime": _iso(master.modified),
            **json.loads(json.dumps(data)),
        }

    def _occurrence(self, box: _Box, item_id: str) -> tuple[_Item, datetime] | None:
        master_id, _, stamp = item_id.rpartition("_")
        master = box.events.get(master_id)
        if master is None or not stamp:
            return None
        try:
            original = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            return None
        if original not in set(self._starts(master)):
            return None
        if _iso(original) in set(master.data.get("_cancelled") or ()):
            return None
        return master, original

    def _occurrence_to_exception(self, box: _Box, item_id: str) -> _Item | None:
        found = self._occurrence(box, item_id)
        if found is None:
            return None
        master, original = found
        first = parse_dtz(master.data.get("start"))
        last = parse_dtz(master.data.get("end"))
        assert first is not None
        assert last is not None
        view = self._occurrence_json(master, original, last - first)
        data = {
            k: v
            for k, v in view.items()
            if not k.startswith("@") and k not in ("id", "changeKey", "createdDateTime")
        }
        data["type"] = "exception"
        exception = _Item(id=item_id, data=data, change=master.change)
        exception.created = self._now()
        box.events[item_id] = exception
        return exception

    def _event_json(
        self, box: _Box, item: _Item, *, expand: bool, extended: bool = False
    ) -> dict[str, Any]:
        view = self._plain_json(item, extended=extended)
        for key in [k for k in view if k.startswith("_")]:
            view.pop(key)
        for key in ("start", "end"):
            moment = parse_dtz(item.data.get(key))
            if moment is not None:
                view[key] = _utc_dtz(moment)
        if item.data.get("type") == "seriesMaster":
            view["cancelledOccurrences"] = [
                f"OID.{item.id}.{original[:10]}" for original in item.data.get("_cancelled") or ()
            ]
            if expand:
                view["exceptionOccurrences"] = [
                    self._event_json(box, e, expand=False)
                    for e in box.events.values()
                    if self._master_of(e) == item.id
                ]
        return view

    def _event_view(
        self, box: _Box, item_id: str, *, expand: bool, extended: bool = False
    ) -> dict[str, Any]:
        event = box.events.get(item_id)
        if event is not None:
            return self._event_json(box, event, expand=expand, extended=extended)
        found = self._occurrence(box, item_id)
        if found is None:
            raise _gone()
        master, original = found
        first, last = parse_dtz(master.data.get("start")), parse_dtz(master.data.get("end"))
        assert first is not None
        assert last is not None
        return self._occurrence_json(master, original, last - first)

    def _instances_of(self, box: _Box, master_id: str, params: Mapping[str, str]) -> Answer:
        master = box.events.get(master_id)
        if master is None or master.data.get("type") != "seriesMaster":
            raise _gone()
        window = _window(params)
        value = [i for i in self._instances(box, master) if _overlaps(i, window)]
        return 200, {"value": value}, {}

    def _in_window(self, box: _Box, window: tuple[datetime, datetime]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for event in list(box.events.values()):
            kind = event.data.get("type")
            if kind == "seriesMaster":
                rows += [i for i in self._instances(box, event) if _overlaps(i, window)]
            elif kind == "singleInstance":
                view = self._event_json(box, event, expand=False)
                if _overlaps(view, window):
                    rows.append(view)
        return rows

    # -- delta --------------------------------------------------------------------------------

    def _delta(
        self, box: _Box, collection: str, params: Mapping[str, str], size: int, link: str
    ) -> Answer:
        token = params.get("$skiptoken") or params.get("$deltatoken")
        if token is not None:
            known = self._rounds.get(token)
            if known is None or known.collection != collection or known.address != box.address:
                return _Refused(
                    410,
                    "SyncStateNotFound",
                    "The sync state generation is not found; generation=1;[highest=2][2].",
                ).answer
            if "$deltatoken" in params:
                current = attrs.evolve(
                    known,
                    entries=self._changes(box, known),
                    position=len(box.log),
                    offset=0,
                )
            else:
                current = known
        else:
            window = _window(params) if collection == _CALENDAR else None
            current = _Round(
                address=box.address,
                collection=collection,
                position=len(box.log),
                window=window,
                entries=self._everything(box, collection, window),
            )
        page = current.entries[current.offset : current.offset + size]
        token = secrets.token_urlsafe(18)
        if current.offset + size < len(current.entries):
            self._rounds[token] = attrs.evolve(current, offset=current.offset + size)
            links = {"@odata.nextLink": f"{link}?$skiptoken={token}"}
        else:
            self._rounds[token] = attrs.evolve(current, entries=[], offset=0)
            links = {"@odata.deltaLink": f"{link}?$deltatoken={token}"}
        return 200, {"value": page, **links}, {}

    def _everything(
        self, box: _Box, collection: str, window: tuple[datetime, datetime] | None
    ) -> list[dict[str, Any]]:
        if collection == _CALENDAR:
            assert window is not None
            return self._in_window(box, window)
        if collection == _CONTACTS:
            return [self._plain_json(c) for c in box.contacts.values()]
        list_id = collection.split(":", 1)[1]
        return [self._plain_json(t) for t in box.tasks.values() if t.list_id == list_id]

    def _changes(self, box: _Box, since: _Round) -> list[dict[str, Any]]:
        touched = list(
            dict.fromkeys(i for c, i in box.log[since.position :] if c == since.collection)
        )
        rows: dict[str, dict[str, Any]] = {}
        for item_id in touched:
            if since.collection != _CALENDAR:
                item = box.contacts.get(item_id) or box.tasks.get(item_id)
                rows[item_id] = self._plain_json(item) if item else _removed(item_id)
                continue
            assert since.window is not None
            event = box.events.get(item_id)
            if event is None:
                rows[item_id] = _removed(item_id)
            elif event.data.get("type") == "seriesMaster":
                instances = self._instances(box, event)
                for instance in instances:
                    inside = _overlaps(instance, since.window)
                    rows[instance["id"]] = instance if inside else _removed(instance["id"])
            else:
                view = self._event_json(box, event, expand=False)
                # Changed outside the window: Graph says "removed" (reason deleted).
                rows[item_id] = view if _overlaps(view, since.window) else _removed(item_id)
        return list(rows.values())


def _removed(item_id: str) -> dict[str, Any]:
    return {"id": item_id, "@removed": {"reason": "deleted"}}


def _window(params: Mapping[str, str]) -> tuple[datetime, datetime]:
    try:
        start = datetime.fromisoformat(params["startDateTime"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(params["endDateTime"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        raise _Refused(
            400,
            "ErrorInvalidParameter",
            "This request requires a time window specified by the query string parameters "
            "StartDateTime and EndDateTime.",
        ) from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    return start, end


def _overlaps(event: Mapping[str, Any], window: tuple[datetime, datetime]) -> bool:
    start, end = parse_dtz(event.get("start")), parse_dtz(event.get("end"))
    if start is None or end is None:
        return False
    return start < window[1] and end > window[0]


def _days(pattern: Mapping[str, Any], first: date) -> Iterator[date]:
    """The days of a Graph recurrence pattern from ``first`` on, without the range end."""
    kind = pattern.get("type")
    step = int(pattern.get("interval") or 1)
    if kind == "daily":
        day = first
        while True:
            yield day
            day += timedelta(days=step)
    if kind == "weekly":
        wanted = sorted(_WEEKDAYS.index(d.lower()) for d in pattern.get("daysOfWeek") or ())
        week = first - timedelta(days=first.weekday())
        while True:
            for weekday in wanted:
                day = week + timedelta(days=weekday)
                if day >= first:
                    yield day
            week += timedelta(weeks=step)
    if kind in ("absoluteMonthly", "absoluteYearly"):
        months = step if kind == "absoluteMonthly" else 12 * step
        year = first.year
        month = first.month if kind == "absoluteMonthly" else int(pattern.get("month") or 1)
        day_of_month = int(pattern.get("dayOfMonth") or 1)
        while True:
            for candidate in range(day_of_month, 0, -1):
                try:
                    day = date(year, month, candidate)
                except ValueError:
                    continue
                if day >= first:
                    yield day
                break
            month += months
            year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return
