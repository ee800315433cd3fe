"""A typed IMAP client over aioimaplib 2.x's protocol, with its rough edges worked around.

The adapter does not use ``aioimaplib.IMAP4``: its constructor starts connecting in a task
nobody awaits (so connection errors surface late, or as "Task exception was never
retrieved"), it has no STARTTLS, and every call adds its own fixed timeout. This module opens
the connection itself and drives ``IMAP4ClientProtocol`` directly; the session in
:mod:`serversync.adapters.transports.imap` adds deadlines, error mapping and parsing.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from collections.abc import Callable
from typing import Any, Final, final

import aioimaplib  # type: ignore[import-untyped]
import attrs
from aioimaplib.aioimaplib import Command, FetchCommand  # type: ignore[import-untyped]

from serversync.adapters.transports._imap_parse import (
    FetchItem,
    ImapParseError,
    Value,
    parse_fetch,
    quote,
    simple_fetch,
)

__all__ = ["GreetingRefusedError", "ImapClient", "Reply"]

_CRLF: Final = b"\r\n"
# The start of an untagged FETCH response as aioimaplib stores it (without "* ").
_FETCH_START: Final = re.compile(rb"[0-9]+ FETCH \(")
_FETCH_DATA: Final = re.compile(rb"[0-9]+ FETCH")
# A FETCH response of name/value pairs of numbers and plain quoted strings, the last
# value perhaps a literal ({n} ends the line): groups sequence, leading pairs, literal name,
# literal size, last pair.
_SIMPLE_FETCH: Final = re.compile(
    rb"\* ([0-9]+) FETCH \(((?:[A-Za-z0-9.\[\]]+ (?:[0-9]+|\"[^\"\\\r\n]*\") )*)"
    rb"(?:([A-Za-z0-9.\[\]]+) \{([0-9]+)\}\r\n"
    rb"|([A-Za-z0-9.\[\]]+ (?:[0-9]+|\"[^\"\\\r\n]*\"))\)\r\n)"
)
_SIMPLE_PAIR: Final = re.compile(rb"([A-Za-z0-9.\[\]]+) ([0-9]+|\"[^\"\\\r\n]*\")")
# aioimaplib's test for a tagged status response.
_TAGGED: Final = re.compile(rb"[A-Z0-9]+ ((OK)|(NO)|(BAD))")


@attrs.frozen
class Reply:
    """A command's outcome: ``OK``/``NO``/``BAD``, the untagged lines and the tagged text last."""

    result: str
    lines: list[bytes | bytearray]
    items: list[FetchItem] | None = None
    """For FETCH: the FETCH responses among ``lines``, when already parsed."""

    @property
    def ok(self) -> bool:
        """Whether the server answered OK."""
        return self.result == "OK"

    @property
    def text(self) -> bytes:
        """The tagged status text (``[AUTHENTICATIONFAILED] Authentication failed.``)."""
        return bytes(self.lines[-1]) if self.lines else b""


class GreetingRefusedError(Exception):
    """The server greeted with BYE (or nothing IMAP-like) instead of OK/PREAUTH."""


def _reply(response: Any) -> Reply:
    return Reply(result=str(response.result), lines=list(response.lines))


def _plain_fetch(command: Any) -> bool:
    """Whether ``command`` is a FETCH without aioimaplib's per-command timer (the adapter sets
    its own deadlines), whose response lines may be appended to it directly."""
    return type(command) is FetchCommand and command._timeout is None


def _literal_size(line: bytes) -> int | None:
    """The size of the literal ``line`` announces at its end (``... {123}``), if any."""
    if not line.endswith(b"}"):
        return None
    start = line.rfind(b"{")
    digits = line[start + 1 : -1]
    return int(digits) if start >= 0 and digits.isdigit() else None


_NAMES: dict[bytes, str] = {}


def _attribute_name(name: bytes) -> str:
    """A FETCH attribute's name as :class:`FetchItem` keys it (upper case); the few names
    a session sees are decoded once."""
    known = _NAMES.get(name)
    if known is None:
        known = name.decode().upper()
        if len(_NAMES) < 256:
            _NAMES[name] = known
    return known


def _retrieve(future: asyncio.Future[None]) -> None:
    # Nobody may be waiting any more (the connect deadline passed); mark the outcome as seen.
    if not future.cancelled():
        future.exception()


