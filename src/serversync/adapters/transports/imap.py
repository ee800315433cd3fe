"""The IMAP incoming transport, on aioimaplib.

One session is one authenticated IMAP connection (implicit TLS, STARTTLS or, when a profile
asks for it, plain text). Messages are addressed by UID; a folder's cursor is its
UIDVALIDITY, the last processed UID and, where the server offers CONDSTORE, HIGHESTMODSEQ.
Headers are fetched with ``BODY.PEEK[HEADER]`` (with the listing's metadata, in one FETCH a
batch) and whole messages with ``BODY.PEEK[]``, so nothing is ever marked ``\\Seen``;
processed messages get the keyword ``$ServerSyncTracked`` or ``$ServerSyncUndeliverable``
where the folder keeps keywords.

Every command runs under a deadline from :class:`~serversync.settings.Timeouts`; after a
timeout or a dropped connection the session refuses further commands and is closed without
LOGOUT. Library and socket errors become :mod:`serversync.errors` types.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import functools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Final, final

import aioimaplib  # type: ignore[import-untyped]
import attrs

from serversync.adapters.transports._connection import (
    incoming_server,
    network_error,
    tls_context,
)
from serversync.adapters.transports._imap_idle import watch_inbox
from serversync.adapters.transports._imap_parse import (
    FetchItem,
    ImapParseError,
    MailboxStatus,
    decode_mailbox_name,
    parse_fetch,
    parse_internaldate,
    parse_list,
    parse_search,
    parse_select,
    quote,
    response_code,
    uid_set,
)
from serversync.adapters.transports._imap_protocol import GreetingRefusedError, ImapClient, Reply
from serversync.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionFailedError,
    ErrorScope,
    MessageRejectedError,
    OperationTimeoutError,
    ServerBusyError,
    SyncError,
)
from serversync.model import (
    Checkpoint,
    CredentialKind,
    Credentials,
    EmailServerProfile,
    ImapCheckpoint,
    IncomingBatch,
    Mailbox,
    RawHeaders,
    RawMessage,
    RemoteFolder,
    RemoteMark,
    RemoteMessageRef,
    ServerEndpoint,
    TlsMode,
)
from serversync.model.mailboxes import process_email_from
from serversync.ports import IncomingMailSession, IncomingMailTransport, PushHint, PushHintSource
from serversync.settings import Timeouts

__all__ = [
    "TRACKED_KEYWORD",
    "UNDELIVERABLE_FOLDER",
    "UNDELIVERABLE_KEYWORD",
    "ImapStats",
    "ImapTransport",
]

TRACKED_KEYWORD: Final = "$ServerSyncTracked"
"""The keyword set on a message once it is stored (or found to be a duplicate)."""
UNDELIVERABLE_KEYWORD: Final = "$ServerSyncUndeliverable"
UNDELIVERABLE_FOLDER: Final = "Undeliverable"
"""The folder under the Inbox that Undeliverable messages move to when the profile's
``move_undelivered_emails`` asks and the mailbox names no ``undeliverable_folder``."""
"""The keyword set on a message that could not be processed."""

# RFC 6154 special-use attributes, as parse_list upper-cases them -> their canonical spelling.
_SPECIAL_USES: Final = {
    flag.upper(): flag
    for flag in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
}

_KEYWORDS: Final = {
    RemoteMark.TRACKED: TRACKED_KEYWORD,
    RemoteMark.UNDELIVERABLE: UNDELIVERABLE_KEYWORD,
}
# UIDs in one command: keeps command lines and responses of a bounded size. Each command
# costs a round trip and the server's start-up for it, so not fewer than a usual batch.
_MAX_UIDS_PER_COMMAND: Final = 500
# What a header block is taken to weigh when batches are sized: delivered mail carries 1 to
# 8 KiB of headers (Received chains, DKIM and ARC signatures); a message's size
# (RFC822.SIZE) is an upper bound. Estimating by the message size instead would cut a batch
# of ordinary 50 KB messages into commands of 20 headers, each a round trip.
_HEADER_ESTIMATE: Final = 4 * 1024
# Response codes (RFC 5530, plus Gmail's THROTTLED) that say "not now" rather than "never".
_BUSY_CODES: Final = frozenset({"UNAVAILABLE", "INUSE", "SERVERBUG", "THROTTLED"})
_AUTH_CONFIGURATION_CODES: Final = frozenset({"PRIVACYREQUIRED", "CLIENTBUG", "CANNOT"})


@final
@attrs.define
class ImapStats:
    """What an :class:`ImapTransport` did, over all its sessions: for tests and metrics.

    ``commands`` counts commands by name (``"UID FETCH"``, ``"SELECT"``, ...);
    ``headers_fetched`` and ``messages_fetched`` count header blocks and whole messages
    returned; ``bytes_received`` counts bytes read from servers.
    """

    connections: int = 0
    commands: collections.Counter[str] = attrs.Factory(collections.Counter)
    headers_fetched: int = 0
    messages_fetched: int = 0
    bytes_received: int = 0


@final
class ImapTransport(IncomingMailTransport, PushHintSource):
    """Reads mail over IMAP with aioimaplib; one instance serves every IMAP mailbox.

    ``timeouts`` bounds every command (connect and login under ``connect``, header and
    message downloads under ``fetch``, LOGOUT under ``close``, the rest under ``command``).
    ``header_batch_bytes`` bounds the estimated size of one header download.
    With ``sasl_plain`` (the default) passwords go through ``AUTHENTICATE PLAIN`` when the
    server offers it (UTF-8 safe, no quoting), otherwise through ``LOGIN``. OAuth 2.0 access
    tokens (:attr:`CredentialKind.OAUTH2_ACCESS_TOKEN`) use ``AUTHENTICATE XOAUTH2``.

    Folder ids are the mailbox names as the server sends them (modified UTF-7): IMAP has no
    stable folder ids without the OBJECTID extension, so a renamed folder is a new folder.

    Where the server offers IDLE, :meth:`watch` gives push hints for the Inbox.
    """

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        header_batch_bytes: int = 2 * 1024 * 1024,
        sasl_plain: bool = True,
    ) -> None:
        if header_batch_bytes < 1:
            raise ValueError("header_batch_bytes must be positive")
        self._timeouts = timeouts or Timeouts()
        self._header_batch_bytes = header_batch_bytes
        self._sasl_plain = sasl_plain
        self.stats = ImapStats()

    @asynccontextmanager
    async def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AsyncIterator[IncomingMailSession]:
        """Connect, secure and log in; log out when the block ends."""
        endpoint, login = incoming_server(
            profile, credentials, protocol="IMAP", mailbox_id=mailbox.id
        )
        limit = self._timeouts.connect
        try:
            async with asyncio.timeout(limit.total_seconds()):
                session = await self._connect(
                    mailbox,
                    endpoint,
                    login,
                    undeliverable_folder=_undeliverable_folder(mailbox, profile),
                    list_arrival=process_email_from(mailbox, profile) is not None,
                )
        except TimeoutError as exc:
            if isinstance(exc, SyncError):
                raise
            raise OperationTimeoutError(
                f"connecting and logging in to IMAP server {endpoint.host} did not finish "
                f"within {limit.total_seconds():g} s",
                mailbox_id=mailbox.id,
            ) from exc
        try:
            yield session
        finally:
            await session.aclose()

    async def watch(
        self,
        mailbox: Mailbox,
        profile: EmailServerProfile,
        credentials: Credentials | None,
        *,
        hint: Callable[[PushHint], None],
        refresh_every: timedelta,
    ) -> None:
        """Watch the Inbox with IDLE on a connection of its own (see ``_imap_idle``); a
        server without IDLE is a :class:`~serversync.errors.ConfigurationError`."""
        async with self.open(mailbox, profile, credentials) as session:
            await watch_inbox(
                session, hint=hint, refresh_every=refresh_every, timeouts=self._timeouts
            )

    async def _connect(
        self,
        mailbox: Mailbox,
        endpoint: ServerEndpoint,
        credentials: Credentials,
        *,
        undeliverable_folder: str | None = None,
        list_arrival: bool = True,
    ) -> _ImapSession:
        implicit = endpoint.tls is TlsMode.IMPLICIT
        port = endpoint.port or (993 if implicit else 143)
        context = tls_context(endpoint, mailbox_id=mailbox.id)
        what = f"connecting to IMAP server {endpoint.host}:{port}"
        try:
            client = await ImapClient.connect(endpoint.host, port, context if implicit else None)
        except OSError as exc:
            raise network_error(exc, what, mailbox_id=mailbox.id) from exc
        except GreetingRefusedError as exc:
            raise ServerBusyError(
                f"{what}: the server refused the connection: {exc}", mailbox_id=mailbox.id
            ) from exc
        self.stats.connections += 1
        session = _ImapSession(
            client,
            mailbox_id=mailbox.id,
            timeouts=self._timeouts,
            stats=self.stats,
            header_batch_bytes=self._header_batch_bytes,
            undeliverable_folder=undeliverable_folder,
            list_arrival=list_arrival,
        )
        try:
            await session.start(endpoint, credentials, context, sasl_plain=self._sasl_plain)
        except BaseException:
            client.abort()
            raise
        return session


def _undeliverable_folder(mailbox: Mailbox, profile: EmailServerProfile) -> str | None:
    """Where Undeliverable messages move: ``""`` for Undeliverable under the Inbox, the
    mailbox's own folder name when it names one, ``None`` when the profile keeps them."""
    if not profile.move_undelivered_emails:
        return None
    return mailbox.undeliverable_folder or ""


