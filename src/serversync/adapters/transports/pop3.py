"""The POP3 incoming transport, on the standard library's poplib in worker threads.

POP3 has one folder (the Inbox), no flags and no server-side cursor. A message's remote id is
its UIDL; the cursor is the set of UIDLs already processed, pruned to those still on the
server. Message numbers are only valid within one connection, so every fetch resolves the
UIDL to the current number first.

poplib blocks, so each call runs in a worker thread, one at a time under a deadline. Each
session has a thread of its own: in the event loop's shared pool, sessions stuck on slow
servers would make the others queue, and the queueing would count against their deadlines.
A cancelled or timed-out call does not stop its thread: the session is then marked unusable
and its socket is shut down on close, which ends the thread.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import io
import poplib
import re
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from typing import Final, TypeVar, cast, final

import attrs

from serversync.adapters.transports._connection import (
    incoming_server,
    network_error,
    tls_context,
)
from serversync.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionFailedError,
    MessageRejectedError,
    OperationTimeoutError,
    ServerBusyError,
    SyncError,
)
from serversync.model import (
    INBOX,
    Checkpoint,
    CredentialKind,
    Credentials,
    EmailServerProfile,
    IncomingBatch,
    Mailbox,
    Pop3Checkpoint,
    RawHeaders,
    RawMessage,
    RemoteFolder,
    RemoteMark,
    RemoteMessageRef,
    ServerEndpoint,
    TlsMode,
)
from serversync.ports import IncomingMailSession, IncomingMailTransport
from serversync.settings import Timeouts

__all__ = ["Pop3Stats", "Pop3Transport"]

T = TypeVar("T")

# poplib refuses lines over 2048 bytes, but real mail has longer ones (HTML without breaks).
_MAX_LINE: Final = 1024 * 1024
# The end of a multi-line answer, and how much of one is read at a time.
_TERMINATOR: Final = b"\r\n.\r\n"
_BLOCK: Final = 64 * 1024
# RFC 2449 / RFC 3206 response codes that say "not now" rather than "never".
_BUSY_CODES: Final = frozenset({"IN-USE", "LOGIN-DELAY", "SYS/TEMP"})
_CODE = re.compile(r"^-ERR \[([A-Za-z/-]+)\]")


@final
@attrs.define
class Pop3Stats:
    """What a :class:`Pop3Transport` did, over all its sessions: for tests and metrics.

    ``commands`` counts POP3 commands by name (``"TOP"``, ``"RETR"``, ``"UIDL"``, ...);
    ``headers_fetched`` and ``messages_fetched`` count header blocks and whole messages
    returned; ``bytes_received`` counts the octets of those responses.
    """

    connections: int = 0
    commands: collections.Counter[str] = attrs.Factory(collections.Counter)
    headers_fetched: int = 0
    messages_fetched: int = 0
    bytes_received: int = 0


def _read_line(client: poplib.POP3) -> tuple[bytes, int]:
    line = client.file.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise poplib.error_proto("-ERR line too long")
    if not line:
        raise poplib.error_proto("-ERR EOF")
    octets = len(line)
    if line[-2:] == b"\r\n":
        return line[:-2], octets
    if line[:1] == b"\r":
        return line[1:-1], octets
    return line[:-1], octets


def _close_quietly(client: poplib.POP3) -> None:
    """Close what a (possibly half-built) client holds; also unblocks a thread reading it."""
    file = getattr(client, "file", None)
    sock = getattr(client, "sock", None)
    with suppress(OSError):
        if file is not None:
            file.close()
    if sock is not None:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with suppress(OSError):
            sock.close()


SocketHook = Callable[[socket.socket], None]
"""Told of each socket a client creates, before anything is read from it."""


class _Client(poplib.POP3):
    def __init__(self, host: str, port: int, timeout: float, on_socket: SocketHook) -> None:
        self._on_socket = on_socket
        try:
            super().__init__(host, port, timeout)
        except BaseException:
            _close_quietly(self)  # poplib leaks the socket when the greeting is refused
            raise

    def _create_socket(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout)
        self._on_socket(sock)
        return sock

    def _getline(self) -> tuple[bytes, int]:
        return _read_line(self)


class _SslClient(poplib.POP3_SSL):
    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        context: ssl.SSLContext,
        on_socket: SocketHook,
    ) -> None:
        self._on_socket = on_socket
        self._tls = context
        try:
            super().__init__(host, port, timeout=timeout, context=context)
        except BaseException:
            _close_quietly(self)
            raise

    def _create_socket(self, timeout: float) -> socket.socket:
        raw = socket.create_connection((self.host, self.port), timeout)
        self._on_socket(raw)  # the TLS handshake below may stall too
        sock = self._tls.wrap_socket(raw, server_hostname=self.host)
        self._on_socket(sock)
        return sock

    def _getline(self) -> tuple[bytes, int]:
        return _read_line(self)


def _command(client: poplib.POP3, line: str) -> bytes:
    """Send one command line and return the one-line reply (``+OK``, ``-ERR`` or ``+ ...``)."""
    client.sock.sendall(line.encode(client.encoding) + b"\r\n")
    reply, _ = _read_line(client)
    return reply


def _long_command(client: poplib.POP3, line: str) -> tuple[bytes, int]:
    """Send a command answered with several lines (TOP, RETR); return the lines with CRLF
    ends and dot-stuffing undone, and the octets read.

    poplib reads such an answer line by line in Python, a thousand calls for a 50 KB
    message; this reads it in blocks and looks for the terminating ``.`` line. Nothing
    follows the answer until the next command, so a block never reaches past it.
    """
    client.sock.sendall(line.encode(client.encoding) + b"\r\n")
    file = cast(io.BufferedReader, client.file)  # the socket's makefile("rb")
    first = file.readline(_MAX_LINE + 1)
    if len(first) > _MAX_LINE:
        raise poplib.error_proto("-ERR line too long")
    if not first:
        raise poplib.error_proto("-ERR EOF")
    status = first.rstrip(b"\r\n")
    if not status.startswith(b"+"):
        raise poplib.error_proto(status)
    if not first.endswith(b"\r\n"):
        return _lines_one_by_one(client, len(first))
    # A line break before the first line, so that an answer without lines ends at once.
    buffer = bytearray(b"\r\n")
    searched = 0
    while (end := buffer.find(_TERMINATOR, searched)) < 0:
        searched = max(0, len(buffer) - len(_TERMINATOR) + 1)
        block = file.read1(_BLOCK)
        if not block:
            raise poplib.error_proto("-ERR EOF")
        buffer += block
    if end + len(_TERMINATOR) != len(buffer):
        raise ConnectionResetError("the POP3 server sent more than the answer asked for")
    data = bytes(buffer[: end + 2]).replace(b"\r\n..", b"\r\n.")[2:]
    return data, len(first) + len(buffer) - 2


def _lines_one_by_one(client: poplib.POP3, octets: int) -> tuple[bytes, int]:
    """The rest of a multi-line answer from a server that ends lines with LF alone."""
    lines = []
    line, size = _read_line(client)
    while line != b".":
        if line.startswith(b".."):
            line = line[1:]
        lines.append(line)
        octets += size
        line, size = _read_line(client)
    return b"".join(one + b"\r\n" for one in lines), octets + size


@attrs.frozen
class _Listed:
    number: int
    uidl: str
    size: int | None


@final
class Pop3Transport(IncomingMailTransport):
    """Reads mail over POP3 with poplib in worker threads; one instance serves every mailbox.

    ``timeouts`` bounds every call (connect and login under ``connect``, TOP and RETR under
    ``fetch``, QUIT under ``close``, the rest under ``command``; the socket timeout is
    ``command``). Passwords use USER/PASS; OAuth 2.0 access tokens use ``AUTH XOAUTH2`` when
    the server lists it in its SASL capability.

    POP3 knows no received time, so refs carry none (the engine falls back to the Date
    header), and it has no flags: :meth:`mark` does nothing. Deleting processed messages
    from the server is a later engine decision; this transport never deletes.
    """

    def __init__(self, *, timeouts: Timeouts | None = None) -> None:
        self._timeouts = timeouts or Timeouts()
        self.stats = Pop3Stats()

    @asynccontextmanager
    async def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AsyncIterator[IncomingMailSession]:
        """Connect, secure and log in; QUIT when the block ends."""
        endpoint, login = incoming_server(
            profile, credentials, protocol="POP3", mailbox_id=mailbox.id
        )
        context = tls_context(endpoint, mailbox_id=mailbox.id)
        session = _Pop3Session(
            endpoint,
            login,
            context,
            mailbox_id=mailbox.id,
            timeouts=self._timeouts,
            stats=self.stats,
        )
        try:
            await session.connect()
            yield session
        finally:
            await session.aclose()


@final
class _Pop3Session(IncomingMailSession):
    def __init__(
        self,
        endpoint: ServerEndpoint,
        credentials: Credentials,
        context: ssl.SSLContext | None,
        *,
        mailbox_id: str,
        timeouts: Timeouts,
        stats: Pop3Stats,
    ) -> None:
        self._endpoint = endpoint
        self._credentials = credentials
        self._context = context
        self._mailbox_id = mailbox_id
        self._timeouts = timeouts
        self._stats = stats
        self._lock = asyncio.Lock()
        # Guards _client and _abandoned between the event loop and a connecting thread.
        self._thread_lock = threading.Lock()
        self._client: poplib.POP3 | None = None
        # The socket a connecting thread works on, so that giving up can shut it down.
        self._socket: socket.socket | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serversync-pop3")
        self._abandoned = False
        self._broken = False
        self._numbers: dict[str, int] | None = None
        self._exhausted = False

    # -- plumbing ---------------------------------------------------------------------------

    async def _call(self, what: str, call: Callable[[], T], *, limit: timedelta, stage: str) -> T:
        """Run ``call`` in a worker thread under ``limit``; ``stage`` is auth, item or session."""
        async with self._lock:
            if self._broken or self._abandoned:
                raise ConnectionFailedError(
                    "the POP3 session is closed or was dropped after an earlier failure",
                    mailbox_id=self._mailbox_id,
                )
            usable = False
            try:
                async with asyncio.timeout(limit.total_seconds()):
                    result = await self._in_thread(call)
                usable = True
                return result
            except poplib.error_proto as exc:
                error = self._refused(what, exc, stage=stage)
                usable = not isinstance(error, ConnectionFailedError)
                raise error from exc
            except SyncError:
                usable = True
                raise
            except TimeoutError as exc:
                raise OperationTimeoutError(
                    f"POP3 {what} did not finish within {limit.total_seconds():g} s",
                    mailbox_id=self._mailbox_id,
                ) from exc
            except OSError as exc:
                raise network_error(exc, f"POP3 {what}", mailbox_id=self._mailbox_id) from exc
            finally:
                if not usable:
                    self._broken = True

    def _refused(self, what: str, exc: poplib.error_proto, *, stage: str) -> SyncError:
        raw = exc.args[0] if exc.args else b""
        text = (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)).strip()
        box = self._mailbox_id
        if text.startswith("-ERR EOF"):
            return ConnectionFailedError(
                f"POP3 {what}: the server closed the connection", mailbox_id=box
            )
        found = _CODE.match(text)
        code_name = found.group(1).upper() if found else None
        server_code = f"-ERR [{code_name}]" if code_name else "-ERR"
        message = f"POP3 {what} refused: {text}"
        if code_name in _BUSY_CODES:
            return ServerBusyError(message, mailbox_id=box, server_code=server_code)
        if code_name == "SYS/PERM":
            return ConfigurationError(message, mailbox_id=box, server_code=server_code)
        if code_name == "AUTH" or stage == "auth":
            return AuthenticationError(message, mailbox_id=box, server_code=server_code)
        if stage == "item":
            return MessageRejectedError(
                message, server_message=text, mailbox_id=box, server_code=server_code
            )
        return ConfigurationError(message, mailbox_id=box, server_code=server_code)

    def _connected(self) -> poplib.POP3:
        client = self._client
        if client is None:
            raise ConnectionFailedError(
                "the POP3 session is not connected", mailbox_id=self._mailbox_id
            )
        return client

    # -- opening and closing ------------------------------------------------------------------

    async def connect(self) -> None:
        """Open a connection and log in (again, after an earlier connection was closed)."""
        self._stats.connections += 1
        await self._call(
            "login", self._connect_in_thread, limit=self._timeouts.connect, stage="auth"
        )
        self._numbers = None
        self._exhausted = False

    @property
    def _oauth(self) -> bool:
        return self._credentials.kind is CredentialKind.OAUTH2_ACCESS_TOKEN

    def _connect_in_thread(self) -> None:
        endpoint = self._endpoint
        implicit = endpoint.tls is TlsMode.IMPLICIT
        port = endpoint.port or (995 if implicit else 110)
        timeout = self._timeouts.command.total_seconds()
        client: poplib.POP3
        try:
            if implicit:
                assert self._context is not None
                client = _SslClient(endpoint.host, port, timeout, self._context, self._track)
            else:
                client = _Client(endpoint.host, port, timeout, self._track)
        except poplib.error_proto as exc:
            raise ServerBusyError(
                f"POP3 server {endpoint.host}:{port} refused the connection: {exc}",
                mailbox_id=self._mailbox_id,
            ) from exc
        try:
            if endpoint.tls is TlsMode.STARTTLS:
                assert self._context is not None
                try:
                    client.stls(self._context)
                except poplib.error_proto as exc:
                    raise ConfigurationError(
                        f"POP3 server {endpoint.host} does not offer STLS: {exc}",
                        mailbox_id=self._mailbox_id,
                    ) from exc
                self._track(client.sock)
            self._login(client)
        except BaseException:
            _close_quietly(client)
            raise
        with self._thread_lock:
            if self._abandoned:
                # The caller gave up (deadline, cancel) while this thread was connecting.
                _close_quietly(client)
                raise ConnectionAbortedError("the POP3 session was closed while connecting")
            self._client = client

    def _track(self, sock: socket.socket) -> None:
        """Runs in the connecting thread for each new socket. A session given up meanwhile
        refuses it; afterwards :meth:`aclose` shuts it down, which ends a thread still
        reading a greeting or a login reply from a server that trickles or stalls."""
        with self._thread_lock:
            abandoned = self._abandoned
            if not abandoned:
                self._socket = sock
        if abandoned:
            with suppress(OSError):
                sock.close()
            raise ConnectionAbortedError("the POP3 session was closed while connecting")

    def _login(self, client: poplib.POP3) -> None:
        credentials = self._credentials
        secret = credentials.secret.reveal()
        if not self._oauth:
            self._stats.commands["USER"] += 1
            client.user(credentials.username)
            self._stats.commands["PASS"] += 1
            client.pass_(secret)
            return
        try:
            mechanisms = client.capa().get("SASL", [])
        except poplib.error_proto:
            mechanisms = []
        if "XOAUTH2" not in {m.upper() for m in mechanisms}:
            raise ConfigurationError(
                "the POP3 server does not offer XOAUTH2 for an OAuth 2.0 access token",
                mailbox_id=self._mailbox_id,
            )
        payload = f"user={credentials.username}\x01auth=Bearer {secret}\x01\x01"
        self._stats.commands["AUTH"] += 1
        reply = _command(client, "AUTH XOAUTH2 " + base64.b64encode(payload.encode()).decode())
        if reply.startswith(b"+ "):
            # A refused token gets an error challenge first; an empty answer ends the exchange
            # (poplib would take the "+" for success).
            reply = _command(client, "")
        if not reply.startswith(b"+OK"):
            raise poplib.error_proto(reply)

    async def aclose(self) -> None:
        """QUIT and close; a broken session is only dropped. Idempotent."""
        with self._thread_lock:
            if self._abandoned:
                return
            self._abandoned = True
            client, self._client = self._client, None
            connecting = self._socket if client is None else None
        if connecting is not None:
            # A thread may still be connecting: unblock it; it closes the socket itself.
            with suppress(OSError):
                connecting.shutdown(socket.SHUT_RDWR)
        try:
            if client is not None:
                await self._quit(client)
        finally:
            # The thread ends once its last call returned (at once, or when its socket fails).
            self._worker.shutdown(wait=False)

    async def _in_thread(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, call)

    async def _quit(self, client: poplib.POP3) -> None:
        if self._broken:
            _close_quietly(client)  # also ends a worker thread still blocked on the socket
            return
        self._stats.commands["QUIT"] += 1
        try:
            async with asyncio.timeout(self._timeouts.close.total_seconds()):
                await self._in_thread(client.quit)
        except (TimeoutError, OSError, poplib.error_proto):
            pass  # the work is recorded; a server that does not say goodbye loses the socket
        finally:
            _close_quietly(client)

    async def _reconnect(self) -> None:
        with self._thread_lock:
            client, self._client = self._client, None
        if client is not None:
            await self._quit(client)
        await self.connect()

    # -- folders and listing ------------------------------------------------------------------

    async def list_folders(self) -> Sequence[RemoteFolder]:
        return [RemoteFolder(id=INBOX, name=INBOX)]

    def _listing(self) -> list[_Listed]:
        client = self._connected()
        self._stats.commands["UIDL"] += 1
        _, uidl_lines, _ = client.uidl()
        self._stats.commands["LIST"] += 1
        _, list_lines, _ = client.list()
        sizes: dict[int, int] = {}
        for line in list_lines:
            parts = line.split()
            if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
                sizes[int(parts[0])] = int(parts[1])
        rows: list[_Listed] = []
        seen: set[str] = set()
        for line in uidl_lines:
            parts = line.split()
            if len(parts) < 2 or not parts[0].isdigit():
                continue
            uidl = parts[1].decode("ascii", "replace")
            if uidl in seen:  # identical copies may share a UIDL (RFC 1939 section 7)
                continue
            seen.add(uidl)
            number = int(parts[0])
            rows.append(_Listed(number=number, uidl=uidl, size=sizes.get(number)))
        rows.sort(key=lambda row: row.number)
        return rows

    async def _numbers_now(self) -> dict[str, int]:
        if self._numbers is None:
            rows = await self._call(
                "UIDL", self._listing, limit=self._timeouts.command, stage="session"
            )
            self._numbers = {row.uidl: row.number for row in rows}
        return self._numbers

    async def list_new(
        self, folder: str, checkpoint: Checkpoint | None, *, limit: int
    ) -> IncomingBatch:
        if folder != INBOX:
            raise ConfigurationError(
                f"POP3 has only the Inbox, not {folder!r}", mailbox_id=self._mailbox_id
            )
        if checkpoint is not None and not isinstance(checkpoint, Pop3Checkpoint):
            raise ConfigurationError(
                f"a POP3 mailbox needs a POP3 cursor, not {type(checkpoint).__name__}",
                mailbox_id=self._mailbox_id,
            )
        if self._exhausted:
            # A POP3 connection sees the maildrop as it was at login (RFC 1939): once it has
            # listed everything, only a new login shows newer mail.
            await self._reconnect()
        rows = await self._call(
            "UIDL", self._listing, limit=self._timeouts.command, stage="session"
        )
        self._numbers = {row.uidl: row.number for row in rows}
        seen = checkpoint.seen_uidls if checkpoint is not None else frozenset()
        # Only UIDLs still on the server are kept: the cursor stays as small as the maildrop,
        # and a UIDL that comes back (some servers hash the content) is new again, which the
        # engine's dedupe by Message-ID makes safe.
        done = set(seen & self._numbers.keys())
        fresh = [row for row in rows if row.uidl not in seen]
        chosen = fresh[:limit]
        more = len(fresh) > limit
        checkpoints = []
        for row in chosen:
            done.add(row.uidl)
            checkpoints.append(Pop3Checkpoint(seen_uidls=frozenset(done)))
        self._exhausted = not more
        return IncomingBatch(
            folder=INBOX,
            refs=tuple(
                RemoteMessageRef(folder=INBOX, remote_id=row.uidl, size=row.size) for row in chosen
            ),
            checkpoints=tuple(checkpoints),
            end=Pop3Checkpoint(seen_uidls=frozenset(done)),
            more=more,
        )

    # -- fetching -----------------------------------------------------------------------------

    async def fetch_headers(self, refs: Sequence[RemoteMessageRef]) -> Sequence[RawHeaders]:
        numbers = await self._numbers_now()

        def top_all() -> list[RawHeaders]:
            client = self._connected()
            headers = []
            for ref in refs:
                number = numbers.get(ref.remote_id)
                if number is None:
                    # Deleted by another client since it was listed: the engine records it as
                    # unreadable and moves on.
                    headers.append(RawHeaders(ref=ref, data=b""))
                    continue
                self._stats.commands["TOP"] += 1
                data, octets = _long_command(client, f"TOP {number} 0")
                self._stats.bytes_received += octets
                self._stats.headers_fetched += 1
                headers.append(RawHeaders(ref=ref, data=data))
            return headers

        return await self._call("TOP", top_all, limit=self._timeouts.fetch, stage="item")

    async def fetch_message(self, ref: RemoteMessageRef) -> RawMessage:
        numbers = await self._numbers_now()
        number = numbers.get(ref.remote_id)
        if ref.folder != INBOX or number is None:
            raise MessageRejectedError(
                f"message {ref.remote_id} is no longer on the POP3 server",
                mailbox_id=self._mailbox_id,
            )

        def retrieve() -> RawMessage:
            client = self._connected()
            self._stats.commands["RETR"] += 1
            data, octets = _long_command(client, f"RETR {number}")
            self._stats.bytes_received += octets
            self._stats.messages_fetched += 1
            return RawMessage(ref=ref, data=data)

        return await self._call("RETR", retrieve, limit=self._timeouts.fetch, stage="item")

    async def mark(self, refs: Sequence[RemoteMessageRef], mark: RemoteMark) -> None:
        """Nothing to do: POP3 has no flags or keywords; the cursor alone prevents re-imports."""
