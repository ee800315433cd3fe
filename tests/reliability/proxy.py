"""A fault-injecting TCP proxy on 127.0.0.1, for plain-text IMAP, POP3 and SMTP.

The proxy forwards bytes between a client (the engine) and a server (Dovecot, aiosmtpd) and
watches the client's command lines to know the protocol stage: the greeting, the login, a
FETCH of headers or of a message, RETR, DATA, the message content, its final dot, ... A
:class:`Fault` armed for a stage fires the next time a connection reaches it:

========  ==================================================================================
action    what the proxy does at the stage
========  ==================================================================================
drop      resets both connections; the command that reached the stage is not forwarded
stall     forwards the command, then nothing more either way; both connections stay open
truncate  forwards the command and the first half of the server's reply, then closes
slow      forwards the command; the server's data then trickles in ten pieces over 1.5 s
          per chunk, longer than any deadline the fault tests set
lag       forwards the command; the server's data then comes in four pieces 30 ms apart,
          within every deadline: slowness alone must not be taken for a failure
========  ==================================================================================

The SMTP ``message`` stage is the message content the client sends after DATA's 354: there
the action applies to the client's data (``truncate`` forwards the first line only, ``slow``
holds the rest of the content back for 1.5 s and ``lag`` for 0.1 s; what the client sent still
arrives afterwards, as bytes in flight do). ``greeting`` applies to the server's first bytes.

:attr:`FaultProxy.injected` counts the faults fired by stage and action; ``open_connections``
and :meth:`FaultProxy.wait_idle` show whether the client let go of every connection.
"""

from __future__ import annotations

import asyncio
import enum
import re
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from types import TracebackType
from typing import ClassVar, Self

import attrs

__all__ = [
    "Action",
    "EwsStages",
    "Fault",
    "FaultProxy",
    "ImapStages",
    "Pop3Stages",
    "SmtpStages",
    "Stages",
]

_CHUNK = 64 * 1024


class Action(enum.StrEnum):
    """What a fault does to the connection."""

    DROP = "drop"
    STALL = "stall"
    TRUNCATE = "truncate"
    SLOW = "slow"
    LAG = "lag"


@attrs.frozen
class Fault:
    """One fault: ``action`` at ``stage``, after letting ``skip`` arrivals there pass."""

    stage: str
    action: Action
    skip: int = 0


class Stages:
    """Names the stage of each client line; one instance per connection (it may keep state).

    :meth:`client_line` returns the stage and whether the fault acts on the client's data
    (``True``) or on the server's reply to it (``False``), or ``None`` for lines that start
    no stage of interest. With ``lines = False`` it gets each chunk the client sent instead
    of each line (for protocols whose requests do not end in a line break, like HTTP).
    """

    lines = True

    def client_line(self, line: bytes) -> tuple[str, bool] | None:
        raise NotImplementedError

    def server_data(self, data: bytes) -> None:
        """Sees the server's data (for stages that depend on a reply)."""


class ImapStages(Stages):
    """IMAP: login, select, search, headers, message, store, logout. The listing's FETCH
    asks the header blocks with the metadata, so it is the headers stage."""

    _PATTERNS = (
        (re.compile(rb"^\S+ (LOGIN|AUTHENTICATE)\b", re.I), "login"),
        (re.compile(rb"^\S+ SELECT\b", re.I), "select"),
        (re.compile(rb"^\S+ UID SEARCH\b", re.I), "search"),
        (re.compile(rb"^\S+ UID FETCH .*BODY\.PEEK\[HEADER\]", re.I), "headers"),
        (re.compile(rb"^\S+ UID FETCH .*BODY\.PEEK\[\]", re.I), "message"),
        (re.compile(rb"^\S+ UID STORE\b", re.I), "store"),
        (re.compile(rb"^\S+ LOGOUT\b", re.I), "logout"),
    )

    def client_line(self, line: bytes) -> tuple[str, bool] | None:
        for pattern, stage in self._PATTERNS:
            if pattern.search(line):
                return stage, False
        return None


