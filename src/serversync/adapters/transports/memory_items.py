"""An in-process Exchange for appointments, contacts and tasks, and the ACT transport over it.

It behaves like Exchange where sync depends on it: item ids that never change, a change key
that changes on every write (a write with an older one fails as a conflict), per-folder sync
states that page through changes (``more``), that report deletes, and that Exchange may
forget (an unknown state lists everything again, with ``reset``). Deleting a recurring
master deletes its exceptions. Tests play the Outlook user with
:meth:`~InMemoryExchange.add_item`, :meth:`~InMemoryExchange.edit_item` and
:meth:`~InMemoryExchange.remove_item`, and inject faults through ``faults`` or
:meth:`~InMemoryExchange.reject_writes_where`.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import final

import attrs

from serversync.act.fields import FIELDS
from serversync.adapters._faults import FaultPlan, FaultPoint
from serversync.errors import (
    AuthenticationError,
    MessageRejectedError,
    StorageConflictError,
    SyncError,
)
from serversync.model import Credentials, EmailServerProfile, Mailbox
from serversync.model.act import (
    ActEntity,
    ExchangeItem,
    ExchangeItemChanges,
    ExchangeItemKey,
    FieldValue,
    FieldValues,
)
from serversync.model.ids import RecordRef
from serversync.ports import Clock, ExchangeItemsSession, ExchangeItemsTransport

__all__ = ["InMemoryExchange", "InMemoryExchangeItemsTransport", "SentCancellation"]


@attrs.frozen(kw_only=True)
class SentCancellation:
    """A meeting deleted with cancellations sent to its attendees."""

    address: str
    item: ExchangeItem


@attrs.define
class _Folder:
    epoch: int
    seq: int = 0
    items: dict[str, ExchangeItem] = attrs.field(factory=dict)
    log: dict[str, tuple[int, bool]] = attrs.field(factory=dict)
    """Item id → (sequence number of its last change, whether that change deleted it)."""

    def touch(self, item_id: str, *, deleted: bool) -> None:
        self.seq += 1
        self.log[item_id] = (self.seq, deleted)


@attrs.define
class _Account:
    password: str
    folders: dict[ActEntity, _Folder]


@final
class InMemoryExchange:
    """Users' calendars, contacts and tasks folders in dicts, with Exchange's ids, change
    keys and sync states."""

    def __init__(self, *, clock: Clock | None = None, faults: FaultPlan | None = None) -> None:
        self._clock = clock
        self.faults = faults or FaultPlan()
        self._accounts: dict[str, _Account] = {}
        self._ids = itertools.count(1)
        self._keys = itertools.count(1)
        self._epochs = itertools.count(1)
        self._rejections: list[tuple[Callable[[FieldValues], bool], Callable[[], SyncError]]] = []
        self.cancellations: list[SentCancellation] = []
        """Meetings deleted with cancellations, in order."""

    def _now(self) -> datetime:
        return self._clock.now() if self._clock is not None else datetime.now(UTC)

    # -- setup and the Outlook user's side -----------------------------------------------

    def add_mailbox(self, address: str, password: str = "secret") -> None:
        """A mailbox whose credentials are its address and ``password``."""
        self._accounts[address.lower()] = _Account(
            password=password,
            folders={entity: _Folder(epoch=next(self._epochs)) for entity in ActEntity},
        )

    def set_password(self, address: str, password: str) -> None:
        """Change a mailbox's password (later logins with the old one fail)."""
        self._account(address).password = password

    def _account(self, address: str) -> _Account:
        try:
            return self._accounts[address.lower()]
        except KeyError:
            raise KeyError(f"no mailbox {address!r} in the in-memory Exchange") from None

    def _folder(self, address: str, entity: ActEntity) -> _Folder:
        return self._account(address).folders[entity]

    def items(self, address: str, entity: ActEntity) -> list[ExchangeItem]:
        """Every item of a folder, oldest first."""
        return list(self._folder(address, entity).items.values())

    def item(self, address: str, entity: ActEntity, item_id: str) -> ExchangeItem | None:
        """One item, or ``None`` when it does not exist."""
        return self._folder(address, entity).items.get(item_id)

    def add_item(
        self,
        address: str,
        entity: ActEntity,
        fields: FieldValues,
        *,
        organizer: str | None = None,
        series_id: str | None = None,
        original_start: datetime | None = None,
    ) -> ExchangeItem:
        """Create an item as the mailbox's user would in Outlook."""
        folder = self._folder(address, entity)
        if series_id is not None and series_id not in folder.items:
            raise MessageRejectedError(
                f"no recurring master {series_id}", server_code="ErrorItemNotFound"
            )
        if organizer is None and entity is ActEntity.APPOINTMENT:
            value = fields.get("organizer")
            organizer = value if isinstance(value, str) else address.lower()
        item = ExchangeItem(
            entity=entity,
            key=ExchangeItemKey(item_id=f"AAMkA{next(self._ids):08d}", change_key=self._key()),
            fields=dict(fields),
            last_modified=self._now(),
            organizer=organizer,
            series_id=series_id,
            original_start=original_start,
        )
        folder.items[item.key.item_id] = item
        folder.touch(item.key.item_id, deleted=False)
        return item

    def edit_item(
        self, address: str, entity: ActEntity, item_id: str, changes: FieldValues
    ) -> ExchangeItem:
        """Change an item as the user would in Outlook (new change key)."""
        folder = self._folder(address, entity)
        item = folder.items[item_id]
        fields: dict[str, FieldValue] = dict(item.fields)
        fields.update(changes)
        organizer = changes.get("organizer", item.organizer)
        changed = attrs.evolve(
            item,
            key=ExchangeItemKey(item_id=item_id, change_key=self._key()),
            fields=fields,
            last_modified=self._now(),
            organizer=organizer if isinstance(organizer, str) else item.organizer,
        )
        folder.items[item_id] = changed
        folder.touch(item_id, deleted=False)
        return changed

    def remove_item(self, address: str, entity: ActEntity, item_id: str) -> bool:
        """Delete an item (and a master's exceptions) as the user would; ``False`` when it
        was already gone."""
        folder = self._folder(address, entity)
        if folder.items.pop(item_id, None) is None:
            return False
        folder.touch(item_id, deleted=True)
        for other in [i for i in folder.items.values() if i.series_id == item_id]:
            del folder.items[other.key.item_id]
            folder.touch(other.key.item_id, deleted=True)
        return True

    def forget_sync_states(self, address: str) -> None:
        """Make Exchange forget every sync state of the mailbox (the next sync lists all
        items again, with ``reset``)."""
        for folder in self._account(address).folders.values():
            folder.epoch = next(self._epochs)

    def reject_writes_where(
        self,
        predicate: Callable[[FieldValues], bool],
        error: Callable[[], SyncError] | None = None,
    ) -> None:
        """Refuse every create or update whose resulting fields meet ``predicate`` (an
        item-level EWS error by default), until :meth:`clear_rejections`."""

        def rejected() -> SyncError:
            return MessageRejectedError(
                "the item was refused", server_code="ErrorInvalidPropertyRequest"
            )

        self._rejections.append((predicate, error or rejected))

    def clear_rejections(self) -> None:
        """Accept every write again."""
        self._rejections.clear()

    # -- used by the sessions ---------------------------------------------------------------

    def _key(self) -> str:
        return f"CQAAAB{next(self._keys):08d}"

    def _check_write(self, fields: FieldValues) -> None:
        for predicate, error in self._rejections:
            if predicate(fields):
                raise error()

    def _authenticate(self, credentials: Credentials | None, mailbox: Mailbox) -> str:
        if credentials is None:
            raise AuthenticationError("Exchange needs credentials", mailbox_id=mailbox.id)
        account = self._accounts.get(credentials.username.lower())
        if account is None or account.password != credentials.secret.reveal():
            raise AuthenticationError(
                f"401 Unauthorized for {credentials.username}",
                mailbox_id=mailbox.id,
                server_code="401",
            )
        address = mailbox.email_address.lower()
        if address not in self._accounts:
            raise AuthenticationError(
                f"no mailbox {mailbox.email_address} to impersonate",
                mailbox_id=mailbox.id,
                server_code="ErrorNonExistentMailbox",
            )
        return address