@attrs.define
class _Stream:
    """The FETCH responses of one command parsed so far: ``items`` from the first
    ``parsed`` response lines; ``failed`` when they must be parsed again at the end.
    ``on_item`` sees each item as it is parsed (see :meth:`ImapClient.uid_fetch`), and
    ``items`` then stays empty: an item kept to the end of a download of thousands outlives
    the garbage collector's youngest generation and makes its collections slower."""

    items: list[FetchItem] = attrs.Factory(list)
    parsed: int = 0
    failed: bool = False
    on_item: Callable[[FetchItem], None] | None = None

    def add_one(self, item: FetchItem, parsed: int) -> None:
        """One item parsed, up to response line ``parsed``."""
        self.parsed = parsed
        if self.on_item is None:
            self.items.append(item)
            return
        try:
            self.on_item(item)
        except Exception:
            # Not the reader's to report: the caller gets the lines and meets it again.
            self.on_item = None
            self.failed = True

    def add(self, items: list[FetchItem], parsed: int) -> None:
        """``items`` parsed, up to response line ``parsed``."""
        for item in items:
            self.add_one(item, parsed)
        self.parsed = parsed


class _Protocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop, None)
        self.ready: asyncio.Future[None] = loop.create_future()
        self.ready.add_done_callback(_retrieve)
        self.closed: asyncio.Future[None] = loop.create_future()
        self.closed.add_done_callback(_retrieve)
        self.sasl_responses: list[bytes] = []
        self.bytes_received = 0
        # The command a response line continues (aioimaplib's reader keeps it too).
        self.current_command: Any = None
        self._buffer = bytearray()
        self._literal_left: int | None = None
        self._fetch_depth: int | None = None
        self._fetch_begin = 0
        # FETCH responses parsed as they arrived, by id() of the command they answer.
        self._streams: dict[int, _Stream] = {}

    def data_received(self, d: bytes) -> None:
        # aioimaplib's own reader handles one line per level of recursion (a chunk of ~1000
        # lines overflows the stack), copies what is left of the chunk for every line, and
        # decides whether a FETCH response goes on by re-reading all of the command's lines
        # so far (quadratic in the lines of a response). This reader cuts lines and literals
        # out of one buffer and hands them to aioimaplib's line handler the way its reader
        # does, keeping the open-parenthesis count of the current FETCH response as it goes.
        self.bytes_received += len(d)
        buffer = self._buffer
        buffer += d
        position = 0
        try:
            while True:
                if self._literal_left is not None:
                    size = self._literal_left
                    if len(buffer) - position < size:
                        break
                    literal = buffer[position : position + size]
                    position += size
                    self._literal_left = None
                    command = self.current_command
                    assert command is not None
                    if _plain_fetch(command):
                        command._resp_lines.append(literal)
                    else:
                        command.append_to_resp(literal)
                    continue
                if self.current_command is None and buffer.startswith(b"* ", position):
                    taken, waiting = self._simple_fetches(buffer, position)
                    if waiting:
                        position = taken
                        break
                    if taken != position:
                        position = taken
                        continue
                end = buffer.find(_CRLF, position)
                if end < 0:
                    break
                line = bytes(buffer[position:end])
                position = end + 2
                self._line(line)
        finally:
            del buffer[:position]
        if self.pending_sync_command is not None:
            self.pending_sync_command.flush()

    def _simple_fetches(self, buffer: bytearray, position: int) -> tuple[int, bool]:
        """Take the FETCH responses from ``position`` on, each whole, while they have the
        shape nearly every response to the adapter's FETCH commands has (name/value pairs
        of numbers and plain quoted strings, the last value perhaps a literal): (where the
        responses taken end, whether the next one has that shape but its literal has not
        all arrived). The line-by-line path reads whatever comes after.

        One match per response instead of a callback per line and literal: the header
        phase of a large folder is otherwise bound by this reader's CPU.
        """
        command = self.pending_async_commands.get("FETCH")
        if self.pending_sync_command is not None or not _plain_fetch(command):
            return position, False
        lines: list[bytes | bytearray] = command._resp_lines
        stream = self._streams.get(id(command))
        if stream is None:
            stream = self._streams[id(command)] = _Stream()
        match, pairs, available = _SIMPLE_FETCH.match, _SIMPLE_PAIR.findall, len(buffer)
        while True:
            found = match(buffer, position)
            if found is None:
                return position, False
            line_end = found.end()
            size_text = found.group(4)
            literal: bytes | None = None
            if size_text is not None:
                close = line_end + int(size_text)
                if available < close + 3:
                    return position, True
                if buffer[close : close + 3] != b")\r\n":
                    return position, False
                literal = bytes(buffer[line_end:close])
                end = close + 3
                last = found.end(2)
            else:
                end = line_end
                last = found.end(5)
            attributes: dict[str, Value] = {}
            for name, value in pairs(buffer, found.start(2), last):
                attributes[_attribute_name(name)] = (
                    value[1:-1] if value[0] == 34 else value.decode()  # 34: '"'
                )
            if literal is not None:
                attributes[_attribute_name(found.group(3))] = literal
            if "NIL" in attributes:
                return position, False  # NIL is a value, never a name: the general parser says so
            begin = len(lines)
            # The response as the line-by-line path stores it, for a reply parsed again whole.
            lines.append(bytes(buffer[position + 2 : line_end - 2]))
            if literal is not None:
                lines += (bytearray(literal), b")")
            if stream.failed or begin != stream.parsed:
                stream.failed = True
            else:
                item = FetchItem(sequence=int(found.group(1)), attributes=attributes)
                stream.add_one(item, len(lines))
            position = end
            if not buffer.startswith(b"* ", position):
                return position, False

    def _line(self, line: bytes) -> None:
        """One response line, handed on as aioimaplib's reader would."""
        command = self._fetch_line(line)
        if command is None:
            command = self._handle_line(line, self.current_command)
        fetch = isinstance(command, FetchCommand)
        if fetch:
            # aioimaplib stores untagged lines without "* "; a FETCH response starts anew.
            stored = line[2:] if line[:2] == b"* " else line
            if self._fetch_depth is None or _FETCH_START.match(stored):
                self._fetch_depth = 0
                self._fetch_begin = len(command._resp_lines) - 1
            self._fetch_depth += line.count(b"(") - line.count(b")")
        size = _literal_size(line)
        if size is not None:
            if command is None:
                command = Command("NIL", "unused", loop=self.loop)
            self.current_command = command
            if size:
                self._literal_left = size
            else:
                command.append_to_resp(bytearray())
        elif command is not None and (self._fetch_depth != 0 if fetch else command.wait_data()):
            self.current_command = command
        else:
            if fetch:
                self._fetch_done(command)
            self.current_command = None
            self._fetch_depth = None

    def _fetch_done(self, command: Any) -> None:
        """Parse the FETCH response that just ended while the rest is still arriving.

        The parse then overlaps with the server producing the next responses, instead of
        waiting for the whole download. The command's lines must be parsed without a gap;
        anything unusual leaves the parsing to the caller, over all the lines.
        """
        stream = self._streams.setdefault(id(command), _Stream())
        lines = command._resp_lines
        begin = self._fetch_begin
        if stream.failed or begin != stream.parsed:
            stream.failed = True
            return
        try:
            item, used = simple_fetch(lines, begin)
            if begin + used != len(lines):
                raise LookupError
            items = [item]
        except LookupError:
            try:
                items = parse_fetch(lines[begin:])
            except ImapParseError:
                stream.failed = True
                return
        stream.add(items, len(lines))

    def _fetch_line(self, line: bytes) -> Any:
        """The FETCH command ``line`` belongs to, after appending it, or ``None`` for any other
        line. For the lines of a FETCH response (nearly all lines of a big download) this does
        what aioimaplib's line handler does, without its per-line bookkeeping."""
        current = self.current_command
        if current is not None:
            if _plain_fetch(current) and not _TAGGED.match(line):
                current._resp_lines.append(line)
                return current
            return None
        if line[:2] != b"* " or self.pending_sync_command is not None:
            return None
        stored = line.replace(b"* ", b"")  # as aioimaplib stores untagged lines
        if not _FETCH_DATA.match(stored):
            return None
        command = self.pending_async_commands.get("FETCH")
        if not _plain_fetch(command):
            return None
        command._resp_lines.append(stored)
        return command

    @property
    def pending_input(self) -> bool:
        """Whether bytes were received that no complete line or literal used yet."""
        return bool(self._buffer) or self._literal_left is not None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        reason = f" ({exc})" if exc else ""
        error = ConnectionResetError(f"the IMAP server closed the connection{reason}")
        if not self.ready.done():
            self.ready.set_exception(error)
        # aioimaplib leaves pending commands waiting forever when the connection drops.
        pending = [c for c in self.pending_async_commands.values() if c is not None]
        if self.pending_sync_command is not None:
            pending.append(self.pending_sync_command)
        for command in pending:
            command._exception = error
            command.close(b"connection lost", "KO")
        if not self.closed.done():
            self.closed.set_result(None)

    async def welcome(self, command: bytes) -> None:
        # aioimaplib raises a BYE greeting inside a task nobody awaits; report it instead.
        try:
            await super().welcome(command)
        except Exception:
            if not self.ready.done():
                text = bytes(command).decode(errors="replace")
                self.ready.set_exception(GreetingRefusedError(text))
        else:
            if not self.ready.done():
                self.ready.set_result(None)

    def _continuation(self, line: bytes) -> None:
        command = self.pending_sync_command
        if command is not None and command.name == "AUTHENTICATE":
            # aioimaplib never answers a SASL challenge: a refused XOAUTH2 token gets a "+ <json>"
            # challenge and then hangs. Send the queued response, else an empty one, which makes
            # the server finish with a tagged NO.
            answer = self.sasl_responses.pop(0) if self.sasl_responses else b""
            self.transport.write(answer + _CRLF)
            return
        super()._continuation(line)


