"""The in-memory Exchange store: principals, mailboxes, folder trees, items, change logs.

Every change to a folder's items is appended to that folder's log, and every change to the
folder tree to the mailbox's hierarchy log, each entry with a sequence number from the
mailbox. A sync state names a position in one log; SyncFolderItems and SyncFolderHierarchy
answer the changes after it, folded per item or folder the way Exchange folds them.

The store is not thread-safe by itself: the server holds :attr:`ExchangeStore.lock` around
every request and every host-side helper.
"""

from __future__ import annotations

import base64
import binascii
import copy
import enum
import itertools
import json
import secrets
import struct
import threading
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

import attrs

from serversync.testing.ews._recurrence import occurrence as occurrence_times
from serversync.testing.ews._schema import DISTINGUISHED_FOLDERS
from serversync.testing.ews._xml import EwsError, t, xml_datetime

# What only a series master carries; its occurrences have a Start and End of their own.
_SERIES_ONLY = frozenset(
    {"Recurrence", "FirstOccurrence", "LastOccurrence", "ModifiedOccurrences", "DeletedOccurrences"}
)

__all__ = [
    "Change",
    "ChangeKind",
    "ExchangeStore",
    "Folder",
    "Item",
    "Mailbox",
    "Principal",
    "SyncPosition",
    "fold_changes",
]


class ChangeKind(enum.Enum):
    """A log entry's kind; the values are the SyncFolderItems change elements."""

    CREATE = "Create"
    UPDATE = "Update"
    READ_FLAG = "ReadFlagChange"
    DELETE = "Delete"


@attrs.frozen
class Change:
    """One entry of a change log."""

    seq: int
    kind: ChangeKind
    target: str
    scope: frozenset[str] = frozenset()
    """For hierarchy changes: the folders the change lies under (before and after a move)."""


@attrs.define(eq=False)
class Folder:
    """A folder of one mailbox."""

    id: str
    mailbox: str
    parent_id: str | None
    name: str
    folder_class: str | None
    distinguished: str | None = None
    version: int = 1
    log: list[Change] = attrs.field(factory=list)

    @property
    def changekey(self) -> str:
        return _changekey(self.id, self.version)


@attrs.define(eq=False)
class Item:
    """An item: its kind (the element name: Message, CalendarItem, Contact, Task), its
    properties as the elements a client sent or delivery derived, and what the server keeps
    itself."""

    id: str
    mailbox: str
    folder_id: str
    kind: str
    props: dict[str, ET.Element]
    created: datetime
    received: datetime
    modified: datetime
    mime: bytes | None = None
    version: int = 1
    prop_versions: dict[str, int] = attrs.field(factory=dict)
    master_id: str | None = None
    """For an occurrence of a recurring series: the master's id. Occurrences live beside
    the master, outside the folder's item list and change log, as in Exchange."""
    instance_index: int | None = None
    """For an occurrence: its 1-based index in the series."""
    deleted_occurrences: set[int] = attrs.field(factory=set)
    """For a recurring master: the indexes of the occurrences deleted from the series."""

    @property
    def changekey(self) -> str:
        return _changekey(self.id, self.version)

    @property
    def is_exception(self) -> bool:
        """An occurrence changed on its own (CalendarItemType Exception)."""
        return self.master_id is not None and self.text("CalendarItemType") == "Exception"

    def text(self, name: str, default: str = "") -> str:
        elem = self.props.get(name)
        if elem is None or elem.text is None:
            return default
        return elem.text


