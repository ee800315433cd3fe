"""Reading a mailbox over EWS: folders, SyncFolderItems cursors, headers first, MIME for the
messages that are tracked, and categories for the ones processed."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final, final

import attrs
from exchangelib import FolderCollection, Q  # type: ignore[import-untyped]
from exchangelib.errors import (  # type: ignore[import-untyped]
    ErrorFolderExists,
    ErrorInvalidSyncStateData,
)
from exchangelib.fields import FieldPath  # type: ignore[import-untyped]
from exchangelib.folders import Folder, Messages  # type: ignore[import-untyped]
from exchangelib.folders.queryset import DEEP, SHALLOW  # type: ignore[import-untyped]
from exchangelib.items import ID_ONLY, MESSAGE_ITEM_CLASSES  # type: ignore[import-untyped]
from exchangelib.properties import ItemId  # type: ignore[import-untyped]
from exchangelib.services import SyncFolderItems  # type: ignore[import-untyped]

from serversync.adapters._ports_docs import documented_by
from serversync.adapters.transports._ews_connection import EwsConnection
from serversync.adapters.transports._ews_errors import is_code, translate
from serversync.adapters.transports._ews_headers import HEADER_FIELDS, header_block
from serversync.adapters.transports._ews_stats import EwsStats
from serversync.errors import ConfigurationError, ErrorScope, MessageRejectedError, SyncError
from serversync.model import (
    INBOX,
    Checkpoint,
    EwsCheckpoint,
    IncomingBatch,
    Mailbox,
    RawHeaders,
    RawMessage,
    RemoteFolder,
    RemoteMark,
    RemoteMessageRef,
)
from serversync.ports import BatchMessageSession, IncomingMailSession
from serversync.settings import Timeouts

__all__ = ["EwsIncomingSession", "IncomingOptions"]

logger = logging.getLogger(__name__)

# SyncFolderItems returns at most this many changes per call (MaxChangesReturned).
_MAX_CHANGES: Final = 512
# SyncFolderItems answers read per listing, at most: a folder with many changes that are no
# new mail (read flags, categories) is worked through over several listings.
_MAX_PAGES: Final = 10
_SUMMARY_FIELDS: Final = ("datetime_received", "size")
_FOLDER_FIELDS: Final = ("name", "parent_folder_id", "folder_class")
# A cursor in the middle of a batch: the sync state before the batch, then the ids of the
# batch's messages already processed, one per line (sync states and ids never hold one).
_SEPARATOR: Final = "\n"


@attrs.frozen(kw_only=True)
class IncomingOptions:
    """How processed messages are tagged and where undeliverable ones go."""

    timeouts: Timeouts
    tracked_category: str
    undeliverable_category: str
    undeliverable_folder_name: str
    move_undeliverable: bool


@attrs.frozen
class _Cursor:
    """A SyncFolderItems sync state ("" before the first sync), and the ids of messages
    after it that were processed already: a resumed listing skips them (SyncFolderItems
    ``Ignore``), so a cursor can stand between two messages of one SyncFolderItems answer."""

    sync_state: str
    done: tuple[str, ...] = ()

    @classmethod
    def of(cls, checkpoint: EwsCheckpoint | None) -> _Cursor:
        if checkpoint is None:
            return cls("")
        state, *done = checkpoint.sync_state.split(_SEPARATOR)
        return cls(state, tuple(done))

    def checkpoint(self) -> EwsCheckpoint:
        return EwsCheckpoint(sync_state=_SEPARATOR.join((self.sync_state, *self.done)))


@attrs.frozen
class _Page:
    """One SyncFolderItems answer: its new messages and the sync state after it."""

    created: list[Any]
    sync_state: str
    complete: bool


@attrs.frozen
class _Listed:
    """New messages, each with the cursor after it, and the cursor after them all."""

    items: list[tuple[Any, _Cursor]]
    end: _Cursor
    complete: bool
    reset: bool


def _received(value: datetime | None) -> datetime | None:
    # EWSDateTime is a datetime subclass with exchangelib's own time zone class.
    return None if value is None else datetime.fromtimestamp(value.timestamp(), tz=UTC)


def _is_mail_folder(folder: Any) -> bool:
    kind = folder.folder_class
    return kind is None or kind == "IPF.Note" or kind.startswith(("IPF.Note.", "IPF.Imap"))


@final
@documented_by(IncomingMailSession, BatchMessageSession)
class EwsIncomingSession:
    """An open EWS connection to one mailbox, for reading mail."""

    def __init__(
        self,
        connection: EwsConnection,
        *,
        mailbox: Mailbox,
        options: IncomingOptions,
        stats: EwsStats,
    ) -> None:
        self._connection = connection
        self._mailbox = mailbox
        self._options = options
        self._stats = stats
        self._undeliverable: Any = None

    @property
    def _account(self) -> Any:
        return self._connection.account

    def _folder(self, folder: str) -> Any:
        known = self._connection.well_known
        if folder.upper() == INBOX:
            return known.inbox
        return Folder(root=known.root, id=folder)

    # -- folders ------------------------------------------------------------------------------

    async def list_folders(self) -> Sequence[RemoteFolder]:
        known = self._connection.well_known

        def find() -> list[Any]:
            fields = {FieldPath(field=Folder.get_field_by_fieldname(f)) for f in _FOLDER_FIELDS}
            everything = FolderCollection(account=self._account, folders=[known.top])
            return [
                f
                for f in everything.find_folders(depth=DEEP, additional_fields=fields)
                if not isinstance(f, Exception)
            ]

        found = await self._connection.call(
            "listing folders", find, limit=self._options.timeouts.command
        )
        inbox_id, top_id = known.inbox.id, known.top.id

        def local(folder_id: str | None) -> str | None:
            # The Inbox is INBOX to the engine (folder rules apply under it); folders right
            # under the top of the mailbox have no parent.
            if folder_id is None or folder_id == top_id:
                return None
            return INBOX if folder_id == inbox_id else folder_id

        folders = [
            RemoteFolder(
                id=local(f.id) or f.id,
                name=f.name or "",
                parent_id=local(f.parent_folder_id.id if f.parent_folder_id else None),
                special_use=known.special.get(f.id),
            )
            for f in found
            if f.id == inbox_id or _is_mail_folder(f)
        ]
        if not any(f.id == INBOX for f in folders):
            folders.insert(0, RemoteFolder(id=INBOX, name=known.inbox.name or "Inbox"))
        return folders

    # -- listing ------------------------------------------------------------------------------

    async def list_new(
        self, folder: str, checkpoint: Checkpoint | None, *, limit: int
    ) -> IncomingBatch:
        if checkpoint is not None and not isinstance(checkpoint, EwsCheckpoint):
            raise ConfigurationError(
                f"an EWS folder needs an EWS cursor, not {type(checkpoint).__name__}",
                mailbox_id=self._mailbox.id,
            )
        cursor = _Cursor.of(checkpoint)
        target = self._folder(folder)
        listed = await self._connection.call(
            f"listing new messages in folder {folder}",
            lambda: self._list(target, cursor, limit),
            limit=self._options.timeouts.command,
        )
        refs = tuple(
            RemoteMessageRef(
                folder=folder,
                remote_id=item.id,
                received_at=_received(item.datetime_received),
                size=item.size,
            )
            for item, _ in listed.items
        )
        return IncomingBatch(
            folder=folder,
            refs=refs,
            checkpoints=tuple(after.checkpoint() for _, after in listed.items),
            end=listed.end.checkpoint(),
            reset=listed.reset,
            more=not listed.complete,
        )

    def _list(self, folder: Any, cursor: _Cursor, limit: int) -> _Listed:
        """Up to ``limit`` new messages after ``cursor``, over as many SyncFolderItems
        answers as it takes (answers also carry changes that are no new mail), at most
        :data:`_MAX_PAGES` of them."""
        limit = min(limit, _MAX_CHANGES)
        taken: list[tuple[Any, _Cursor]] = []
        reset = False
        for _ in range(_MAX_PAGES):
            try:
                page = self._page(folder, cursor, limit)
            except ErrorInvalidSyncStateData:
                if cursor == _Cursor("") or taken:
                    raise
                # Exchange lost the state: list the folder from the start; dedupe by
                # Message-ID keeps the second pass free of duplicates.
                cursor, reset = _Cursor(""), True
                continue
            room = limit - len(taken)
            # Exchange sometimes answers with the state it was given; that state then says
            # nothing about this answer's messages.
            moved = page.sync_state != cursor.sync_state
            for n, item in enumerate(page.created[:room]):
                last = n == len(page.created) - 1
                # After an answer's last message its new sync state is exact; before it,
                # the old state and the messages taken so far (the rest come back).
                done = (*cursor.done, *(i.id for i in page.created[: n + 1]))
                after = (
                    _Cursor(page.sync_state) if last and moved else _Cursor(cursor.sync_state, done)
                )
                taken.append((item, after))
            if len(page.created) > room or not moved:
                end = taken[-1][1] if page.created else cursor
                complete = page.complete and len(page.created) <= room
                return _Listed(items=taken, end=end, complete=complete, reset=reset)
            cursor = _Cursor(page.sync_state)
            if page.complete or len(taken) == limit:
                return _Listed(items=taken, end=cursor, complete=page.complete, reset=reset)
        return _Listed(items=taken, end=cursor, complete=False, reset=reset)

    def _page(self, folder: Any, cursor: _Cursor, limit: int) -> _Page:
        """One SyncFolderItems call (exchangelib's sync_items() would page to the end)."""
        service = SyncFolderItems(account=self._account)
        changes = service.call(
            folder=folder,
            shape=ID_ONLY,
            additional_fields=set(folder.normalize_fields(fields=_SUMMARY_FIELDS)),
            sync_state=cursor.sync_state or None,
            ignore=[ItemId(id=i) for i in cursor.done] or None,
            max_changes_returned=limit,
            sync_scope=None,
        )
        # Only new items are new mail: updates (our own categories among them), read-flag
        # changes and deletions are not.
        created = [
            item
            for kind, item in changes
            if kind == SyncFolderItems.CREATE and isinstance(item, MESSAGE_ITEM_CLASSES)
        ]
        return _Page(
            created=created,
            sync_state=service.sync_state or cursor.sync_state,
            complete=bool(service.includes_last_item_in_range),
        )

    # -- fetching -----------------------------------------------------------------------------

    def _fetch(self, ids: Sequence[str], fields: Sequence[str]) -> list[Any]:
        inbox = self._connection.well_known.inbox  # validates the fields; any folder would do
        return list(
            self._account.fetch([ItemId(id=i) for i in ids], folder=inbox, only_fields=fields)
        )

    async def fetch_headers(self, refs: Sequence[RemoteMessageRef]) -> Sequence[RawHeaders]:
        if not refs:
            return []
        items = await self._connection.call(
            f"fetching the headers of {len(refs)} messages",
            lambda: self._fetch([r.remote_id for r in refs], HEADER_FIELDS),
            limit=self._options.timeouts.fetch,
        )
        out = []
        for ref, item in zip(refs, items, strict=True):
            # An item gone since it was listed (or unreadable) comes back empty: the engine
            # records it as unreadable and moves on instead of failing the batch.
            data = b"" if isinstance(item, Exception) else header_block(item)
            out.append(RawHeaders(ref=ref, data=data))
        self._stats._count("headers_fetched", sum(1 for h in out if h.data))
        return out

    async def fetch_message(self, ref: RemoteMessageRef) -> RawMessage:
        what = f"fetching message {ref.remote_id}"
        (item,) = await self._connection.call(
            what,
            lambda: self._fetch([ref.remote_id], ["mime_content"]),
            limit=self._options.timeouts.fetch,
            item=True,
        )
        got = self._mime_of(ref, item)
        if isinstance(got, SyncError):
            raise got
        self._stats._count("messages_fetched")
        return got

    async def fetch_messages(
        self, refs: Sequence[RemoteMessageRef]
    ) -> Sequence[RawMessage | SyncError]:
        if not refs:
            return []
        what = f"fetching {len(refs)} messages"
        # One GetItem with MIME content for up to 100 items (exchangelib's chunks).
        items = await self._connection.call(
            what,
            lambda: self._fetch([r.remote_id for r in refs], ["mime_content"]),
            limit=self._options.timeouts.fetch,
        )
        out: list[RawMessage | SyncError] = []
        for n, (ref, item) in enumerate(zip(refs, items, strict=True)):
            got = self._mime_of(ref, item)
            if isinstance(got, SyncError) and got.scope is not ErrorScope.ITEM:
                # Exchange is busy, or refuses the login: not this message alone.
                out += [got] * (len(refs) - n)
                break
            out.append(got)
        self._stats._count("messages_fetched", sum(isinstance(m, RawMessage) for m in out))
        return out

    def _mime_of(self, ref: RemoteMessageRef, item: Any) -> RawMessage | SyncError:
        """The message in a GetItem answer's item, or the error of that item alone."""
        what = f"fetching message {ref.remote_id}"
        if isinstance(item, Exception):
            return translate(item, what, mailbox_id=self._mailbox.id, item=True)
        if not item.mime_content:
            return MessageRejectedError(
                f"{what}: Exchange returned no MIME content", mailbox_id=self._mailbox.id
            )
        return RawMessage(ref=ref, data=bytes(item.mime_content))

    # -- marking ------------------------------------------------------------------------------

    async def mark(self, refs: Sequence[RemoteMessageRef], mark: RemoteMark) -> None:
        if not refs:
            return
        options = self._options
        category = (
            options.tracked_category
            if mark is RemoteMark.TRACKED
            else options.undeliverable_category
        )
        move = mark is RemoteMark.UNDELIVERABLE and options.move_undeliverable
        ids = list(dict.fromkeys(r.remote_id for r in refs))
        await self._connection.call(
            f"tagging {len(ids)} messages {category!r}",
            lambda: self._tag(ids, category, move=move),
            limit=options.timeouts.command,
            item=len(ids) == 1,
        )

    def _tag(self, ids: list[str], category: str, *, move: bool) -> None:
        present = []
        updates = []
        for item in self._fetch(ids, ["categories"]):
            if isinstance(item, Exception):
                self._skipped(item, "tag")
                continue
            present.append(item.id)
            categories = list(item.categories or ())
            if category not in categories:
                # Categories are one list: the item keeps the ones it had.
                item.categories = [*categories, category]
                updates.append((item, ["categories"]))
        for result in self._account.bulk_update(updates) if updates else ():
            if isinstance(result, Exception):
                self._skipped(result, "tag")
        if move and present:
            target = self._undeliverable_folder()
            for result in self._account.bulk_move([ItemId(id=i) for i in present], target):
                if isinstance(result, Exception):
                    self._skipped(result, "move")

    def _skipped(self, error: Exception, action: str) -> None:
        """One message could not be tagged or moved. The cursor, not the tag, keeps it from
        being imported again, so the others go on; failing the run would stop the mailbox
        on this message at every cycle."""
        if not is_code(error, "ErrorItemNotFound"):  # moved or deleted meanwhile
            logger.warning(
                "mailbox %s: could not %s a message: %s: %s",
                self._mailbox.id,
                action,
                type(error).__name__,
                error,
            )

    def _undeliverable_folder(self) -> Any:
        """The mailbox's Undeliverable folder: its recorded id, else the folder of that name
        under the Inbox, created when missing."""
        if self._undeliverable is not None:
            return self._undeliverable
        known = self._connection.well_known
        if self._mailbox.undeliverable_folder:
            self._undeliverable = Folder(root=known.root, id=self._mailbox.undeliverable_folder)
            return self._undeliverable
        name = self._options.undeliverable_folder_name
        folder = self._child_of_inbox(name)
        if folder is None:
            try:
                folder = Messages(parent=known.inbox, name=name)
                folder.save()
            except ErrorFolderExists:
                folder = self._child_of_inbox(name)  # another session created it meanwhile
                if folder is None:
                    raise
        self._undeliverable = folder
        return folder

    def _child_of_inbox(self, name: str) -> Any:
        inbox = self._connection.well_known.inbox
        children = FolderCollection(account=self._account, folders=[inbox])
        found = children.find_folders(q=Q(name=name), depth=SHALLOW)
        return next((f for f in found if not isinstance(f, Exception)), None)