@final
class ImapClient:
    """One IMAP connection: typed commands returning :class:`Reply`.

    Commands raise ``OSError`` when the connection is lost and ``aioimaplib`` errors when the
    library's state machine refuses them; deadlines are the caller's job.
    """

    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol

    @classmethod
    async def connect(cls, host: str, port: int, context: ssl.SSLContext | None) -> ImapClient:
        """Connect (with TLS when ``context`` is given) and wait for the server's greeting."""
        loop = asyncio.get_running_loop()
        protocol = _Protocol(loop)
        await loop.create_connection(
            lambda: protocol,
            host,
            port,
            ssl=context,
            server_hostname=host if context is not None else None,
        )
        client = cls(protocol)
        try:
            await protocol.ready
        except BaseException:
            client.abort()
            raise
        return client

    @property
    def capabilities(self) -> frozenset[str]:
        """The server's capabilities, upper-cased."""
        return frozenset(str(c).upper() for c in self._protocol.capabilities)

    @property
    def bytes_received(self) -> int:
        """Bytes read from the server on this connection."""
        return self._protocol.bytes_received

    @property
    def preauthenticated(self) -> bool:
        """Whether the server greeted with PREAUTH (already logged in)."""
        return bool(self._protocol.state == aioimaplib.AUTH)

    def _command(self, name: str, *args: str) -> Any:
        return Command(name, self._protocol.new_tag(), *args, loop=self._protocol.loop)

    async def capability(self) -> None:
        """Ask for the capabilities again (after STARTTLS and after logging in)."""
        await self._protocol.capability()

    async def starttls(self, context: ssl.SSLContext, server_hostname: str) -> Reply:
        """STARTTLS, then the TLS handshake on the same connection."""
        protocol = self._protocol
        reply = _reply(await protocol.execute(self._command("STARTTLS")))
        if not reply.ok:
            return reply
        if protocol.pending_input:
            # Bytes sent after the OK but before the handshake could be injected responses.
            raise ConnectionResetError("the server sent data before the TLS handshake")
        protocol.transport = await protocol.loop.start_tls(
            protocol.transport, protocol, context, server_hostname=server_hostname
        )
        return reply

    async def login(self, user: str, password: str) -> Reply:
        """LOGIN (aioimaplib quotes only the password; the user name is quoted here)."""
        return _reply(await self._protocol.login(quote(user), password))

    async def authenticate(self, mechanism: str, payload: bytes) -> Reply:
        """AUTHENTICATE with an initial response (SASL-IR) or in answer to the first challenge."""
        protocol = self._protocol
        initial = base64.b64encode(payload).decode("ascii")
        if "SASL-IR" in self.capabilities:
            command = self._command("AUTHENTICATE", mechanism, initial)
            protocol.sasl_responses = []
        else:
            command = self._command("AUTHENTICATE", mechanism)
            protocol.sasl_responses = [initial.encode("ascii")]
        try:
            reply = _reply(await protocol.execute(command, scrub=initial))
        finally:
            protocol.sasl_responses = []
        if reply.ok:
            protocol.state = aioimaplib.AUTH
        return reply

    async def select(self, mailbox: str, *, condstore: bool) -> Reply:
        """SELECT ``mailbox`` (already quoted), with CONDSTORE when asked."""
        protocol = self._protocol
        args = [mailbox, "(CONDSTORE)"] if condstore else [mailbox]
        reply = _reply(await protocol.execute(self._command("SELECT", *args)))
        # A failed SELECT still closes the mailbox that was selected before (RFC 3501 6.3.1).
        protocol.state = aioimaplib.SELECTED if reply.ok else aioimaplib.AUTH
        return reply

    async def uid_search(self, *criteria: str) -> Reply:
        """UID SEARCH without a CHARSET (the criteria are ASCII)."""
        return _reply(await self._protocol.search(*criteria, by_uid=True, charset=None))

    async def uid_fetch(
        self, uids: str, items: str, *, on_item: Callable[[FetchItem], None] | None = None
    ) -> Reply:
        """UID FETCH ``uids`` ``items``; the reply carries the parsed FETCH responses when
        they could be parsed as they arrived.

        ``on_item`` is called with each of them as it is parsed, while the rest are still
        on their way: work done there overlaps with the server's. The reply's ``items`` is
        then empty when every one was handed over. When the reply comes without ``items``
        (parsed at the end instead), it may have seen some of them, so the caller's
        handling of the items must be idempotent.
        """
        protocol = self._protocol
        command = FetchCommand(protocol.new_tag(), uids, items, prefix="UID", loop=protocol.loop)
        protocol._streams[id(command)] = _Stream(on_item=on_item)
        try:
            reply = _reply(await protocol.execute(command))
        finally:
            stream = protocol._streams.pop(id(command), None)
        if stream is not None and not stream.failed and stream.parsed == len(reply.lines) - 1:
            return attrs.evolve(reply, items=stream.items)
        return reply

    async def uid_store(self, uids: str, operation: str, flags: str) -> Reply:
        """UID STORE ``uids`` ``operation`` ``flags``."""
        return _reply(await self._protocol.store(uids, operation, flags, by_uid=True))

    async def uid_move(self, uids: str, mailbox: str) -> Reply:
        """UID MOVE ``uids`` to ``mailbox`` (already quoted); needs the MOVE capability."""
        return _reply(await self._protocol.move(uids, mailbox, by_uid=True))

    async def uid_copy(self, uids: str, mailbox: str) -> Reply:
        """UID COPY ``uids`` to ``mailbox`` (already quoted)."""
        return _reply(await self._protocol.copy(uids, mailbox, by_uid=True))

    async def uid_expunge(self, uids: str) -> Reply:
        """UID EXPUNGE ``uids``; needs UIDPLUS."""
        return _reply(await self._protocol.expunge(uids, by_uid=True))

    async def noop(self) -> Reply:
        """NOOP: the server reports what changed in the selected mailbox (EXISTS, EXPUNGE)."""
        return _reply(await self._protocol.simple_command("NOOP"))

    async def list(self, reference: str, pattern: str) -> Reply:
        """LIST ``reference`` ``pattern`` (both already quoted)."""
        return _reply(await self._protocol.simple_command("LIST", reference, pattern))

    async def append(self, mailbox: str, flags: str, data: bytes) -> Reply:
        """APPEND ``data`` to ``mailbox`` (already quoted) with ``flags`` (a parenthesized list)."""
        return _reply(await self._protocol.append(data, mailbox, flags))

    async def create(self, mailbox: str) -> Reply:
        """CREATE ``mailbox`` (already quoted)."""
        return _reply(await self._protocol.simple_command("CREATE", mailbox))

    async def logout(self) -> Reply:
        """LOGOUT."""
        return _reply(await self._protocol.logout())

    async def close(self) -> None:
        """Close the connection and wait until it is closed."""
        transport = self._protocol.transport
        if transport is None:
            return
        transport.close()
        await asyncio.shield(self._protocol.closed)

    def abort(self) -> None:
        """Drop the connection at once."""
        transport = self._protocol.transport
        if transport is not None:
            transport.abort()
