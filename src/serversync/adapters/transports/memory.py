"""An in-process mail server and the transports that read from and send through it.

It behaves like an IMAP server where that matters to sync: per-folder UIDs that only grow,
UIDVALIDITY that can change, keywords, and messages that can move between folders. Sent
mail lands in ``outbox`` and, for local users, in their Inbox. A message tagged Undeliverable
moves to the Undeliverable folder when the profile's ``move_undelivered_emails`` asks. Faults
can be injected at every operation through ``faults``. The incoming transport offers push
hints (:class:`~serversync.ports.PushHintSource`) for the Inbox, as IMAP IDLE does, when the
server's ``push`` is on.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import final

import attrs

from serversync.adapters._faults import FaultPlan, FaultPoint
from serversync.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionFailedError,
    ErrorScope,
    MessageRejectedError,
    RecipientsRefusedError,
    SyncError,
)
from serversync.model import (
    INBOX,
    Checkpoint,
    Credentials,
    EmailServerProfile,
    ImapCheckpoint,
    IncomingBatch,
    Mailbox,
    OutgoingMessage,
    RawHeaders,
    RawMessage,
    RemoteFolder,
    RemoteMark,
    RemoteMessageRef,
)
from serversync.model.outcomes import SendReceipt
from serversync.ports import (
    Clock,
    IncomingMailSession,
    IncomingMailTransport,
    OutgoingMailSession,
    OutgoingMailTransport,
    PushHint,
    PushHintSource,
)

__all__ = [
    "InMemoryIncomingTransport",
    "InMemoryMailServer",
    "InMemoryOutgoingTransport",
    "SentMessage",
    "StoredMessage",
]

TRACKED_KEYWORD = "$ServerSyncTracked"
UNDELIVERABLE_KEYWORD = "$ServerSyncUndeliverable"
SEEN_FLAG = "\\Seen"
"""The flag copies of sent mail carry (they were never unread)."""
UNDELIVERABLE_FOLDER = "Undeliverable"
"""The folder (under the Inbox) messages tagged Undeliverable move to when the profile's
``move_undelivered_emails`` asks and the mailbox names no ``undeliverable_folder``."""
_KEYWORDS = {RemoteMark.TRACKED: TRACKED_KEYWORD, RemoteMark.UNDELIVERABLE: UNDELIVERABLE_KEYWORD}


@attrs.frozen(kw_only=True)
class StoredMessage:
    """One message in a folder of the in-memory server."""

    uid: int
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    received_at: datetime
    keywords: frozenset[str] = frozenset()


@attrs.frozen(kw_only=True)
class SentMessage:
    """One message the in-memory server accepted for sending."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    accepted_at: datetime


@attrs.define
class _Folder:
    name: str
    uidvalidity: int
    next_uid: int = 1
    messages: dict[int, StoredMessage] = attrs.field(factory=dict)
    parent: str | None = None
    special_use: str | None = None


@attrs.define
class _Account:
    password: str
    folders: dict[str, _Folder]


def _header_block(data: bytes) -> bytes:
    for separator in (b"\r\n\r\n", b"\n\n"):
        index = data.find(separator)
        if index >= 0:
            return data[: index + len(separator)]
    return data


# What a watch's queue carries besides new-mail events: the server dropped the watch.
_DROPPED = "dropped"