def _uid(ref: RemoteMessageRef) -> int:
    try:
        return int(ref.remote_id)
    except ValueError as exc:
        raise MessageRejectedError(
            f"{ref.remote_id!r} is not an IMAP UID (a reference from another transport?)"
        ) from exc


# A whole message comes with its arrival time, which the listing may have left out.
_MESSAGE_ITEMS: Final = "(UID INTERNALDATE BODY.PEEK[])"


def _arrived(ref: RemoteMessageRef, item: FetchItem) -> RemoteMessageRef:
    """``ref`` with the arrival time ``item`` tells, when the listing did not give one."""
    if ref.received_at is not None:
        return ref
    received_at = parse_internaldate(item.data("INTERNALDATE"))
    return ref if received_at is None else attrs.evolve(ref, received_at=received_at)


def _mailbox_argument(folder: str) -> str:
    if any(c in folder for c in "\r\n\0"):
        raise ConfigurationError(f"folder name {folder!r} contains a line break or NUL")
    return quote(folder)


def _by_folder(refs: Sequence[RemoteMessageRef]) -> dict[str, list[RemoteMessageRef]]:
    grouped: dict[str, list[RemoteMessageRef]] = {}
    for ref in refs:
        grouped.setdefault(ref.folder, []).append(ref)
    return grouped