@attrs.define(eq=False)
class Mailbox:
    """One mailbox: its folders, items and hierarchy log."""

    address: str
    display_name: str
    folders: dict[str, Folder] = attrs.field(factory=dict)
    distinguished: dict[str, str] = attrs.field(factory=dict)
    items: dict[str, Item] = attrs.field(factory=dict)
    hierarchy_log: list[Change] = attrs.field(factory=list)
    sync_epoch: int = 0
    _seq: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))

    def next_seq(self) -> int:
        return next(self._seq)

    @property
    def root_id(self) -> str:
        return self.distinguished["root"]

    def ancestors(self, folder_id: str) -> frozenset[str]:
        """The folder and every folder above it."""
        found: set[str] = set()
        current: str | None = folder_id
        while current is not None and current not in found:
            found.add(current)
            folder = self.folders.get(current)
            current = folder.parent_id if folder is not None else None
        return frozenset(found)

    def children(self, folder_id: str) -> list[Folder]:
        return [f for f in self.folders.values() if f.parent_id == folder_id]

    def descendants(self, folder_id: str) -> list[Folder]:
        """Every folder below ``folder_id``, parents before children."""
        out: list[Folder] = []
        pending = self.children(folder_id)
        while pending:
            folder = pending.pop(0)
            out.append(folder)
            pending.extend(self.children(folder.id))
        return out

    def items_in(self, folder_id: str) -> list[Item]:
        """The folder's items: occurrences are not among them (a calendar view expands
        them, FindItem and SyncFolderItems list the master)."""
        return [i for i in self.items.values() if i.folder_id == folder_id and not i.master_id]

    def occurrences_of(self, master_id: str) -> list[Item]:
        """The occurrences of a series that have an id so far, by index."""
        found = [i for i in self.items.values() if i.master_id == master_id]
        return sorted(found, key=lambda i: i.instance_index or 0)


@attrs.define(eq=False)
class Principal:
    """Someone who can authenticate: a mailbox user, a service account or an application."""

    login: str
    password: str | None = None
    mailbox: str | None = None
    can_impersonate: bool = False
    full_access: set[str] = attrs.field(factory=set)
    client_secret: str | None = None


@attrs.frozen
class SyncPosition:
    """What a sync state token says: which log of which mailbox, and how far."""

    mailbox: str
    folder_id: str
    hierarchy: bool
    seq: int


def _new_id(kind: bytes) -> str:
    return base64.b64encode(kind + secrets.token_bytes(30)).decode("ascii")


def _changekey(object_id: str, version: int) -> str:
    return base64.b64encode(
        struct.pack(">4sIQ", b"CK01", zlib.crc32(object_id.encode()), version)
    ).decode("ascii")


def changekey_version(object_id: str, changekey: str) -> int | None:
    """The version a change key stands for, or None when it is not one of this object's."""
    try:
        raw = base64.b64decode(changekey, validate=True)
        magic, crc, version = struct.unpack(">4sIQ", raw)
    except (binascii.Error, struct.error):
        return None
    if magic != b"CK01" or crc != zlib.crc32(object_id.encode()):
        return None
    return int(version)


def fold_changes(
    log: Iterable[Change], since: int, limit: int, ignore: frozenset[str] = frozenset()
) -> tuple[list[tuple[ChangeKind, str]], int, bool]:
    """The changes after ``since``, one per target, the way Exchange reports them.

    A target created and deleted in the window is left out; created and changed is one
    Create; changed and deleted is one Delete; only read-flag changes give ReadFlagChange.
    At most ``limit`` targets are taken. Returns the changes, the position reached, and
    whether that is the end of the log.
    """
    firsts: dict[str, ChangeKind] = {}
    lasts: dict[str, ChangeKind] = {}
    updated: set[str] = set()
    position = since
    complete = True
    for change in log:
        if change.seq <= since:
            continue
        if change.target in ignore:
            position = change.seq
            continue
        if change.target not in firsts and len(firsts) >= limit:
            complete = False
            break
        position = change.seq
        firsts.setdefault(change.target, change.kind)
        lasts[change.target] = change.kind
        if change.kind is ChangeKind.UPDATE:
            updated.add(change.target)
    out: list[tuple[ChangeKind, str]] = []
    for target, first in firsts.items():
        last = lasts[target]
        if first is ChangeKind.CREATE:
            if last is not ChangeKind.DELETE:
                out.append((ChangeKind.CREATE, target))
        elif last is ChangeKind.DELETE:
            out.append((ChangeKind.DELETE, target))
        elif first is ChangeKind.DELETE or target in updated:
            out.append((ChangeKind.UPDATE, target))
        else:
            out.append((ChangeKind.READ_FLAG, target))
    return out, position, complete