@final
class InMemoryMailServer:
    """A mail server in a dict: accounts, folders, UIDs, keywords and an SMTP outbox.

    ``push`` says whether it offers push hints (off by default, so that ``run_forever`` polls
    only unless a test asks for push, as against a server without IDLE); :meth:`watching`
    counts the watches open on an account and :meth:`drop_watches` ends them as a server
    dropping the connections would.
    """

    def __init__(
        self, *, clock: Clock | None = None, faults: FaultPlan | None = None, push: bool = False
    ) -> None:
        self._clock = clock
        self.faults = faults or FaultPlan()
        self.push = push
        self._watches: dict[str, list[asyncio.Queue[str]]] = {}
        self._accounts: dict[str, _Account] = {}
        self._uidvalidity = itertools.count(1000)
        self._folder_ids = itertools.count(1)
        self._refused: dict[str, str] = {}
        self.outbox: list[SentMessage] = []

    def _now(self) -> datetime:
        return self._clock.now() if self._clock is not None else datetime.now(UTC)

    def _account(self, address: str) -> _Account:
        try:
            return self._accounts[address.lower()]
        except KeyError:
            raise KeyError(f"no account {address!r} on the in-memory server") from None

    def _folder(self, address: str, folder: str) -> _Folder:
        """A folder by id or, for test convenience, by name."""
        return self._account(address).folders[self.folder_id(address, folder)]

    def folder_id(self, address: str, folder: str) -> str:
        """The stable id of a folder given by id or name (ids survive renames, as in Exchange)."""
        account = self._account(address)
        if folder in account.folders:
            return folder
        for folder_id, candidate in account.folders.items():
            if candidate.name == folder:
                return folder_id
        raise KeyError(f"no folder {folder!r} in {address!r}")

    def add_account(self, address: str, password: str = "secret") -> None:
        """Create an account with an empty Inbox (idempotent for the same address)."""
        key = address.lower()
        if key not in self._accounts:
            self._accounts[key] = _Account(
                password=password,
                folders={INBOX: _Folder(name=INBOX, uidvalidity=next(self._uidvalidity))},
            )

    def set_password(self, address: str, password: str) -> None:
        """Change an account's password (to test wrong credentials)."""
        self._account(address).password = password

    def create_folder(
        self,
        address: str,
        name: str,
        *,
        parent: str | None = INBOX,
        special_use: str | None = None,
    ) -> str:
        """Add a folder (under Inbox unless ``parent`` says otherwise); returns its id.

        ``special_use`` marks its role, e.g. ``serversync.model.SENT``.
        """
        parent_id = self.folder_id(address, parent) if parent is not None else None
        folder_id = f"folder-{next(self._folder_ids)}"
        self._account(address).folders[folder_id] = _Folder(
            name=name,
            uidvalidity=next(self._uidvalidity),
            parent=parent_id,
            special_use=special_use,
        )
        return folder_id

    def rename_folder(self, address: str, folder: str, new_name: str) -> None:
        """Rename a folder; its id stays."""
        self._folder(address, folder).name = new_name

    def move_folder(self, address: str, folder: str, new_parent: str | None) -> None:
        """Move a folder under another one (``None``: to the top level)."""
        box = self._folder(address, folder)
        box.parent = (
            self.folder_id(address, self._folder(address, new_parent).name)
            if (new_parent is not None)
            else None
        )

    def deliver(
        self,
        address: str,
        data: bytes,
        *,
        folder: str = INBOX,
        received_at: datetime | None = None,
    ) -> int:
        """Put a message into a folder; returns its UID."""
        box = self._folder(address, folder)
        uid = box.next_uid
        box.next_uid += 1
        box.messages[uid] = StoredMessage(
            uid=uid, data=data, received_at=received_at or self._now()
        )
        self._notify(address, box)
        return uid

    def move(self, address: str, uid: int, source: str, target: str) -> int:
        """Move a message to another folder, where it gets a new UID."""
        message = self._folder(address, source).messages.pop(uid)
        box = self._folder(address, target)
        new_uid = box.next_uid
        box.next_uid += 1
        box.messages[new_uid] = attrs.evolve(message, uid=new_uid)
        self._notify(address, box)
        return new_uid

    def expunge(self, address: str, uid: int, *, folder: str = INBOX) -> None:
        """Delete a message."""
        del self._folder(address, folder).messages[uid]

    def change_uidvalidity(self, address: str, folder: str = INBOX) -> None:
        """Renumber a folder, as a server does after a rebuild: new UIDVALIDITY, new UIDs."""
        box = self._folder(address, folder)
        box.uidvalidity = next(self._uidvalidity)
        renumbered = sorted(box.messages.values(), key=lambda m: m.uid)
        box.messages = {}
        box.next_uid = 1
        for message in renumbered:
            box.messages[box.next_uid] = attrs.evolve(message, uid=box.next_uid)
            box.next_uid += 1

    def messages(self, address: str, folder: str = INBOX) -> list[StoredMessage]:
        """The messages of a folder in UID order."""
        box = self._folder(address, folder)
        return [box.messages[uid] for uid in sorted(box.messages)]

    def watching(self, address: str) -> int:
        """How many push watches are open on ``address``."""
        return len(self._watches.get(address.lower(), []))

    def drop_watches(self, address: str | None = None) -> None:
        """End the push watches on ``address`` (on every account when ``None``) with a
        connection failure, as a server restart would."""
        for key, queues in self._watches.items():
            if address is None or key == address.lower():
                for queue in queues:
                    queue.put_nowait(_DROPPED)

    def _notify(self, address: str, box: _Folder) -> None:
        # Watches see the Inbox only, like an IMAP IDLE on the selected Inbox.
        if box.name == INBOX:
            for queue in self._watches.get(address.lower(), []):
                queue.put_nowait(PushHint.NEW_MAIL)

    def refuse_recipient(self, address: str, reply: str = "550 5.1.1 mailbox unavailable") -> None:
        """Make sends to ``address`` refuse that recipient with ``reply``."""
        self._refused[address.lower()] = reply

    # -- used by the sessions ------------------------------------------

    def _check(self, operation: str, point: FaultPoint) -> None:
        self.faults.check(operation, point)

    def _authenticate(self, credentials: Credentials | None, mailbox: Mailbox) -> str:
        if credentials is None:
            raise AuthenticationError(
                "the in-memory server needs credentials", mailbox_id=mailbox.id
            )
        account = self._accounts.get(credentials.username.lower())
        if account is None or account.password != credentials.secret.reveal():
            raise AuthenticationError(
                f"login refused for {credentials.username}", mailbox_id=mailbox.id, server_code="NO"
            )
        return credentials.username.lower()

    def _accept(self, message: OutgoingMessage) -> SendReceipt:
        refused = tuple(
            (r, self._refused[r.lower()]) for r in message.recipients if r.lower() in self._refused
        )
        if len(refused) == len(message.recipients):
            raise RecipientsRefusedError(
                "every recipient was refused", recipients=dict(refused), server_code="550"
            )
        accepted_at = self._now()
        self.outbox.append(
            SentMessage(
                sender=message.sender,
                recipients=message.recipients,
                data=message.data,
                accepted_at=accepted_at,
            )
        )
        refused_set = {r for r, _ in refused}
        for recipient in message.recipients:
            if recipient.lower() in self._accounts and recipient not in refused_set:
                self.deliver(recipient, message.data, received_at=accepted_at)
        return SendReceipt(
            message_id=message.message_id,
            accepted_at=accepted_at,
            server_reply="250 2.0.0 Ok: queued",
            refused=refused,
        )