def _chunks(uids: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(uids), size):
        yield list(uids[start : start + size])


@final
class _ImapSession(IncomingMailSession):
    def __init__(
        self,
        client: ImapClient,
        *,
        mailbox_id: str,
        timeouts: Timeouts,
        stats: ImapStats,
        header_batch_bytes: int,
        undeliverable_folder: str | None = None,
        list_arrival: bool = True,
    ) -> None:
        self._client = client
        # INTERNALDATE in the listing only when Process Email From skips mail by it: asked
        # of every listed message it cost Dovecot about a tenth of the header phase, while
        # only the messages stored need it, and their body fetch brings it.
        self._listing_items = (
            "(UID INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER])"
            if list_arrival
            else "(UID RFC822.SIZE BODY.PEEK[HEADER])"
        )
        # "" stands for Undeliverable under the Inbox, named with the server's delimiter.
        self._undeliverable_folder = undeliverable_folder
        self._undeliverable_name: str | None = None
        self._mailbox_id = mailbox_id
        self._timeouts = timeouts
        self._stats = stats
        self._header_batch_bytes = header_batch_bytes
        self._condstore = False
        self._selected: str | None = None
        self._status: MailboxStatus | None = None
        # The UIDs a UID SEARCH of the selected folder found above a cursor: (folder,
        # UIDVALIDITY, the cursor's last UID, the UIDs), reused by the next listing.
        self._searched: tuple[str, int, int, list[int]] | None = None
        # The header blocks the last listing fetched with the metadata, by (folder, UID text):
        # the engine asks for them next. One FETCH a batch instead of two saves a round
        # trip and a pass over the messages on the server.
        self._listed_headers: dict[tuple[str, str], RawHeaders] = {}
        self._broken = False
        self._closed = False
        self._counted_bytes = 0

    # -- plumbing ---------------------------------------------------------------------------

    async def _run(
        self, name: str, call: Callable[[], Awaitable[Reply]], *, limit: timedelta
    ) -> Reply:
        """Run one command under ``limit``; any failure but a NO/BAD leaves the session unusable."""
        if self._closed or self._broken:
            raise ConnectionFailedError(
                "the IMAP session is closed or was dropped after an earlier failure",
                mailbox_id=self._mailbox_id,
            )
        self._stats.commands[name] += 1
        completed = False
        try:
            async with asyncio.timeout(limit.total_seconds()):
                reply = await call()
            completed = True
        except TimeoutError as exc:
            raise OperationTimeoutError(
                f"IMAP {name} did not finish within {limit.total_seconds():g} s",
                mailbox_id=self._mailbox_id,
            ) from exc
        except OSError as exc:
            raise network_error(exc, f"IMAP {name}", mailbox_id=self._mailbox_id) from exc
        except aioimaplib.AioImapException as exc:
            raise ConnectionFailedError(
                f"IMAP {name}: the client lost track of the conversation ({exc!r})",
                mailbox_id=self._mailbox_id,
            ) from exc
        finally:
            # After a timeout the reply may still arrive and be taken for the next command's.
            if not completed:
                self._broken = True
            received = self._client.bytes_received
            self._stats.bytes_received += received - self._counted_bytes
            self._counted_bytes = received
        return reply

    def _refused(self, name: str, reply: Reply, *, kind: str, what: str = "") -> SyncError:
        """The error for a NO or BAD; ``kind`` is auth, folder, item or session."""
        code = response_code(reply.text)
        code_name = code[0] if code else None
        text = reply.text.decode("utf-8", errors="replace").strip()
        server_code = f"{reply.result} [{code_name}]" if code_name else reply.result
        message = f"{what or 'IMAP ' + name} refused: {text}"
        box = self._mailbox_id
        if code_name in _BUSY_CODES:
            return ServerBusyError(message, mailbox_id=box, server_code=server_code)
        if kind == "auth":
            if reply.result == "BAD" or code_name in _AUTH_CONFIGURATION_CODES:
                return ConfigurationError(message, mailbox_id=box, server_code=server_code)
            return AuthenticationError(message, mailbox_id=box, server_code=server_code)
        if kind == "item":
            return MessageRejectedError(
                message, server_message=text, mailbox_id=box, server_code=server_code
            )
        return ConfigurationError(message, mailbox_id=box, server_code=server_code)

    def _fetched(self, reply: Reply) -> list[FetchItem]:
        if reply.items is not None:
            return reply.items
        try:
            return parse_fetch(reply.lines[:-1])
        except ImapParseError as exc:
            self._broken = True
            raise ConnectionFailedError(
                f"the IMAP server sent a FETCH response that cannot be read: {exc}",
                mailbox_id=self._mailbox_id,
            ) from exc

    # -- opening and closing ------------------------------------------------------------------

    async def start(
        self,
        endpoint: ServerEndpoint,
        credentials: Credentials,
        context: ssl.SSLContext | None,
        *,
        sasl_plain: bool,
    ) -> None:
        client = self._client
        limit = self._timeouts.connect
        if endpoint.tls is TlsMode.STARTTLS:
            assert context is not None
            if client.preauthenticated:
                raise ConfigurationError(
                    "the IMAP server logged the connection in before STARTTLS (PREAUTH); "
                    "refusing to continue without TLS",
                    mailbox_id=self._mailbox_id,
                )
            if "STARTTLS" not in client.capabilities:
                raise ConfigurationError(
                    f"IMAP server {endpoint.host} does not offer STARTTLS",
                    mailbox_id=self._mailbox_id,
                )
            reply = await self._run(
                "STARTTLS",
                functools.partial(client.starttls, context, endpoint.host),
                limit=limit,
            )
            if not reply.ok:
                raise self._refused("STARTTLS", reply, kind="session")
            await self._run("CAPABILITY", self._capability, limit=limit)
        if not client.preauthenticated:
            await self._login(credentials, sasl_plain=sasl_plain)
            # The capabilities change after login (CONDSTORE, MOVE, ...); ask again.
            await self._run("CAPABILITY", self._capability, limit=limit)
        self._condstore = "CONDSTORE" in client.capabilities

    async def _capability(self) -> Reply:
        await self._client.capability()
        return Reply(result="OK", lines=[])

    async def _login(self, credentials: Credentials, *, sasl_plain: bool) -> None:
        client = self._client
        capabilities = client.capabilities
        user = credentials.username
        secret = credentials.secret.reveal()
        call: Callable[[], Awaitable[Reply]]
        if credentials.kind is CredentialKind.OAUTH2_ACCESS_TOKEN:
            if "AUTH=XOAUTH2" not in capabilities:
                raise ConfigurationError(
                    "the IMAP server does not offer XOAUTH2 for an OAuth 2.0 access token",
                    mailbox_id=self._mailbox_id,
                )
            payload = f"user={user}\x01auth=Bearer {secret}\x01\x01".encode()
            name = "AUTHENTICATE"
            call = functools.partial(client.authenticate, "XOAUTH2", payload)
        elif sasl_plain and "AUTH=PLAIN" in capabilities:
            name = "AUTHENTICATE"
            payload = b"\0" + user.encode() + b"\0" + secret.encode()
            call = functools.partial(client.authenticate, "PLAIN", payload)
        elif "LOGINDISABLED" in capabilities:
            raise ConfigurationError(
                "the IMAP server refuses LOGIN on this connection (LOGINDISABLED) and offers "
                "no AUTH=PLAIN; use TLS",
                mailbox_id=self._mailbox_id,
            )
        else:
            name = "LOGIN"
            call = functools.partial(client.login, user, secret)
        reply = await self._run(name, call, limit=self._timeouts.connect)
        if not reply.ok:
            raise self._refused(name, reply, kind="auth", what=f"the IMAP login of {user}")

    async def aclose(self) -> None:
        """LOGOUT and close; a broken session is only dropped. Idempotent."""
        if self._closed:
            return
        self._closed = True
        client = self._client
        if self._broken:
            client.abort()
            return
        try:
            async with asyncio.timeout(self._timeouts.close.total_seconds()):
                self._stats.commands["LOGOUT"] += 1
                await client.logout()
                await client.close()
        except (TimeoutError, OSError, aioimaplib.AioImapException):
            # The work is recorded; a server that does not say goodbye only loses the socket.
            client.abort()
        except BaseException:
            client.abort()
            raise

    # -- folders ----------------------------------------------------------------------------

    async def _select(self, folder: str, *, refresh: bool) -> MailboxStatus:
        if not refresh and self._selected == folder and self._status is not None:
            return self._status
        argument = _mailbox_argument(folder)
        self._selected = self._status = self._searched = None
        reply = await self._run(
            "SELECT",
            functools.partial(self._client.select, argument, condstore=self._condstore),
            limit=self._timeouts.command,
        )
        if not reply.ok:
            raise self._refused("SELECT", reply, kind="folder", what=f"opening folder {folder!r}")
        status = parse_select(reply.lines)
        if status.uidvalidity is None:
            raise ConfigurationError(
                f"the IMAP server reported no UIDVALIDITY for {folder!r}; no cursor can be kept",
                mailbox_id=self._mailbox_id,
            )
        self._selected, self._status = folder, status
        return status

    async def list_folders(self) -> Sequence[RemoteFolder]:
        reply = await self._run(
            "LIST", functools.partial(self._client.list, '""', '"*"'), limit=self._timeouts.command
        )
        if not reply.ok:
            raise self._refused("LIST", reply, kind="session")
        try:
            entries = parse_list(reply.lines)
        except ImapParseError as exc:
            raise ConnectionFailedError(
                f"the IMAP server sent a LIST response that cannot be read: {exc}",
                mailbox_id=self._mailbox_id,
            ) from exc
        # Folders that cannot be opened (\Noselect hierarchy nodes) are left out.
        selectable = [e for e in entries if not {"\\NOSELECT", "\\NONEXISTENT"} & e.flags]
        names = {e.name for e in selectable}
        folders = []
        for entry in selectable:
            parent: str | None = None
            if entry.delimiter and entry.delimiter in entry.name:
                candidate = entry.name.rsplit(entry.delimiter, 1)[0]
                parent = candidate if candidate in names else None
            special = next((_SPECIAL_USES[f] for f in entry.flags if f in _SPECIAL_USES), None)
            folders.append(
                RemoteFolder(
                    id=entry.name,
                    name=decode_mailbox_name(entry.name),
                    parent_id=parent,
                    special_use=special,
                )
            )
        return folders

    # -- listing ----------------------------------------------------------------------------

    async def list_new(
        self, folder: str, checkpoint: Checkpoint | None, *, limit: int
    ) -> IncomingBatch:
        if checkpoint is not None and not isinstance(checkpoint, ImapCheckpoint):
            raise ConfigurationError(
                f"an IMAP folder needs an IMAP cursor, not {type(checkpoint).__name__}",
                mailbox_id=self._mailbox_id,
            )
        status = self._status
        newer = self._cached_uids(folder, checkpoint, limit)
        if newer is not None and status is not None and status.uidvalidity is not None:
            # The session's search already found more than this batch: no NOOP, no search.
            uidvalidity, reset = status.uidvalidity, False
            last_uid = checkpoint.last_uid if checkpoint is not None else 0
        else:
            status = await self._refresh(folder)
            assert status.uidvalidity is not None
            uidvalidity = status.uidvalidity
            # A new UIDVALIDITY means old UIDs may now name other messages: list from the
            # start; dedupe by Message-ID in the engine keeps the second pass free of
            # duplicates.
            reset = checkpoint is not None and checkpoint.uidvalidity != uidvalidity
            last_uid = checkpoint.last_uid if checkpoint is not None and not reset else 0
            newer = []
            if status.exists != 0 and (status.uidnext is None or status.uidnext > last_uid + 1):
                newer = await self._uids_above(folder, uidvalidity, last_uid)
        chosen = newer[:limit]
        more = len(newer) > limit
        self._listed_headers = {}  # nothing of an earlier listing is handed out after this one
        refs, checkpoints, self._listed_headers = await self._download(folder, uidvalidity, chosen)
        # HIGHESTMODSEQ describes the whole folder, so only a cursor past every message
        # listed at SELECT time may carry it.
        end = ImapCheckpoint(
            uidvalidity=uidvalidity,
            last_uid=chosen[-1] if chosen else last_uid,
            highest_modseq=None if more else status.highest_modseq,
        )
        return IncomingBatch(
            folder=folder, refs=refs, checkpoints=checkpoints, end=end, reset=reset, more=more
        )

    def _cached_uids(
        self, folder: str, checkpoint: Checkpoint | None, limit: int
    ) -> list[int] | None:
        """The UIDs above ``checkpoint`` the session's last search found, when they fill
        more than a batch of ``limit``: the listing then needs neither a NOOP nor a search
        (``more`` is true whatever came since). ``None`` otherwise: the listing that takes
        the last of them looks again, so new mail is seen as before."""
        known, status = self._searched, self._status
        if (
            not isinstance(checkpoint, ImapCheckpoint)
            or known is None
            or status is None
            or self._selected != folder
            or known[:2] != (folder, checkpoint.uidvalidity)
            or status.uidvalidity != checkpoint.uidvalidity
            or known[2] > checkpoint.last_uid
        ):
            return None
        # The UIDs are ascending: a batch at a time through a large folder stays linear.
        uids = known[3]
        start = bisect.bisect_right(uids, checkpoint.last_uid)
        return uids[start:] if len(uids) - start > limit else None

    async def _refresh(self, folder: str) -> MailboxStatus:
        """The folder's status, with mail that arrived since the last look made visible.

        The first listing of a folder in a session SELECTs it. Later listings of the folder
        still selected ask NOOP, which makes the server take in new mail without opening
        the mailbox again: a SELECT costs the server time in proportion to the folder's size
        (14 ms for 5,000 messages on Dovecot), a NOOP does not. NOOP tells no UIDNEXT, so
        the listing then always searches.
        """
        status = self._status
        if self._selected != folder or status is None:
            return await self._select(folder, refresh=True)
        reply = await self._run("NOOP", self._client.noop, limit=self._timeouts.command)
        if not reply.ok:
            raise self._refused("NOOP", reply, kind="session")
        news = parse_select(reply.lines)
        if news.uidvalidity is not None and news.uidvalidity != status.uidvalidity:
            return await self._select(folder, refresh=True)
        status = attrs.evolve(status, uidnext=None, exists=None)
        self._status = status
        return status

    async def _uids_above(self, folder: str, uidvalidity: int, last_uid: int) -> list[int]:
        """The folder's UIDs above ``last_uid``, ascending.

        A session reading a large folder in batches would otherwise search from each batch's
        cursor to the end again, and read back every UID each time. The UIDs a search found
        are kept: a later listing from a cursor at or after the searched one takes those
        above its cursor and searches only above the highest one (mail that came since).
        """
        known = self._searched
        above = last_uid
        found: list[int] = []
        if known is not None and known[:2] == (folder, uidvalidity) and known[2] <= last_uid:
            found = [uid for uid in known[3] if uid > last_uid]
            above = max(found[-1] if found else last_uid, last_uid)
        reply = await self._run(
            "UID SEARCH",
            functools.partial(self._client.uid_search, "UID", f"{above + 1}:*"),
            limit=self._timeouts.command,
        )
        if not reply.ok:
            raise self._refused("UID SEARCH", reply, kind="session")
        # "n:*" always includes the highest UID, even one below n (RFC 3501 6.4.8).
        found += sorted({uid for uid in parse_search(reply.lines) if uid > above})
        self._searched = (folder, uidvalidity, last_uid, found)
        return found

    async def _download(
        self, folder: str, uidvalidity: int, uids: Sequence[int]
    ) -> tuple[
        tuple[RemoteMessageRef, ...],
        tuple[ImapCheckpoint, ...],
        dict[tuple[str, str], RawHeaders],
    ]:
        """Each message's reference (with its size, and its arrival time when the listing
        asks for it) and the cursor after it, in the order of ``uids``, and its header
        block by (folder, remote id); commands sized by the header budget (sizes are not
        known yet, so each header block counts as the estimate)."""
        # The listings in the order they came: the order of ``uids`` while the server
        # answers in ascending UID order, as servers do. Two lists rather than pairs: every
        # object kept to the end of a download makes the garbage collector's passes longer.
        refs: list[RemoteMessageRef] = []
        cursors: list[ImapCheckpoint] = []
        ascending = True
        last = 0
        headers: dict[tuple[str, str], RawHeaders] = {}
        wanted = set(uids)

        def take(item: FetchItem) -> None:
            # Called as each response is parsed, while the rest of the download arrives.
            nonlocal ascending, last
            uid = item.uid
            if uid is None or uid not in wanted:
                return
            ref = RemoteMessageRef(
                folder=folder,
                remote_id=str(uid),
                received_at=parse_internaldate(item.data("INTERNALDATE")),
                size=item.number("RFC822.SIZE"),
            )
            refs.append(ref)
            cursors.append(ImapCheckpoint(uidvalidity=uidvalidity, last_uid=uid))
            if uid > last:
                last = uid
            else:
                ascending = False  # out of order, or the same message again
            header = item.data("BODY[HEADER]")
            if header is not None:
                headers[(folder, ref.remote_id)] = RawHeaders(ref=ref, data=header)

        per_command = max(
            1, min(self._header_batch_bytes // _HEADER_ESTIMATE, _MAX_UIDS_PER_COMMAND)
        )
        for chunk in _chunks(uids, per_command):
            reply = await self._run(
                "UID FETCH",
                functools.partial(
                    self._client.uid_fetch,
                    uid_set(chunk),
                    self._listing_items,
                    on_item=take,
                ),
                limit=self._timeouts.fetch,
            )
            if not reply.ok:
                raise self._refused("UID FETCH", reply, kind="session")
            if reply.items is None:
                # Parsed at the end rather than as it arrived: take them all (again).
                for item in self._fetched(reply):
                    take(item)
        if not ascending or list(uids) != sorted(uids):
            # In the order of ``uids``, each message once (the last it was taken).
            pairs = zip(refs, cursors, strict=True)
            details = {int(ref.remote_id): (ref, cursor) for ref, cursor in pairs}
            # A message expunged between SEARCH and FETCH is simply gone.
            listed = [details[uid] for uid in uids if uid in details]
            refs, cursors = [ref for ref, _ in listed], [cursor for _, cursor in listed]
        return tuple(refs), tuple(cursors), headers

    # -- fetching -----------------------------------------------------------------------------

    def _header_batches(self, refs: Sequence[RemoteMessageRef]) -> Iterator[list[int]]:
        batch: list[int] = []
        budget = 0
        for ref in refs:
            estimate = min(ref.size or _HEADER_ESTIMATE, _HEADER_ESTIMATE)
            if batch and (
                budget + estimate > self._header_batch_bytes or len(batch) >= _MAX_UIDS_PER_COMMAND
            ):
                yield batch
                batch, budget = [], 0
            batch.append(_uid(ref))
            budget += estimate
        if batch:
            yield batch

    async def fetch_headers(self, refs: Sequence[RemoteMessageRef]) -> Sequence[RawHeaders]:
        listed = self._listed_headers
        out: list[RawHeaders | None] = []
        missing: list[RemoteMessageRef] = []
        for ref in refs:
            raw = listed.pop((ref.folder, ref.remote_id), None)
            if raw is None:
                missing.append(ref)
            elif raw.ref is not ref:
                raw = RawHeaders(ref=ref, data=raw.data)
            out.append(raw)
        found: dict[tuple[str, int], bytes] = {}
        for folder, folder_refs in _by_folder(missing).items():
            await self._select(folder, refresh=False)
            for batch in self._header_batches(folder_refs):
                wanted = set(batch)
                reply = await self._run(
                    "UID FETCH",
                    functools.partial(
                        self._client.uid_fetch, uid_set(batch), "(UID BODY.PEEK[HEADER])"
                    ),
                    limit=self._timeouts.fetch,
                )
                if not reply.ok:
                    raise self._refused("UID FETCH", reply, kind="item")
                for item in self._fetched(reply):
                    uid = item.uid
                    data = item.data("BODY[HEADER]")
                    if uid is not None and uid in wanted and data is not None:
                        found[(folder, uid)] = data
        self._stats.headers_fetched += len(refs) - len(missing) + len(found)
        # A message expunged since it was listed comes back empty: the engine records it as
        # unreadable and moves on instead of failing the whole batch.
        return [
            raw
            if raw is not None
            else RawHeaders(ref=ref, data=found.get((ref.folder, _uid(ref)), b""))
            for ref, raw in zip(refs, out, strict=True)
        ]

    async def fetch_message(self, ref: RemoteMessageRef) -> RawMessage:
        uid = _uid(ref)
        await self._select(ref.folder, refresh=False)
        reply = await self._run(
            "UID FETCH",
            functools.partial(self._client.uid_fetch, str(uid), _MESSAGE_ITEMS),
            limit=self._timeouts.fetch,
        )
        if not reply.ok:
            raise self._refused("UID FETCH", reply, kind="item", what=f"fetching message {uid}")
        for item in self._fetched(reply):
            data = item.data("BODY[]")
            if item.uid == uid and data is not None:
                self._stats.messages_fetched += 1
                return RawMessage(ref=_arrived(ref, item), data=data)
        raise MessageRejectedError(
            f"message {uid} is no longer in folder {ref.folder!r}", mailbox_id=self._mailbox_id
        )

    async def fetch_messages(
        self, refs: Sequence[RemoteMessageRef]
    ) -> Sequence[RawMessage | SyncError]:
        if len({ref.folder for ref in refs}) > 1 or len(refs) < 2:
            return await self._one_at_a_time(refs)
        uids = [_uid(ref) for ref in refs]
        await self._select(refs[0].folder, refresh=False)
        reply = await self._run(
            "UID FETCH",
            functools.partial(self._client.uid_fetch, ",".join(map(str, uids)), _MESSAGE_ITEMS),
            limit=self._timeouts.fetch,
        )
        if not reply.ok:
            # Refused for one of them, perhaps: one at a time tells which.
            return await self._one_at_a_time(refs)
        found: dict[int, tuple[FetchItem, bytes]] = {}
        for item in self._fetched(reply):
            data = item.data("BODY[]")
            if item.uid is not None and data is not None:
                found[item.uid] = (item, data)
        out: list[RawMessage | SyncError] = []
        for ref, uid in zip(refs, uids, strict=True):
            if uid in found:
                item, data = found[uid]
                out.append(RawMessage(ref=_arrived(ref, item), data=data))
            else:
                out.append(
                    MessageRejectedError(
                        f"message {uid} is no longer in folder {ref.folder!r}",
                        mailbox_id=self._mailbox_id,
                    )
                )
        self._stats.messages_fetched += len(found)
        return out

    async def _one_at_a_time(
        self, refs: Sequence[RemoteMessageRef]
    ) -> list[RawMessage | SyncError]:
        """``fetch_message`` for each ref; an error of wider scope than the message stands
        for it and every later one."""
        out: list[RawMessage | SyncError] = []
        for n, ref in enumerate(refs):
            try:
                out.append(await self.fetch_message(ref))
            except SyncError as exc:
                if exc.scope is ErrorScope.ITEM:
                    out.append(exc)
                    continue
                if not out:
                    raise
                return out + [exc] * (len(refs) - n)
        return out

    # -- copies of sent mail ----------------------------------------------------------------

    async def append_sent(self, folder: str, data: bytes) -> None:
        name = _mailbox_argument(folder)
        flags = f"(\\Seen {TRACKED_KEYWORD})"
        reply = await self._append(name, flags, data)
        code = response_code(reply.text) if not reply.ok else None
        if code is not None and code[0] == "TRYCREATE":
            # RFC 3501 6.3.11: the folder does not exist but could be created.
            await self._create(name, folder)
            reply = await self._append(name, flags, data)
        if not reply.ok:
            raise self._refused(
                "APPEND", reply, kind="folder", what=f"storing a sent copy in {folder!r}"
            )

    async def _append(self, name: str, flags: str, data: bytes) -> Reply:
        return await self._run(
            "APPEND",
            functools.partial(self._client.append, name, flags, data),
            limit=self._timeouts.fetch,
        )

    # -- marking ----------------------------------------------------------------------------

    async def mark(self, refs: Sequence[RemoteMessageRef], mark: RemoteMark) -> None:
        keyword = _KEYWORDS[mark]
        move = mark is RemoteMark.UNDELIVERABLE and self._undeliverable_folder is not None
        for folder, folder_refs in _by_folder(refs).items():
            status = await self._select(folder, refresh=False)
            uids = sorted({_uid(ref) for ref in folder_refs})
            # Without \* in PERMANENTFLAGS (or in a read-only folder) the server would not
            # keep the keyword; the cursor, not the keyword, is what prevents re-imports.
            if status.can_store(keyword):
                for chunk in _chunks(uids, _MAX_UIDS_PER_COMMAND):
                    reply = await self._run(
                        "UID STORE",
                        functools.partial(
                            self._client.uid_store,
                            uid_set(chunk),
                            "+FLAGS.SILENT",
                            f"({keyword})",
                        ),
                        limit=self._timeouts.command,
                    )
                    if not reply.ok:
                        raise self._refused("UID STORE", reply, kind="item")
            if move:
                await self._move(uids, await self._undeliverable_target())

    async def _undeliverable_target(self) -> str:
        """The Undeliverable folder's name on the server (the mailbox's own, else
        ``INBOX<delimiter>Undeliverable``)."""
        if self._undeliverable_folder:
            return self._undeliverable_folder
        if self._undeliverable_name is None:
            reply = await self._run(
                "LIST",
                functools.partial(self._client.list, '""', '"INBOX"'),
                limit=self._timeouts.command,
            )
            if not reply.ok:
                raise self._refused("LIST", reply, kind="session")
            try:
                entries = parse_list(reply.lines)
            except ImapParseError as exc:
                raise ConnectionFailedError(
                    f"the IMAP server sent a LIST response that cannot be read: {exc}",
                    mailbox_id=self._mailbox_id,
                ) from exc
            delimiter = next((e.delimiter for e in entries if e.delimiter), None)
            # A server without hierarchy gets a top-level folder.
            self._undeliverable_name = (
                f"INBOX{delimiter}{UNDELIVERABLE_FOLDER}" if delimiter else UNDELIVERABLE_FOLDER
            )
        return self._undeliverable_name

    async def _move(self, uids: Sequence[int], target: str) -> None:
        r"""Move ``uids`` of the selected folder to ``target``, creating it on TRYCREATE.

        With MOVE (RFC 6851) one command; otherwise COPY, then \Deleted, then UID EXPUNGE
        of exactly those messages when UIDPLUS allows it. Without UIDPLUS the originals stay
        flagged \Deleted: a plain EXPUNGE would also remove what other clients deleted.
        """
        name = _mailbox_argument(target)
        can_move = "MOVE" in self._client.capabilities
        for chunk in _chunks(list(uids), _MAX_UIDS_PER_COMMAND):
            uids_text = uid_set(chunk)
            command = "UID MOVE" if can_move else "UID COPY"
            call = self._client.uid_move if can_move else self._client.uid_copy
            reply = await self._run(
                command, functools.partial(call, uids_text, name), limit=self._timeouts.command
            )
            code = response_code(reply.text) if not reply.ok else None
            if code is not None and code[0] == "TRYCREATE":
                await self._create(name, target)
                reply = await self._run(
                    command, functools.partial(call, uids_text, name), limit=self._timeouts.command
                )
            if not reply.ok:
                raise self._refused(command, reply, kind="item", what=f"moving to {target!r}")
            if can_move:
                continue
            deleted = await self._run(
                "UID STORE",
                functools.partial(
                    self._client.uid_store, uids_text, "+FLAGS.SILENT", r"(\Deleted)"
                ),
                limit=self._timeouts.command,
            )
            if not deleted.ok:
                raise self._refused("UID STORE", deleted, kind="item")
            if "UIDPLUS" in self._client.capabilities:
                expunged = await self._run(
                    "UID EXPUNGE",
                    functools.partial(self._client.uid_expunge, uids_text),
                    limit=self._timeouts.command,
                )
                if not expunged.ok:
                    raise self._refused("UID EXPUNGE", expunged, kind="item")

    async def _create(self, name: str, folder: str) -> None:
        created = await self._run(
            "CREATE", functools.partial(self._client.create, name), limit=self._timeouts.command
        )
        code = response_code(created.text) if not created.ok else None
        # ALREADYEXISTS: another session created it meanwhile.
        if not created.ok and not (code is not None and code[0] == "ALREADYEXISTS"):
            raise self._refused("CREATE", created, kind="folder", what=f"creating {folder!r}")