class Pop3Stages(Stages):
    """POP3: login (PASS), uidl, list, top, retr, quit."""

    _COMMANDS: ClassVar[dict[bytes, str]] = {
        b"PASS": "login",
        b"UIDL": "uidl",
        b"LIST": "list",
        b"TOP": "top",
        b"RETR": "retr",
        b"QUIT": "quit",
    }

    def client_line(self, line: bytes) -> tuple[str, bool] | None:
        verb = line.split(b" ", 1)[0].strip().upper()
        stage = self._COMMANDS.get(verb)
        return None if stage is None else (stage, False)


class SmtpStages(Stages):
    """SMTP: ehlo, mail, rcpt, data, message (the content), end-of-data (its final dot), quit.

    Inside the content no line is a command; the content starts when the server answers
    DATA with 354, and ends with the line holding a single dot.
    """

    _COMMANDS: ClassVar[dict[bytes, str]] = {
        b"EHLO": "ehlo",
        b"HELO": "ehlo",
        b"MAIL": "mail",
        b"RCPT": "rcpt",
        b"DATA": "data",
        b"QUIT": "quit",
    }

    def __init__(self) -> None:
        self._data_sent = False
        self._in_content = False
        self._content_started = False

    def server_data(self, data: bytes) -> None:
        if self._data_sent and data.startswith(b"354"):
            self._in_content, self._content_started = True, False
        self._data_sent = False

    def client_line(self, line: bytes) -> tuple[str, bool] | None:
        if self._in_content:
            if line.rstrip(b"\r\n") == b".":
                self._in_content = False
                return "end-of-data", False
            if not self._content_started:
                self._content_started = True
                return "message", True
            return None
        verb = line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper()
        stage = self._COMMANDS.get(verb)
        if stage == "data":
            self._data_sent = True
        return None if stage is None else (stage, False)


class EwsStages(Stages):
    """EWS over HTTP: the SOAP operation a request names is its stage (``GetFolder``,
    ``SyncFolderItems``, ``GetItem``, ``UpdateItem``, ``FindItem``, ``CreateItem``, ...).
    The server's greeting does not exist; faults act on the HTTP response."""

    lines = False
    _OPERATION = re.compile(rb"<(?:\w+:)?Body[^>]*>\s*<(?:\w+:)?(\w+)[\s>/]")

    def __init__(self) -> None:
        self._window = b""

    def client_line(self, line: bytes) -> tuple[str, bool] | None:
        # A request's body may span chunks: look at the end of the last one too.
        data, self._window = self._window + line, (self._window + line)[-512:]
        found = self._OPERATION.search(data)
        if found is None:
            return None
        self._window = b""
        return found.group(1).decode(), False


class _Link:
    """One proxied connection: the client's and the server's streams and the fault state."""

    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        stages: Stages,
    ) -> None:
        self.client_reader, self.client_writer = client
        self.server_reader, self.server_writer = server
        self.stages = stages
        self.stalled = False
        self.reply_action: Action | None = None
        self.server_pace: Action | None = None
        self.closed = False

    def forwarding(self) -> bool:
        """Whether bytes still flow (no fault closed or stalled the link)."""
        return not (self.closed or self.stalled)

    def abort(self) -> None:
        """Reset both connections at once."""
        self.closed = True
        for writer in (self.client_writer, self.server_writer):
            writer.transport.abort()

    def close(self) -> None:
        """Close both connections after what was written."""
        self.closed = True
        for writer in (self.client_writer, self.server_writer):
            writer.close()