def _parse_state(state: str) -> tuple[int, int] | None:
    epoch, _, seq = state.partition(".")
    if not (epoch.isdigit() and seq.isdigit()):
        return None
    return int(epoch), int(seq)


@final
class _Session(ExchangeItemsSession):
    def __init__(self, exchange: InMemoryExchange, address: str) -> None:
        self._exchange = exchange
        self._address = address

    def _check(self, operation: str, point: FaultPoint = FaultPoint.BEFORE) -> None:
        self._exchange.faults.check(operation, point)

    def _folder(self, entity: ActEntity) -> _Folder:
        return self._exchange._folder(self._address, entity)

    def held_fields(self, entity: ActEntity) -> frozenset[str]:
        return frozenset(FIELDS[entity])  # it stores any value under any name

    async def sync_items(
        self, entity: ActEntity, state: str | None, *, limit: int
    ) -> ExchangeItemChanges:
        self._check("sync_items")
        folder = self._folder(entity)
        since, reset, listing = 0, False, state is None
        if state is not None:
            parsed = _parse_state(state)
            if parsed is None or parsed[0] != folder.epoch:
                reset = listing = True  # Exchange no longer knows the state: everything again
            else:
                since = parsed[1]
        entries = sorted(
            (seq, item_id, deleted)
            for item_id, (seq, deleted) in folder.log.items()
            if seq > since and not (deleted and listing)  # a full listing lists what exists
        )
        page = entries[:limit]
        more = len(entries) > limit
        last = page[-1][0] if more else folder.seq
        return ExchangeItemChanges(
            entity=entity,
            changed=tuple(folder.items[item_id] for _, item_id, deleted in page if not deleted),
            deleted=tuple(item_id for _, item_id, deleted in page if deleted),
            state=f"{folder.epoch}.{last}",
            reset=reset,
            more=more,
        )

    async def get_items(self, entity: ActEntity, item_ids: Sequence[str]) -> Sequence[ExchangeItem]:
        self._check("get_items")
        folder = self._folder(entity)
        return [folder.items[i] for i in item_ids if i in folder.items]

    async def create_item(
        self,
        entity: ActEntity,
        fields: FieldValues,
        *,
        series_id: str | None = None,
        original_start: datetime | None = None,
        record: RecordRef | None = None,
    ) -> ExchangeItemKey:
        self._check("create_item")
        self._exchange._check_write(fields)
        item = self._exchange.add_item(
            self._address,
            entity,
            fields,
            series_id=series_id,
            original_start=original_start,
        )
        self._check("create_item", FaultPoint.AFTER)
        return item.key

    async def update_item(
        self, entity: ActEntity, key: ExchangeItemKey, changes: FieldValues
    ) -> ExchangeItemKey:
        self._check("update_item")
        item = self._folder(entity).items.get(key.item_id)
        if item is None:
            raise MessageRejectedError(
                f"item {key.item_id} not found", server_code="ErrorItemNotFound"
            )
        if item.key.change_key != key.change_key:
            raise StorageConflictError(
                f"item {key.item_id} changed meanwhile", server_code="ErrorIrresolvableConflict"
            )
        merged: dict[str, FieldValue] = dict(item.fields)
        merged.update(changes)
        self._exchange._check_write(merged)
        changed = self._exchange.edit_item(self._address, entity, key.item_id, changes)
        self._check("update_item", FaultPoint.AFTER)
        return changed.key

    async def delete_item(
        self, entity: ActEntity, item_id: str, *, send_cancellations: bool = False
    ) -> None:
        self._check("delete_item")
        item = self._folder(entity).items.get(item_id)
        if item is None:
            return
        self._exchange.remove_item(self._address, entity, item_id)
        if send_cancellations and entity is ActEntity.APPOINTMENT:
            self._exchange.cancellations.append(SentCancellation(address=self._address, item=item))
        self._check("delete_item", FaultPoint.AFTER)


@final
class InMemoryExchangeItemsTransport(ExchangeItemsTransport):
    """Opens ACT sessions on an :class:`InMemoryExchange`; the credentials must be those of
    a mailbox there (a service account may open any mailbox, as with impersonation)."""

    def __init__(self, exchange: InMemoryExchange) -> None:
        self._exchange = exchange

    @asynccontextmanager
    async def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AsyncIterator[ExchangeItemsSession]:
        self._exchange.faults.check("connect", FaultPoint.BEFORE)
        address = self._exchange._authenticate(credentials, mailbox)
        yield _Session(self._exchange, address)
