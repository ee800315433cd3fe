"""Appointments, contacts and tasks over Microsoft Graph: the default calendar through
``calendarView/delta`` over a window, the default contacts folder through ``contacts/delta``,
the default To Do list through ``tasks/delta``; whole items by id; writes guarded by the
change key (``If-Match``).

- **Sync state.** The whole resume URL (a ``nextLink`` mid-round, the ``deltaLink`` after
  it). For the calendar the window rides along as the URL's fragment (never sent), so the
  session knows when to roll it: once its start lags more than ``window_roll`` behind, a
  new round over the new window starts (``reset=True``). A state Graph has forgotten (410,
  ``syncStateNotFound``), or one that is no Graph link of this entity, lists everything
  again with ``reset=True``.
- **Series.** Graph's calendar delta lists occurrences and exceptions, never the series
  master: the session reads each master named by a ``seriesMasterId`` (with its
  ``exceptionOccurrences`` and ``cancelledOccurrences``) and reports the master followed by
  its exceptions, like the EWS session. Plain occurrences are not items of their own.
- **``@removed``.** Graph says "removed" for a delete inside the window and for a change
  outside it. Each removed event is looked up by id: only a 404 is a delete; an event that
  still exists was moved out of the window and is reported as changed.
- **Exactly once.** An event is created with a ``transactionId`` derived from the mailbox
  and the CRM record (a retry after a lost answer gets the event already made); the CRM id
  is an extended property (:data:`CRM_ID_PROPERTY`) on events and contacts and a
  ``linkedResource`` on tasks.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, final
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

import attrs

from serversync.act.changes import fingerprints
from serversync.adapters._ports_docs import documented_by
from serversync.adapters.transports.graph._act_fields import (
    FIELDS,
    FieldError,
    event_zone,
    from_graph,
    parse_graph_datetime,
    to_graph,
    utc,
)
from serversync.adapters.transports.graph._client import GraphClient
from serversync.adapters.transports.graph._errors import SyncStateLostError
from serversync.errors import (
    ErrorScope,
    PermanentError,
    StorageConflictError,
    SyncError,
    TransientError,
)
from serversync.model import Mailbox
from serversync.model.act import (
    ActEntity,
    ExchangeItem,
    ExchangeItemChanges,
    ExchangeItemKey,
    FieldValues,
)
from serversync.model.ids import RecordRef
from serversync.ports.act import ExchangeItemsSession
from serversync.settings import Timeouts

__all__ = ["CRM_ID_PROPERTY", "LINKED_APPLICATION", "ActOptions", "GraphActSession"]

CRM_ID_PROPERTY: Final = "String {5b0c1d9e-3f4a-4c8e-9d2b-7a6e5f4c3b2a} Name ServerSyncCrmId"
"""The single-value extended property holding ``entity:id`` of the CRM record on the
events and contacts serversync creates."""
LINKED_APPLICATION: Final = "serversync"
"""``applicationName`` of the ``linkedResource`` naming the CRM record on a To Do task."""
# transactionIds are UUIDs in this namespace: the same mailbox and record give the same one.
_TRANSACTIONS: Final = uuid.UUID("3c1f6a52-8e0b-4d7a-a9f2-6b5e4d3c2a19")
_PAGE_CAP: Final = 200
_GONE_CODES: Final = frozenset({"erroritemnotfound", "itemnotfound"})
_WINDOW: Final = "#window="


@attrs.frozen(kw_only=True)
class ActOptions:
    """How the session reads: the calendar window around now (``window_past`` back,
    ``window_future`` ahead), and how far its start may lag before a new window."""

    timeouts: Timeouts
    now: Callable[[], datetime]
    window_past: timedelta = timedelta(days=30)
    window_future: timedelta = timedelta(days=365)
    window_roll: timedelta = timedelta(days=7)


def _change_key(row: dict[str, Any]) -> str:
    key = row.get("changeKey")
    if key:
        return str(key)
    etag = str(row.get("@odata.etag") or "")
    return etag[2:].strip('"') if etag.startswith("W/") else etag.strip('"')


def _if_match(key: ExchangeItemKey) -> str:
    return f'W/"{key.change_key}"'


def _gone(exc: SyncError) -> bool:
    return (exc.server_code or "").lower() in _GONE_CODES


def _modified(row: dict[str, Any]) -> datetime:
    text = row.get("lastModifiedDateTime")
    if not text:
        return datetime.now(UTC)
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).astimezone(UTC)


def _original(row: dict[str, Any]) -> datetime | None:
    text = row.get("originalStart")
    if not text:
        return None
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).astimezone(UTC)


def transaction_id(mailbox: str, record: RecordRef | None, fields: FieldValues) -> str:
    """The ``transactionId`` of an event created for ``record`` in ``mailbox``: the same
    for every retry. Without a record, the fields' fingerprints stand in for it."""
    if record is not None:
        name = f"{mailbox.lower()}|{record.entity}|{record.id}"
    else:
        digest = hashlib.sha256(repr(sorted(fingerprints(fields, fields).items())).encode())
        name = f"{mailbox.lower()}|fields|{digest.hexdigest()}"
    return str(uuid.uuid5(_TRANSACTIONS, name))


