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
import ssl
from typing import Any, Final, final

import aioimaplib  # type: ignore[import-untyped]
import attrs
from aioimaplib.aioimaplib import Command  # type: ignore[import-untyped]

from serversync.adapters.transports._imap_parse import quote

__all__ = ["GreetingRefusedError", "ImapClient", "Reply"]

_CRLF: Final = b"\r\n"
# aioimaplib parses one line per level of recursion, so a chunk with ~1000 short lines (a big
# LIST or metadata FETCH) overflows the stack; it is fed at most this many lines at a time.
_LINES_PER_FEED: Final = 128


@attrs.frozen
class Reply:
    """A command's outcome: ``OK``/``NO``/``BAD``, the untagged lines and the tagged text last."""

    result: str
    lines: list[bytes | bytearray]

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


def _retrieve(future: asyncio.Future[None]) -> None:
    # Nobody may be waiting any more (the connect deadline passed); mark the outcome as seen.
    if not future.cancelled():
        future.exception()


class _Protocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop, None)
        self.ready: asyncio.Future[None] = loop.create_future()
        self.ready.add_done_callback(_retrieve)
        self.closed: asyncio.Future[None] = loop.create_future()
        self.closed.add_done_callback(_retrieve)
        self.sasl_responses: list[bytes] = []
        self.bytes_received = 0

    def data_received(self, d: bytes) -> None:
        self.bytes_received += len(d)
        start = 0
        size = len(d)
        while start < size:
            cut = start
            for _ in range(_LINES_PER_FEED):
                found = d.find(b"\n", cut)
                if found < 0:
                    cut = size
                    break
                cut = found + 1
            super().data_received(d[start:cut])
            start = cut

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
        if protocol.incomplete_line:
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

    async def uid_fetch(self, uids: str, items: str) -> Reply:
        """UID FETCH ``uids`` ``items``."""
        return _reply(await self._protocol.fetch(uids, items, by_uid=True))

    async def uid_store(self, uids: str, operation: str, flags: str) -> Reply:
        """UID STORE ``uids`` ``operation`` ``flags``."""
        return _reply(await self._protocol.store(uids, operation, flags, by_uid=True))

    async def list(self, reference: str, pattern: str) -> Reply:
        """LIST ``reference`` ``pattern`` (both already quoted)."""
        return _reply(await self._protocol.simple_command("LIST", reference, pattern))

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