@final
class _IncomingSession(IncomingMailSession):
    def __init__(
        self, server: InMemoryMailServer, address: str, *, undeliverable_folder: str | None = None
    ) -> None:
        self._server = server
        self._address = address
        # Where Undeliverable messages move to; None leaves them where they are.
        self._undeliverable_folder = undeliverable_folder

    async def list_folders(self) -> Sequence[RemoteFolder]:
        server = self._server
        server._check("list_folders", FaultPoint.BEFORE)
        account = server._account(self._address)
        return [
            RemoteFolder(
                id=folder_id,
                name=folder.name,
                parent_id=folder.parent,
                special_use=folder.special_use,
            )
            for folder_id, folder in account.folders.items()
        ]

    async def list_new(
        self, folder: str, checkpoint: Checkpoint | None, *, limit: int
    ) -> IncomingBatch:
        server = self._server
        server._check("list_new", FaultPoint.BEFORE)
        if checkpoint is not None and not isinstance(checkpoint, ImapCheckpoint):
            raise ConfigurationError(
                f"the in-memory server keeps IMAP cursors, not {type(checkpoint).__name__}"
            )
        try:
            box = server._folder(self._address, folder)
        except KeyError as exc:
            raise ConfigurationError(str(exc)) from exc
        reset = checkpoint is not None and checkpoint.uidvalidity != box.uidvalidity
        last_uid = checkpoint.last_uid if checkpoint is not None and not reset else 0
        newer = sorted(uid for uid in box.messages if uid > last_uid)
        chosen = newer[:limit]
        refs = tuple(
            RemoteMessageRef(
                folder=folder,
                remote_id=str(uid),
                received_at=box.messages[uid].received_at,
                size=len(box.messages[uid].data),
            )
            for uid in chosen
        )
        checkpoints = tuple(
            ImapCheckpoint(uidvalidity=box.uidvalidity, last_uid=uid) for uid in chosen
        )
        end = ImapCheckpoint(
            uidvalidity=box.uidvalidity, last_uid=chosen[-1] if chosen else last_uid
        )
        return IncomingBatch(
            folder=folder,
            refs=refs,
            checkpoints=checkpoints,
            end=end,
            reset=reset,
            more=len(newer) > limit,
        )

    def _stored(self, ref: RemoteMessageRef) -> StoredMessage:
        try:
            return self._server._folder(self._address, ref.folder).messages[int(ref.remote_id)]
        except (KeyError, ValueError) as exc:
            raise MessageRejectedError(
                f"message {ref.remote_id} is no longer in {ref.folder}"
            ) from exc

    async def fetch_headers(self, refs: Sequence[RemoteMessageRef]) -> Sequence[RawHeaders]:
        self._server._check("fetch_headers", FaultPoint.BEFORE)
        return [RawHeaders(ref=ref, data=_header_block(self._stored(ref).data)) for ref in refs]

    async def fetch_message(self, ref: RemoteMessageRef) -> RawMessage:
        self._server._check("fetch_message", FaultPoint.BEFORE)
        return RawMessage(ref=ref, data=self._stored(ref).data)

    async def fetch_messages(
        self, refs: Sequence[RemoteMessageRef]
    ) -> Sequence[RawMessage | SyncError]:
        # One message at a time through fetch_message and its faults: a fault planned for
        # one message fails that message alone, or, of wider scope, the rest from there on.
        self._server._check("fetch_messages", FaultPoint.BEFORE)
        out: list[RawMessage | SyncError] = []
        for n, ref in enumerate(refs):
            try:
                out.append(await self.fetch_message(ref))
            except SyncError as exc:
                if exc.scope is ErrorScope.ITEM:
                    out.append(exc)
                    continue
                return out + [exc] * (len(refs) - n)
        return out

    async def mark(self, refs: Sequence[RemoteMessageRef], mark: RemoteMark) -> None:
        server = self._server
        server._check("mark", FaultPoint.BEFORE)
        keyword = _KEYWORDS[mark]
        for ref in refs:
            box = server._folder(self._address, ref.folder)
            uid = int(ref.remote_id)
            if uid in box.messages:
                message = box.messages[uid]
                box.messages[uid] = attrs.evolve(message, keywords=message.keywords | {keyword})
                if mark is RemoteMark.UNDELIVERABLE and self._undeliverable_folder is not None:
                    server.move(self._address, uid, ref.folder, self._undeliverable())
        server._check("mark", FaultPoint.AFTER)

    async def append_sent(self, folder: str, data: bytes) -> None:
        server = self._server
        server._check("append", FaultPoint.BEFORE)
        try:
            folder_id = server.folder_id(self._address, folder)
        except KeyError:
            folder_id = server.create_folder(self._address, folder, parent=None)
        uid = server.deliver(self._address, data, folder=folder_id)
        box = server._folder(self._address, folder_id)
        box.messages[uid] = attrs.evolve(
            box.messages[uid], keywords=frozenset({SEEN_FLAG, TRACKED_KEYWORD})
        )
        server._check("append", FaultPoint.AFTER)

    def _undeliverable(self) -> str:
        """The Undeliverable folder's id, created under the Inbox on first use."""
        assert self._undeliverable_folder is not None
        try:
            return self._server.folder_id(self._address, self._undeliverable_folder)
        except KeyError:
            return self._server.create_folder(self._address, self._undeliverable_folder)


