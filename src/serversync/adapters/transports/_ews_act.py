"""Appointments, contacts and tasks over EWS: one session per mailbox on an
:class:`EwsConnection`, the default Calendar, Contacts and Tasks folders, SyncFolderItems
with the sync state as cursor, whole items through GetItem, and writes guarded by change
keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Final, final

from exchangelib import FolderCollection  # type: ignore[import-untyped]
from exchangelib.errors import (  # type: ignore[import-untyped]
    ErrorInvalidChangeKey,
    ErrorInvalidSyncStateData,
    ErrorIrresolvableConflict,
    ErrorItemNotFound,
)
from exchangelib.fields import FieldPath  # type: ignore[import-untyped]
from exchangelib.folders import Calendar, Contacts, Folder, Tasks  # type: ignore[import-untyped]
from exchangelib.items import (  # type: ignore[import-untyped]
    ALL_OCCURRENCES,
    ID_ONLY,
    MOVE_TO_DELETED_ITEMS,
    NEVER_OVERWRITE,
    SEND_TO_ALL_AND_SAVE_COPY,
    SEND_TO_NONE,
)
from exchangelib.properties import (  # type: ignore[import-untyped]
    DistinguishedFolderId,
    ItemId,
    OccurrenceItemId,
    RecurringMasterItemId,
)
from exchangelib.properties import Mailbox as EwsMailbox
from exchangelib.services import DeleteItem, SyncFolderItems  # type: ignore[import-untyped]

from serversync.adapters._ports_docs import documented_by
from serversync.adapters.transports._ews_act_fields import (
    FIELDS,
    ITEM_CLASS,
    FieldError,
    apply_fields,
    iana_name,
    occurrence_index,
    read_fields,
    read_only_fields,
    recurrence_from_ews,
)
from serversync.adapters.transports._ews_connection import EwsConnection, EwsLogin
from serversync.adapters.transports._ews_errors import is_code
from serversync.adapters.transports._ews_stats import EwsStats
from serversync.errors import ErrorScope, PermanentError, StorageConflictError
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

__all__ = ["EwsActSession", "open_act_session"]

# SyncFolderItems returns at most this many changes per call (MaxChangesReturned).
_MAX_CHANGES: Final = 512
_FOLDER_KINDS: Final = {
    ActEntity.APPOINTMENT: Calendar,
    ActEntity.CONTACT: Contacts,
    ActEntity.TASK: Tasks,
}
_FOLDER_FIELDS: Final = ("name", "folder_class")
_EXCEPTION: Final = "Exception"
_OCCURRENCE_TYPES: Final = frozenset({"Occurrence", _EXCEPTION})
_MASTER: Final = "RecurringMaster"


def _utc(value: datetime | None) -> datetime | None:
    # EWSDateTime is a datetime subclass with exchangelib's own time zone class.
    return None if value is None else datetime.fromtimestamp(value.timestamp(), tz=UTC)


@final
@documented_by(ExchangeItemsSession)
class EwsActSession:
    """One mailbox's Calendar, Contacts and Tasks over an open :class:`EwsConnection`.

    Every call runs in the connection's worker thread; reads are bounded by the ``fetch``
    timeout, writes by ``command``.
    """

    def __init__(self, connection: EwsConnection, *, timeouts: Timeouts) -> None:
        self._connection = connection
        self._timeouts = timeouts
        self._folders: dict[ActEntity, Any] = {}

    @property
    def _account(self) -> Any:
        return self._connection.account

    # -- in the worker thread ---------------------------------------------------------------

    def _folder(self, entity: ActEntity) -> Any:
        """The entity's default folder; the three are fetched in one GetFolder, once."""
        if not self._folders:
            account = self._account
            owner = EwsMailbox(email_address=account.primary_smtp_address)
            root = self._connection.well_known.root
            wanted = [
                kind(
                    root=root,
                    _distinguished_id=DistinguishedFolderId(
                        id=kind.DISTINGUISHED_FOLDER_ID, mailbox=owner
                    ),
                )
                for kind in _FOLDER_KINDS.values()
            ]
            fields = {FieldPath(field=Folder.get_field_by_fieldname(f)) for f in _FOLDER_FIELDS}
            found = list(FolderCollection(account=account, folders=wanted).get_folders(fields))
            for folder in found:
                if isinstance(folder, Exception):
                    raise folder
            self._folders = dict(zip(_FOLDER_KINDS, found, strict=True))
        return self._folders[entity]

    def _fetch(self, entity: ActEntity, ids: Sequence[Any]) -> list[Any]:
        """Whole items (the mapped fields); a missing one is left out."""
        if not ids:
            return []
        found = self._account.fetch(
            list(ids), folder=self._folder(entity), only_fields=read_only_fields(entity)
        )
        out = []
        for item in found:
            if isinstance(item, Exception):
                if is_code(item, "ErrorItemNotFound"):
                    continue
                raise item
            out.append(item)
        return out

    def _masters_of(self, exceptions: Sequence[Any]) -> dict[str, str]:
        """Exception id -> its recurring master's id (GetItem by RecurringMasterItemId)."""
        if not exceptions:
            return {}
        ids = [RecurringMasterItemId(id=e.id, changekey=e.changekey) for e in exceptions]
        found = self._account.fetch(
            ids, folder=self._folder(ActEntity.APPOINTMENT), only_fields=["type"]
        )
        masters = {}
        for exception, master in zip(exceptions, found, strict=True):
            if isinstance(master, Exception):
                raise master
            masters[exception.id] = master.id
        return masters

    def _items(self, entity: ActEntity, items: Sequence[Any]) -> list[ExchangeItem]:
        """serversync items for exchangelib ones; a recurring master's exceptions follow
        it, each with ``series_id`` and ``original_start``."""
        out: list[ExchangeItem] = []
        series: dict[str, str] = {}
        if entity is ActEntity.APPOINTMENT:
            lone = [i for i in items if i.type == _EXCEPTION]
            series = self._masters_of(lone)
            for item in items:
                if item.type == _MASTER and item.modified_occurrences:
                    ids = [ItemId(id=o.id) for o in item.modified_occurrences]
                    fetched = self._fetch(entity, ids)
                    series.update((e.id, item.id) for e in fetched)
                    out.append(self._item(entity, item, None))
                    out += [self._item(entity, e, item.id) for e in fetched]
                    continue
                out.append(self._item(entity, item, series.get(item.id)))
            return _unique(out)
        return [self._item(entity, item, None) for item in items]

    def _item(self, entity: ActEntity, item: Any, series_id: str | None) -> ExchangeItem:
        fields = read_fields(entity, item)
        organizer = fields.get("organizer") if entity is ActEntity.APPOINTMENT else None
        original = _utc(item.original_start) if series_id is not None else None
        if series_id is not None:
            fields["recurrence"] = None
        deleted = tuple(
            when
            for when in (_utc(o.start) for o in getattr(item, "deleted_occurrences", None) or ())
            if when is not None
        )
        return ExchangeItem(
            entity=entity,
            key=ExchangeItemKey(item_id=item.id, change_key=item.changekey),
            fields=fields,
            last_modified=_utc(item.last_modified_time) or datetime.now(UTC),
            organizer=organizer if isinstance(organizer, str) else None,
            series_id=series_id,
            original_start=original,
            deleted_occurrences=deleted,
        )

    def _sync_in_thread(
        self, entity: ActEntity, state: str | None, limit: int
    ) -> ExchangeItemChanges:
        folder = self._folder(entity)
        reset = False
        try:
            page, service = self._sync_page(folder, state, limit)
        except ErrorInvalidSyncStateData:
            if not state:
                raise
            # Exchange no longer knows the state: list the folder from the start.
            reset = True
            page, service = self._sync_page(folder, None, limit)
        changed: dict[str, None] = {}
        deleted: dict[str, None] = {}
        for kind, item in page:
            if kind in (SyncFolderItems.CREATE, SyncFolderItems.UPDATE):
                changed[item.id] = None
                deleted.pop(item.id, None)
            elif kind == SyncFolderItems.DELETE:
                deleted[item.id] = None
                changed.pop(item.id, None)
        items = self._fetch(entity, [ItemId(id=i) for i in changed])
        gone = set(changed) - {i.id for i in items}
        return ExchangeItemChanges(
            entity=entity,
            changed=tuple(self._items(entity, items)),
            # Changed and deleted before it was read: gone as well.
            deleted=(*deleted, *(i for i in changed if i in gone)),
            state=service.sync_state or state or "",
            reset=reset,
            more=not service.includes_last_item_in_range,
        )

    def _sync_page(self, folder: Any, state: str | None, limit: int) -> tuple[list[Any], Any]:
        """One SyncFolderItems call (exchangelib's sync_items() would page to the end)."""
        service = SyncFolderItems(account=self._account)
        page = list(
            service.call(
                folder=folder,
                shape=ID_ONLY,
                additional_fields=set(),
                sync_state=state or None,
                ignore=None,
                max_changes_returned=max(1, min(limit, _MAX_CHANGES)),
                sync_scope=None,
            )
        )
        return page, service

    def _create_in_thread(self, entity: ActEntity, fields: FieldValues) -> ExchangeItemKey:
        item = ITEM_CLASS[entity](account=self._account, folder=self._folder(entity))
        self._apply(entity, item, fields)
        # The CRM invited the attendees already (or will): Exchange sends nothing.
        item.save(send_meeting_invitations=SEND_TO_NONE)
        return ExchangeItemKey(item_id=item.id, change_key=item.changekey)

    def _apply(self, entity: ActEntity, item: Any, fields: FieldValues) -> list[str]:
        try:
            return apply_fields(entity, item, fields)
        except FieldError as exc:
            raise self._refuse(entity, str(exc)) from exc

    def _refuse(self, entity: ActEntity, why: str) -> PermanentError:
        return PermanentError(
            f"cannot write the {entity} to Exchange: {why}",
            mailbox_id=self._connection.mailbox_id,
            scope=ErrorScope.ITEM,
        )

    def _conflict(
        self, key: ExchangeItemKey, why: str, code: str | None = None
    ) -> StorageConflictError:
        return StorageConflictError(
            f"the Exchange item {key.item_id} changed since it was read ({why})",
            mailbox_id=self._connection.mailbox_id,
            server_code=code,
        )

    def _update_in_thread(
        self, entity: ActEntity, key: ExchangeItemKey, changes: FieldValues
    ) -> ExchangeItemKey:
        if key.original_start is not None:
            item = self._occurrence(entity, key)
        else:
            [item] = self._fetch(entity, [ItemId(id=key.item_id)]) or [None]
            if item is None:
                raise ErrorItemNotFound("The specified object was not found in the store.")
            if item.changekey != key.change_key:
                raise self._conflict(key, "its change key is not the one given")
        current = read_fields(entity, item)
        if entity is ActEntity.APPOINTMENT and item.type in _OCCURRENCE_TYPES:
            if changes.get("recurrence") is not None:
                raise self._refuse(entity, "an occurrence of a series has no recurrence")
            current["recurrence"] = None
        # Unchanged values are not written: setting a series' pattern again would make
        # Exchange drop its exceptions.
        changes = {k: v for k, v in changes.items() if k not in current or current[k] != v}
        changed = self._apply(entity, item, changes)
        if not changed:
            return ExchangeItemKey(item_id=item.id, change_key=item.changekey)
        try:
            item.save(
                update_fields=changed,
                conflict_resolution=NEVER_OVERWRITE,
                send_meeting_invitations=SEND_TO_NONE,
            )
        except (ErrorIrresolvableConflict, ErrorInvalidChangeKey) as exc:
            code = type(exc).__name__
            raise self._conflict(key, "Exchange refused the change key", code) from exc
        return ExchangeItemKey(item_id=item.id, change_key=item.changekey)

    def _occurrence(self, entity: ActEntity, key: ExchangeItemKey) -> Any:
        """The occurrence of a recurring master that ``key`` names, whole."""
        assert key.original_start is not None
        [master] = self._fetch(entity, [ItemId(id=key.item_id)]) or [None]
        if master is None:
            raise ErrorItemNotFound("The specified object was not found in the store.")
        if key.change_key and master.changekey != key.change_key:
            raise self._conflict(key, "the series changed")
        zone = iana_name(master._start_timezone) if master._start_timezone else "UTC"
        recurrence = recurrence_from_ews(master.recurrence, zone) if master.recurrence else None
        index = occurrence_index(recurrence, key.original_start) if recurrence else None
        if index is None:
            raise PermanentError(
                f"the series {key.item_id} has no occurrence at {key.original_start.isoformat()}",
                mailbox_id=self._connection.mailbox_id,
                scope=ErrorScope.ITEM,
            )
        target = OccurrenceItemId(id=master.id, changekey=master.changekey, instance_index=index)
        [occurrence] = self._fetch(entity, [target]) or [None]
        found = occurrence.original_start or occurrence.start if occurrence is not None else None
        if found is None or _utc(found) != key.original_start.astimezone(UTC):
            raise PermanentError(
                f"occurrence {index} of the series {key.item_id} does not start at "
                f"{key.original_start.isoformat()}",
                mailbox_id=self._connection.mailbox_id,
                scope=ErrorScope.ITEM,
            )
        return occurrence

    def _delete_in_thread(self, item_id: str, send_cancellations: bool) -> None:
        try:
            DeleteItem(account=self._account).get(
                items=[ItemId(id=item_id)],
                delete_type=MOVE_TO_DELETED_ITEMS,
                send_meeting_cancellations=(
                    SEND_TO_ALL_AND_SAVE_COPY if send_cancellations else SEND_TO_NONE
                ),
                affected_task_occurrences=ALL_OCCURRENCES,
                suppress_read_receipts=True,
                expect_result=None,
            )
        except ErrorItemNotFound:
            return

    # -- on the event loop --------------------------------------------------------------------

    def held_fields(self, entity: ActEntity) -> frozenset[str]:
        return frozenset(FIELDS[entity])

    async def sync_items(
        self, entity: ActEntity, state: str | None, *, limit: int
    ) -> ExchangeItemChanges:
        return await self._connection.call(
            f"syncing the {entity} folder",
            lambda: self._sync_in_thread(entity, state, limit),
            limit=self._timeouts.fetch,
        )

    async def get_items(self, entity: ActEntity, item_ids: Sequence[str]) -> Sequence[ExchangeItem]:
        if not item_ids:
            return []

        def get() -> list[ExchangeItem]:
            return self._items(entity, self._fetch(entity, [ItemId(id=i) for i in item_ids]))

        wanted = set(item_ids)
        items = await self._connection.call(
            f"reading {len(item_ids)} {entity} items", get, limit=self._timeouts.fetch
        )
        return [i for i in items if i.key.item_id in wanted]

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
            # An exception of a series is not created in EWS: the occurrence it replaces
            # exists already and becomes an exception when it is changed.
            if entity is not ActEntity.APPOINTMENT or original_start is None:
                raise self._refuse(
                    entity, "only an appointment with its original start is an exception"
                )
            occurrence = ExchangeItemKey(
                item_id=series_id, change_key="", original_start=original_start
            )
            return await self.update_item(entity, occurrence, fields)
        return await self._connection.call(
            f"creating a {entity}",
            lambda: self._create_in_thread(entity, fields),
            limit=self._timeouts.command,
            item=True,
        )

    async def update_item(
        self, entity: ActEntity, key: ExchangeItemKey, changes: FieldValues
    ) -> ExchangeItemKey:
        return await self._connection.call(
            f"updating the {entity} {key.item_id}",
            lambda: self._update_in_thread(entity, key, changes),
            limit=self._timeouts.command,
            item=True,
        )

    async def delete_item(
        self, entity: ActEntity, item_id: str, *, send_cancellations: bool = False
    ) -> None:
        cancel = send_cancellations and entity is ActEntity.APPOINTMENT
        await self._connection.call(
            f"deleting the {entity} {item_id}",
            lambda: self._delete_in_thread(item_id, cancel),
            limit=self._timeouts.command,
            item=True,
        )


def _unique(items: list[ExchangeItem]) -> list[ExchangeItem]:
    """Each item once (an exception can come with its master and on its own)."""
    seen: set[str] = set()
    out = []
    for item in items:
        if item.key.item_id not in seen:
            seen.add(item.key.item_id)
            out.append(item)
    return out


@asynccontextmanager
async def open_act_session(
    login: EwsLogin, *, mailbox_id: str, timeouts: Timeouts, stats: EwsStats
) -> AsyncIterator[EwsActSession]:
    """Connect (the well-known folders are fetched, which checks the credentials) and
    yield a session; the connection closes on exit."""
    connection = await EwsConnection.open(
        login, mailbox_id=mailbox_id, timeouts=timeouts, stats=stats
    )
    try:
        yield EwsActSession(connection, timeouts=timeouts)
    finally:
        await connection.aclose()