def _pieces(data: bytes, count: int) -> list[bytes]:
    size = max(1, -(-len(data) // count))
    return [data[i : i + size] for i in range(0, len(data), size)]


# Pacing of the server's data: (pieces per chunk, pause after each piece in seconds).
_PACE = {Action.SLOW: (10, 0.15), Action.LAG: (4, 0.03)}
# How long the client's data is held back at a paced client stage.
_HOLD = {Action.SLOW: 1.5, Action.LAG: 0.1}


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to ``target`` and injects the armed faults."""

    def __init__(self, target_port: int, stages: Callable[[], Stages]) -> None:
        self._target_port = target_port
        self._stages = stages
        self._server: asyncio.Server | None = None
        self._armed: list[Fault] = []
        self._skipped: Counter[Fault] = Counter()
        self._links: set[_Link] = set()
        self._idle = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.connections = 0
        self.injected: Counter[tuple[str, Action]] = Counter()
        self.stages_seen: Counter[str] = Counter()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for link in list(self._links):
            link.abort()
        # Reset links end their handlers at once; a cancelled handler would be logged by
        # asyncio's streams as an error.
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=5)
            for task in pending:
                task.cancel()
        await self._server.wait_closed()

    def arm(self, fault: Fault) -> None:
        """Fire ``fault`` once, at the next connection reaching its stage (after ``skip``)."""
        self._armed.append(fault)

    def disarm(self) -> None:
        """Forget the faults that have not fired."""
        self._armed.clear()

    @property
    def open_connections(self) -> int:
        """Client connections the proxy still holds."""
        return len(self._links)

    async def wait_idle(self, seconds: float) -> bool:
        """Whether every client connection is closed within ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                while self._links:
                    self._idle.clear()
                    await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def _take(self, stage: str) -> Fault | None:
        self.stages_seen[stage] += 1
        for fault in self._armed:
            if fault.stage != stage:
                continue
            if self._skipped[fault] < fault.skip:
                self._skipped[fault] += 1
                return None
            self._armed.remove(fault)
            self.injected[(stage, fault.action)] += 1
            return fault
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            server = await asyncio.open_connection("127.0.0.1", self._target_port)
        except OSError:
            writer.transport.abort()
            self._tasks.discard(task)
            return
        link = _Link((reader, writer), server, self._stages())
        self._links.add(link)
        try:
            greeting = self._take("greeting")
            if greeting is not None and greeting.action is Action.DROP:
                link.abort()
                return
            if greeting is not None:
                link.reply_action = greeting.action
            pumps = [
                asyncio.ensure_future(self._client_to_server(link)),
                asyncio.ensure_future(self._server_to_client(link)),
            ]
            try:
                _, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
                # One side ended: the client hung up (after a deadline, say) or a fault closed
                # the link. Whatever the other side still has in flight is discarded.
                if not link.closed:
                    link.close()
                for pump in pending:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
            finally:
                for pump in pumps:
                    pump.cancel()
        finally:
            if not link.closed:
                link.close()
            self._links.discard(link)
            self._idle.set()
            self._tasks.discard(task)

    async def _client_to_server(self, link: _Link) -> None:
        buffer = b""
        with suppress(OSError):
            while not link.closed:
                data = await link.client_reader.read(_CHUNK)
                if not data:
                    return
                if link.stalled:
                    continue
                if not link.stages.lines:
                    await self._client_line(link, data)
                    continue
                buffer += data
                while b"\n" in buffer and link.forwarding():
                    line, buffer = buffer.split(b"\n", 1)
                    await self._client_line(link, line + b"\n")

    async def _client_line(self, link: _Link, line: bytes) -> None:
        found = link.stages.client_line(line)
        fault = self._take(found[0]) if found is not None else None
        writer = link.server_writer
        if fault is None:
            await self._forward(writer, line, None)
            return
        assert found is not None
        on_client = found[1]
        action = fault.action
        if action is Action.DROP:
            link.abort()
            return
        await self._forward(writer, line, None)
        if on_client and action in _HOLD:
            await asyncio.sleep(_HOLD[action])
        elif action is Action.STALL:
            link.stalled = True
        elif action is Action.TRUNCATE and on_client:
            link.close()
        elif not on_client:
            link.reply_action = action

    async def _server_to_client(self, link: _Link) -> None:
        with suppress(OSError):
            while not link.closed:
                data = await link.server_reader.read(_CHUNK)
                if not data:
                    return
                if link.stalled:
                    continue
                link.stages.server_data(data)
                action, link.reply_action = link.reply_action, None
                if action is Action.STALL:
                    link.stalled = True
                    continue
                if action is Action.TRUNCATE:
                    link.client_writer.write(data[: max(1, len(data) // 2)])
                    await link.client_writer.drain()
                    link.close()
                    return
                if action in (Action.SLOW, Action.LAG):
                    link.server_pace = action
                await self._forward(link.client_writer, data, link.server_pace)

    async def _forward(
        self, writer: asyncio.StreamWriter, data: bytes, pace: Action | None
    ) -> None:
        if pace is None:
            writer.write(data)
            await writer.drain()
            return
        count, pause = _PACE[pace]
        for piece in _pieces(data, count):
            if writer.is_closing():
                return
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(pause)