@final
@documented_by(ExchangeItemsSession)
class GraphActSession:
    """One mailbox's calendar, contacts and To Do tasks over Graph."""

    def __init__(self, client: GraphClient, *, mailbox: Mailbox, options: ActOptions) -> None:
        self._client = client
        self._mailbox = mailbox
        self._options = options
        self._user = f"users/{quote(mailbox.email_address, safe='@')}"
        self._task_list: str | None = None

    # -- requests -------------------------------------------------------------------------

    def _prefer(self, page: int | None = None) -> tuple[str, ...]:
        prefer = (
            'outlook.timezone="UTC"',
            'outlook.body-content-type="text"',
            'IdType="ImmutableId"',
        )
        return (f"odata.maxpagesize={page}", *prefer) if page else prefer

    async def _json(
        self,
        method: str,
        path: str,
        *,
        what: str,
        page: int | None = None,
        item: bool = False,
        if_match: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        response = await self._client.request(
            method,
            path,
            what=what,
            deadline=self._options.timeouts.command,
            prefer=self._prefer(page),
            idempotent=method in ("GET", "DELETE"),
            item=item,
            if_match=if_match,
            **kwargs,
        )
        body = response.json() if response.content else {}
        return body if isinstance(body, dict) else {}

    def _path(self, entity: ActEntity, item_id: str = "") -> str:
        suffix = f"/{quote(item_id, safe='')}" if item_id else ""
        if entity is ActEntity.APPOINTMENT:
            return f"{self._user}/events{suffix}"
        if entity is ActEntity.CONTACT:
            return f"{self._user}/contacts{suffix}"
        assert self._task_list is not None
        return f"{self._user}/todo/lists/{quote(self._task_list, safe='')}/tasks{suffix}"

    async def _default_list(self) -> str:
        if self._task_list is None:
            lists = await self._json("GET", f"{self._user}/todo/lists", what="finding To Do lists")
            rows = [r for r in lists.get("value") or () if isinstance(r, dict)]
            default = next(
                (r for r in rows if str(r.get("wellknownListName")) == "defaultList"), None
            )
            if default is None or not default.get("id"):
                raise PermanentError(
                    "the mailbox has no default To Do list", mailbox_id=self._mailbox.id
                )
            self._task_list = str(default["id"])
        return self._task_list

    def _refuse(self, entity: ActEntity, why: str) -> PermanentError:
        return PermanentError(
            f"cannot write the {entity} to Microsoft Graph: {why}",
            mailbox_id=self._mailbox.id,
            scope=ErrorScope.ITEM,
        )

    async def probe(self) -> None:
        """One cheap request that proves the token and the mailbox's calendar (403/404 say
        why not)."""
        await self._json(
            "GET",
            f"{self._user}/events",
            what="opening the calendar",
            params={"$top": "1", "$select": "id"},
        )

    # -- reading --------------------------------------------------------------------------

    def held_fields(self, entity: ActEntity) -> frozenset[str]:
        return frozenset(FIELDS[entity])

    def _first_url(self, entity: ActEntity) -> str:
        if entity is ActEntity.APPOINTMENT:
            now = self._options.now()
            start = (now - self._options.window_past).replace(
                hour=0, minute=0, second=0, microsecond=0
            )
            end = start + self._options.window_past + self._options.window_future
            url = self._client.url(
                f"{self._user}/calendarView/delta?startDateTime={utc(start)}&endDateTime={utc(end)}"
            )
            return f"{url}{_WINDOW}{utc(start)}/{utc(end)}"
        if entity is ActEntity.CONTACT:
            return self._client.url(f"{self._user}/contacts/delta")
        return self._client.url(f"{self._path(entity)}/delta")

    def _usable(self, entity: ActEntity, state: str) -> bool:
        """Whether ``state`` is a resume link of this entity's delta (and, for the
        calendar, of a window that still covers now)."""
        url, _, window = state.partition(_WINDOW)
        first = self._first_url(entity).partition(_WINDOW)[0]
        if "://" not in url or urlsplit(url).path != urlsplit(first).path:
            return False
        try:
            self._client.url(url)
        except SyncError:
            return False
        if entity is ActEntity.APPOINTMENT:
            try:
                start = datetime.fromisoformat(window.split("/")[0].replace("Z", "+00:00"))
            except ValueError:
                return False
            due = self._options.now() - self._options.window_past - self._options.window_roll
            return start >= due
        return True

    async def sync_items(
        self, entity: ActEntity, state: str | None, *, limit: int
    ) -> ExchangeItemChanges:
        if entity is ActEntity.TASK:
            await self._default_list()
        reset = False
        if state and not self._usable(entity, state):
            state, reset = None, True
        url = state or self._first_url(entity)
        page_size = max(1, min(limit, _PAGE_CAP))
        try:
            page = await self._delta_page(entity, url, page_size)
        except SyncStateLostError:
            if not state:
                raise
            # Graph forgot the round: list everything again; the mappings absorb the replay.
            self._client.stats._count("rounds_restarted")
            reset, url = True, self._first_url(entity)
            page = await self._delta_page(entity, url, page_size)
        next_link = page.get("@odata.nextLink")
        delta_link = page.get("@odata.deltaLink")
        link = str(next_link or delta_link or "")
        if not link:
            raise TransientError(
                f"the {entity} delta page has neither nextLink nor deltaLink",
                mailbox_id=self._mailbox.id,
            )
        self._client.url(link)  # a link to another host is refused before anything is kept
        window = url.partition(_WINDOW)[2]
        rows = [r for r in page.get("value") or () if isinstance(r, dict) and r.get("id")]
        changed, deleted = await self._rows(entity, rows)
        return ExchangeItemChanges(
            entity=entity,
            changed=tuple(changed),
            deleted=tuple(deleted),
            state=f"{link}{_WINDOW}{window}" if window else link,
            reset=reset,
            more=bool(next_link),
        )

    async def _delta_page(self, entity: ActEntity, url: str, size: int) -> dict[str, Any]:
        return await self._json(
            "GET",
            url.partition(_WINDOW)[0],
            what=f"reading the {entity} delta",
            page=size,
        )

    async def _rows(
        self, entity: ActEntity, rows: list[dict[str, Any]]
    ) -> tuple[list[ExchangeItem], list[str]]:
        changed: dict[str, ExchangeItem] = {}
        deleted: dict[str, None] = {}
        masters: dict[str, None] = {}
        removed = [str(r["id"]) for r in rows if "@removed" in r]
        for row in rows:
            if "@removed" in row:
                continue
            if entity is not ActEntity.APPOINTMENT:
                changed[str(row["id"])] = self._item(entity, row)
                continue
            kind = row.get("type")
            if kind in ("occurrence", "exception") and row.get("seriesMasterId"):
                masters[str(row["seriesMasterId"])] = None
            if kind != "occurrence":
                changed[str(row["id"])] = self._item(entity, row)
        # "Removed" is a delete only when the item is gone (not moved out of the window).
        for item_id in removed:
            found = await self._get(entity, item_id)
            if found is None:
                deleted[item_id] = None
                changed.pop(item_id, None)
                continue
            kind = found.get("type")
            if entity is ActEntity.APPOINTMENT and kind in ("occurrence", "exception"):
                masters[str(found.get("seriesMasterId") or "")] = None
            if kind != "occurrence":
                changed[item_id] = self._item(entity, found)
        out: list[ExchangeItem] = []
        for master_id in (m for m in masters if m):
            series = await self._series(master_id)
            if series is None:
                deleted[master_id] = None
                continue
            out += series
        seen = {i.key.item_id for i in out}
        out += [i for i in changed.values() if i.key.item_id not in seen]
        return out, [d for d in deleted if d not in {i.key.item_id for i in out}]

    async def _get(
        self, entity: ActEntity, item_id: str, *, expand: bool = False
    ) -> dict[str, Any] | None:
        params = {"$expand": "exceptionOccurrences"} if expand else None
        try:
            return await self._json(
                "GET",
                self._path(entity, item_id),
                what=f"reading the {entity} {item_id}",
                params=params,
            )
        except SyncError as exc:
            if _gone(exc):
                return None
            raise

    async def _series(self, master_id: str) -> list[ExchangeItem] | None:
        """A series master and its exceptions (``None`` when the series is gone)."""
        master = await self._get(ActEntity.APPOINTMENT, master_id, expand=True)
        if master is None:
            return None
        exceptions = [e for e in master.get("exceptionOccurrences") or () if isinstance(e, dict)]
        return [
            self._item(ActEntity.APPOINTMENT, master),
            *(self._item(ActEntity.APPOINTMENT, e) for e in exceptions),
        ]

    def _item(self, entity: ActEntity, row: dict[str, Any]) -> ExchangeItem:
        fields = from_graph(entity, row)
        organizer = fields.get("organizer") if entity is ActEntity.APPOINTMENT else None
        series_id = None
        original = None
        deleted: tuple[datetime, ...] = ()
        if entity is ActEntity.APPOINTMENT:
            if row.get("type") in ("exception", "occurrence"):
                series_id = str(row.get("seriesMasterId") or "") or None
                original = _original(row)
                fields["recurrence"] = None
            elif row.get("type") == "seriesMaster":
                deleted = self._cancelled(row)
        return ExchangeItem(
            entity=entity,
            key=ExchangeItemKey(item_id=str(row["id"]), change_key=_change_key(row)),
            fields=fields,
            last_modified=_modified(row),
            organizer=organizer if isinstance(organizer, str) else None,
            series_id=series_id,
            original_start=original,
            deleted_occurrences=deleted,
        )

    def _cancelled(self, master: dict[str, Any]) -> tuple[datetime, ...]:
        """The original starts of a master's cancelled occurrences: Graph names them
        ``OID.{master id}.{date}``; the start is that date at the series' time of day."""
        start = parse_graph_datetime(master.get("start"))
        if start is None:
            return ()
        zone = ZoneInfo(event_zone(master))
        local = start.astimezone(zone)
        out = []
        for entry in master.get("cancelledOccurrences") or ():
            day = str(entry).rsplit(".", 1)[-1]
            try:
                when = datetime.fromisoformat(day).date()
            except ValueError:
                continue
            out.append(datetime.combine(when, local.timetz()).astimezone(UTC))
        return tuple(out)

    async def get_items(self, entity: ActEntity, item_ids: Sequence[str]) -> Sequence[ExchangeItem]:
        if entity is ActEntity.TASK:
            await self._default_list()
        out = []
        for item_id in dict.fromkeys(item_ids):
            row = await self._get(entity, item_id)
            if row is None:
                continue
            if entity is ActEntity.APPOINTMENT and row.get("type") == "seriesMaster":
                row = await self._get(entity, item_id, expand=True) or row
            out.append(self._item(entity, row))
        return out

    # -- writing --------------------------------------------------------------------------

    def _graph(
        self, entity: ActEntity, fields: FieldValues, current: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        try:
            return to_graph(entity, fields, current)
        except FieldError as exc:
            raise self._refuse(entity, str(exc)) from exc

    async def create_item(
        self,
        entity: ActEntity,
        fields: FieldValues,
        *,
        series_id: str | None = None,
        original_start: datetime | None = None,
        record: RecordRef | None = None,
    ) -> ExchangeItemKey:
        if series_id is not None:
            if entity is not ActEntity.APPOINTMENT or original_start is None:
                raise self._refuse(
                    entity, "only an appointment with its original start is an exception"
                )
            return await self._create_exception(fields, series_id, original_start)
        if entity is ActEntity.TASK:
            await self._default_list()
        body = self._graph(entity, fields)
        crm_id = f"{record.entity}:{record.id}" if record is not None else None
        if entity is ActEntity.TASK:
            if crm_id is not None:
                body["linkedResources"] = [
                    {
                        "applicationName": LINKED_APPLICATION,
                        "externalId": crm_id,
                        "displayName": f"CRM {record.entity if record else 'task'}",
                    }
                ]
        elif crm_id is not None:
            body["singleValueExtendedProperties"] = [{"id": CRM_ID_PROPERTY, "value": crm_id}]
        if entity is ActEntity.APPOINTMENT:
            body["transactionId"] = transaction_id(self._mailbox.email_address, record, fields)
        created = await self._json(
            "POST", self._path(entity), what=f"creating a {entity}", json=body, item=True
        )
        return ExchangeItemKey(item_id=str(created["id"]), change_key=_change_key(created))

    async def _create_exception(
        self, fields: FieldValues, series_id: str, original_start: datetime
    ) -> ExchangeItemKey:
        """An exception is the occurrence it replaces, changed: find it among the series'
        instances around its original start and PATCH it."""
        around = original_start.astimezone(UTC)
        found = await self._json(
            "GET",
            f"{self._path(ActEntity.APPOINTMENT, series_id)}/instances",
            what=f"reading the occurrences of the series {series_id}",
            params={
                "startDateTime": utc(around - timedelta(days=1)),
                "endDateTime": utc(around + timedelta(days=2)),
            },
        )
        occurrence = next(
            (r for r in found.get("value") or () if isinstance(r, dict) and _original(r) == around),
            None,
        )
        if occurrence is None:
            raise PermanentError(
                f"the series {series_id} has no occurrence at {original_start.isoformat()}",
                mailbox_id=self._mailbox.id,
                scope=ErrorScope.ITEM,
            )
        changes = {k: v for k, v in fields.items() if k != "recurrence"}
        body = self._graph(ActEntity.APPOINTMENT, changes, occurrence)
        written = await self._json(
            "PATCH",
            self._path(ActEntity.APPOINTMENT, str(occurrence["id"])),
            what=f"changing an occurrence of the series {series_id}",
            json=body,
            item=True,
        )
        return ExchangeItemKey(item_id=str(written["id"]), change_key=_change_key(written))

    async def update_item(
        self, entity: ActEntity, key: ExchangeItemKey, changes: FieldValues
    ) -> ExchangeItemKey:
        if entity is ActEntity.TASK:
            await self._default_list()
        current = await self._get(entity, key.item_id)
        if current is None:
            raise self._refuse(entity, f"the item {key.item_id} is gone")
        if _change_key(current) != key.change_key:
            raise StorageConflictError(
                f"the Graph item {key.item_id} changed since it was read",
                mailbox_id=self._mailbox.id,
            )
        if entity is ActEntity.APPOINTMENT and current.get("type") in ("occurrence", "exception"):
            if changes.get("recurrence") is not None:
                raise self._refuse(entity, "an occurrence of a series has no recurrence")
            changes = {k: v for k, v in changes.items() if k != "recurrence"}
        # Unchanged values are not written: setting a series' pattern again would make
        # Exchange drop its exceptions.
        now = from_graph(entity, current)
        changes = {k: v for k, v in changes.items() if k not in now or now[k] != v}
        if not changes:
            return key
        body = self._graph(entity, changes, current)
        written = await self._json(
            "PATCH",
            self._path(entity, key.item_id),
            what=f"updating the {entity} {key.item_id}",
            json=body,
            item=True,
            if_match=_if_match(key),
        )
        return ExchangeItemKey(item_id=key.item_id, change_key=_change_key(written))

    async def delete_item(
        self, entity: ActEntity, item_id: str, *, send_cancellations: bool = False
    ) -> None:
        if entity is ActEntity.TASK:
            await self._default_list()
        try:
            await self._json(
                "DELETE",
                self._path(entity, item_id),
                what=f"deleting the {entity} {item_id}",
                item=True,
            )
        except SyncError as exc:
            if not _gone(exc):
                raise