class ExchangeStore:
    """All principals and mailboxes of one server."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self.lock = threading.RLock()
        self.now = now
        self.principals: dict[str, Principal] = {}
        self.tokens: dict[str, str] = {}
        self.mailboxes: dict[str, Mailbox] = {}
        self._folder_owner: dict[str, str] = {}
        self._item_owner: dict[str, str] = {}
        # Sync states from another server instance are unknown here, as on a real server.
        self._nonce = secrets.token_hex(4)

    # -- principals ---------------------------------------------------------------------

    def principal(self, login: str) -> Principal | None:
        return self.principals.get(login.lower())

    def add_principal(self, principal: Principal) -> Principal:
        key = principal.login.lower()
        if key in self.principals:
            raise ValueError(f"{principal.login} already exists")
        self.principals[key] = principal
        return principal

    def issue_token(self, login: str) -> str:
        if self.principal(login) is None:
            raise KeyError(login)
        token = "ews-" + secrets.token_urlsafe(24)
        self.tokens[token] = login.lower()
        return token

    # -- mailboxes ----------------------------------------------------------------------

    def mailbox(self, address: str) -> Mailbox | None:
        return self.mailboxes.get(address.lower())

    def require_mailbox(self, address: str) -> Mailbox:
        mailbox = self.mailbox(address)
        if mailbox is None:
            raise KeyError(f"no mailbox {address}")
        return mailbox

    def add_mailbox(self, address: str, display_name: str) -> Mailbox:
        key = address.lower()
        if key in self.mailboxes:
            raise ValueError(f"mailbox {address} already exists")
        mailbox = Mailbox(address=address, display_name=display_name)
        self.mailboxes[key] = mailbox
        for distinguished, name, folder_class, parent in DISTINGUISHED_FOLDERS:
            folder = Folder(
                id=_new_id(b"SSF"),
                mailbox=key,
                parent_id=mailbox.distinguished[parent] if parent else None,
                name=name,
                folder_class=folder_class,
                distinguished=distinguished,
            )
            self._register_folder(mailbox, folder)
            mailbox.distinguished[distinguished] = folder.id
        return mailbox

    def _register_folder(self, mailbox: Mailbox, folder: Folder) -> None:
        mailbox.folders[folder.id] = folder
        self._folder_owner[folder.id] = mailbox.address.lower()
        scope = mailbox.ancestors(folder.parent_id) if folder.parent_id else frozenset()
        mailbox.hierarchy_log.append(
            Change(mailbox.next_seq(), ChangeKind.CREATE, folder.id, scope)
        )

    # -- folders ------------------------------------------------------------------------

    def folder(self, folder_id: str) -> Folder | None:
        owner = self._folder_owner.get(folder_id)
        if owner is None:
            return None
        return self.mailboxes[owner].folders.get(folder_id)

    def mailbox_of_folder(self, folder: Folder) -> Mailbox:
        return self.mailboxes[folder.mailbox]

    def create_folder(
        self, mailbox: Mailbox, parent: Folder, name: str, folder_class: str | None
    ) -> Folder:
        if any(f.name.lower() == name.lower() for f in mailbox.children(parent.id)):
            raise EwsError("ErrorFolderExists", "A folder with the specified name already exists.")
        folder = Folder(
            id=_new_id(b"SSF"),
            mailbox=mailbox.address.lower(),
            parent_id=parent.id,
            name=name,
            folder_class=folder_class,
        )
        self._register_folder(mailbox, folder)
        return folder

    def rename_folder(self, folder: Folder, name: str) -> None:
        mailbox = self.mailbox_of_folder(folder)
        folder.name = name
        folder.version += 1
        scope = mailbox.ancestors(folder.parent_id) if folder.parent_id else frozenset()
        mailbox.hierarchy_log.append(
            Change(mailbox.next_seq(), ChangeKind.UPDATE, folder.id, scope)
        )

    def move_folder(self, folder: Folder, parent: Folder) -> None:
        mailbox = self.mailbox_of_folder(folder)
        if folder.id in mailbox.ancestors(parent.id):
            raise EwsError("ErrorMoveCopyFailed", "A folder cannot be moved into itself.")
        before = mailbox.ancestors(folder.parent_id) if folder.parent_id else frozenset()
        folder.parent_id = parent.id
        folder.version += 1
        after = mailbox.ancestors(parent.id)
        # Both the old and the new place see the move as an update of the folder.
        for moved in (folder, *mailbox.descendants(folder.id)):
            scope = (
                before
                | after
                | (mailbox.ancestors(moved.parent_id) if moved.parent_id else frozenset())
            )
            mailbox.hierarchy_log.append(
                Change(mailbox.next_seq(), ChangeKind.UPDATE, moved.id, scope)
            )

    def delete_folder(self, folder: Folder) -> None:
        mailbox = self.mailbox_of_folder(folder)
        doomed = [*reversed(mailbox.descendants(folder.id)), folder]
        for gone in doomed:
            for item in mailbox.items_in(gone.id):
                self.remove_item(item)
            scope = mailbox.ancestors(gone.parent_id) if gone.parent_id else frozenset()
            mailbox.hierarchy_log.append(
                Change(mailbox.next_seq(), ChangeKind.DELETE, gone.id, scope)
            )
        for gone in doomed:
            del mailbox.folders[gone.id]
            del self._folder_owner[gone.id]

    # -- items --------------------------------------------------------------------------

    def item(self, item_id: str) -> Item | None:
        owner = self._item_owner.get(item_id)
        if owner is None:
            return None
        return self.mailboxes[owner].items.get(item_id)

    def add_item(
        self,
        folder: Folder,
        kind: str,
        props: dict[str, ET.Element],
        *,
        mime: bytes | None = None,
        received: datetime | None = None,
    ) -> Item:
        mailbox = self.mailbox_of_folder(folder)
        now = self.now()
        item = Item(
            id=_new_id(b"SSI"),
            mailbox=folder.mailbox,
            folder_id=folder.id,
            kind=kind,
            props=props,
            created=now,
            received=received or now,
            modified=now,
            mime=mime,
            prop_versions=dict.fromkeys(props, 1),
        )
        mailbox.items[item.id] = item
        self._item_owner[item.id] = folder.mailbox
        folder.log.append(Change(mailbox.next_seq(), ChangeKind.CREATE, item.id))
        return item

    def touch_item(self, item: Item, changed: Iterable[str]) -> None:
        """Record a change of ``changed`` properties: new change key, one log entry.

        An occurrence is stored in its master, as in Exchange: the master changes with it.
        """
        names = set(changed)
        item.version += 1
        item.modified = self.now()
        for name in names:
            item.prop_versions[name] = item.version
        mailbox = self.mailboxes[item.mailbox]
        if item.master_id is not None:
            self.touch_item(mailbox.items[item.master_id], {"ModifiedOccurrences"})
            return
        kind = ChangeKind.READ_FLAG if names == {"IsRead"} else ChangeKind.UPDATE
        mailbox.folders[item.folder_id].log.append(Change(mailbox.next_seq(), kind, item.id))

    def move_item(self, item: Item, destination: Folder) -> Item:
        """Move to another folder of the same mailbox. The item gets a new id, as in
        Exchange: the old id is gone (a Delete in the old folder's log)."""
        mailbox = self.mailboxes[item.mailbox]
        old_folder = mailbox.folders[item.folder_id]
        old_folder.log.append(Change(mailbox.next_seq(), ChangeKind.DELETE, item.id))
        for stale in mailbox.occurrences_of(item.id):
            self._forget(stale)
        del mailbox.items[item.id]
        del self._item_owner[item.id]
        item.id = _new_id(b"SSI")
        item.folder_id = destination.id
        item.version += 1
        item.modified = self.now()
        mailbox.items[item.id] = item
        self._item_owner[item.id] = item.mailbox
        destination.log.append(Change(mailbox.next_seq(), ChangeKind.CREATE, item.id))
        return item

    def remove_item(self, item: Item) -> None:
        """Delete an item; an occurrence is deleted from its series (DeletedOccurrences)."""
        mailbox = self.mailboxes[item.mailbox]
        if item.master_id is not None and item.instance_index is not None:
            master = mailbox.items[item.master_id]
            master.deleted_occurrences.add(item.instance_index)
            self._forget(item)
            self.touch_item(master, {"DeletedOccurrences"})
            return
        for stale in mailbox.occurrences_of(item.id):
            self._forget(stale)
        folder = mailbox.folders[item.folder_id]
        folder.log.append(Change(mailbox.next_seq(), ChangeKind.DELETE, item.id))
        del mailbox.items[item.id]
        del self._item_owner[item.id]

    def _forget(self, item: Item) -> None:
        """Drop an item without a trace in any change log (an occurrence)."""
        del self.mailboxes[item.mailbox].items[item.id]
        del self._item_owner[item.id]

    # -- recurring series -----------------------------------------------------------------

    def occurrence(self, master: Item, index: int) -> Item:
        """Occurrence ``index`` of a recurring master, with an id of its own from the first
        time it is asked for. Until it is changed on its own it follows the master."""
        if master.text("CalendarItemType") != "RecurringMaster":
            raise EwsError("ErrorItemNotFound", "The specified object is not a recurring master.")
        if index in master.deleted_occurrences:
            raise EwsError(
                "ErrorCalendarOccurrenceIsDeletedFromRecurrence",
                "The occurrence was deleted from the recurrence.",
            )
        mailbox = self.mailboxes[master.mailbox]
        known = next(
            (o for o in mailbox.occurrences_of(master.id) if o.instance_index == index), None
        )
        if known is not None and known.is_exception:
            return known
        when = occurrence_times(master.props, index)
        if when is None:
            raise EwsError(
                "ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange",
                "Occurrence index is out of recurrence range.",
            )
        props = {
            name: copy.deepcopy(elem)
            for name, elem in master.props.items()
            if name not in _SERIES_ONLY
        }
        start, end = when
        props["Start"] = t("Start", xml_datetime(start))
        props["End"] = t("End", xml_datetime(end))
        props["OriginalStart"] = t("OriginalStart", xml_datetime(start))
        props["CalendarItemType"] = t("CalendarItemType", "Occurrence")
        props["IsRecurring"] = t("IsRecurring", "true")
        if known is not None:
            known.props = props
            return known
        now = self.now()
        item = Item(
            id=_new_id(b"SSO"),
            mailbox=master.mailbox,
            folder_id=master.folder_id,
            kind=master.kind,
            props=props,
            created=now,
            received=now,
            modified=now,
            prop_versions=dict.fromkeys(props, 1),
            master_id=master.id,
            instance_index=index,
        )
        mailbox.items[item.id] = item
        self._item_owner[item.id] = item.mailbox
        return item

    def has_series(self, master: Item) -> bool:
        """Whether a master has occurrences with ids or deleted occurrences."""
        mailbox = self.mailboxes[master.mailbox]
        return bool(master.deleted_occurrences or mailbox.occurrences_of(master.id))

    def reset_series(self, master: Item) -> None:
        """A new pattern or start time: Exchange drops the exceptions and deletions."""
        for item in self.mailboxes[master.mailbox].occurrences_of(master.id):
            self._forget(item)
        master.deleted_occurrences.clear()

    # -- sync states --------------------------------------------------------------------

    def sync_token(self, position: SyncPosition) -> str:
        mailbox = self.require_mailbox(position.mailbox)
        payload = {
            "n": self._nonce,
            "m": position.mailbox.lower(),
            "f": position.folder_id,
            "h": position.hierarchy,
            "e": mailbox.sync_epoch,
            "s": position.seq,
        }
        return base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()

    def read_sync_token(self, token: str, *, folder_id: str, hierarchy: bool) -> SyncPosition:
        """The position a token names; ErrorInvalidSyncStateData unless it was issued by
        this server for this folder (and the mailbox's sync states were not reset since)."""
        invalid = EwsError(
            "ErrorInvalidSyncStateData",
            "Synchronization state data is corrupt or otherwise invalid.",
        )
        try:
            payload = json.loads(base64.b64decode(token, validate=True))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise invalid from None
        if not isinstance(payload, dict) or payload.get("n") != self._nonce:
            raise invalid
        mailbox = self.mailbox(str(payload.get("m", "")))
        if (
            mailbox is None
            or payload.get("f") != folder_id
            or payload.get("h") is not hierarchy
            or payload.get("e") != mailbox.sync_epoch
            or not isinstance(payload.get("s"), int)
        ):
            raise invalid
        return SyncPosition(mailbox.address, folder_id, hierarchy, int(payload["s"]))