@final
class InMemoryIncomingTransport(IncomingMailTransport, PushHintSource):
    """Reads mail from an :class:`InMemoryMailServer`; logs in with the account's password.

    Its push watches report mail delivered to (or moved into) the Inbox.
    """

    def __init__(self, server: InMemoryMailServer) -> None:
        self._server = server

    @asynccontextmanager
    async def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AsyncIterator[IncomingMailSession]:
        self._server._check("connect", FaultPoint.BEFORE)
        address = self._server._authenticate(credentials, mailbox)
        folder = None
        if profile.move_undelivered_emails:
            folder = mailbox.undeliverable_folder or UNDELIVERABLE_FOLDER
        yield _IncomingSession(self._server, address, undeliverable_folder=folder)

    async def watch(
        self,
        mailbox: Mailbox,
        profile: EmailServerProfile,
        credentials: Credentials | None,
        *,
        hint: Callable[[PushHint], None],
        refresh_every: timedelta,
    ) -> None:
        # Nothing here needs renewing, so refresh_every has no use.
        server = self._server
        server._check("watch", FaultPoint.BEFORE)
        address = server._authenticate(credentials, mailbox)
        if not server.push:
            raise ConfigurationError(
                "the in-memory server offers no push hints", mailbox_id=mailbox.id
            )
        queue: asyncio.Queue[str] = asyncio.Queue()
        watches = server._watches.setdefault(address, [])
        watches.append(queue)
        try:
            hint(PushHint.WATCHING)
            while True:
                event = await queue.get()
                if event == _DROPPED:
                    raise ConnectionFailedError(
                        "the in-memory server dropped the watch", mailbox_id=mailbox.id
                    )
                hint(PushHint.NEW_MAIL)
        finally:
            watches.remove(queue)


@final
class _OutgoingSession(OutgoingMailSession):
    def __init__(self, server: InMemoryMailServer) -> None:
        self._server = server

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        server = self._server
        server._check("send", FaultPoint.BEFORE)
        receipt = server._accept(message)
        server._check("send", FaultPoint.AFTER)
        return receipt


@final
class InMemoryOutgoingTransport(OutgoingMailTransport):
    """Sends through an :class:`InMemoryMailServer`; mail to local accounts is delivered."""

    def __init__(self, server: InMemoryMailServer) -> None:
        self._server = server

    @asynccontextmanager
    async def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AsyncIterator[OutgoingMailSession]:
        self._server._check("connect", FaultPoint.BEFORE)
        self._server._authenticate(credentials, mailbox)
        yield _OutgoingSession(self._server)
