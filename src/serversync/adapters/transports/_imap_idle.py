"""IMAP IDLE (RFC 2177) for push hints: one connection watching a mailbox's Inbox.

The connection is an ordinary session of the IMAP transport (TLS, login, deadlines, error
mapping); the Inbox is opened with EXAMINE, read-only, so the watch never takes the
``\\Recent`` flags from other clients. IDLE is re-issued every ``refresh_every`` (servers may
end an IDLE after 30 minutes); the server must answer DONE within ``Timeouts.command``, which
doubles as the watchdog for a connection that died without a word.

aioimaplib's own IDLE helpers are not used: ``idle_start`` leaves tasks nobody awaits and a
timer that puts a stop marker into a queue shared by every IDLE of the connection (a late
marker ends the next IDLE at once), ``wait_server_push`` wakes nobody when the connection
drops, ``examine()`` leaves the client in the AUTH state where it refuses IDLE, and
``idle_done`` sends DONE whether or not the server accepted the IDLE. The command is driven
here on the protocol instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from aioimaplib.aioimaplib import IdleCommand  # type: ignore[import-untyped]

from serversync.adapters.transports._imap_parse import quote
from serversync.adapters.transports._imap_protocol import Reply
from serversync.errors import ConfigurationError, ConnectionFailedError, OperationTimeoutError
from serversync.ports import IncomingMailSession, PushHint
from serversync.settings import Timeouts

if TYPE_CHECKING:
    from serversync.adapters.transports.imap import _ImapSession

__all__ = ["watch_inbox"]

# Put into the queue when the IDLE command ends (tagged reply or connection lost).
_ENDED: Final = object()
# Untagged responses that announce new mail in the selected mailbox.
_NEW_MAIL: Final = (b" EXISTS", b" RECENT")


class _Idle(IdleCommand):  # type: ignore[misc]
    """An IDLE whose end, whatever ends it, wakes whoever waits for its '+' or its pushes."""

    def __init__(self, tag: str, queue: asyncio.Queue[Any], accepted: asyncio.Event, **kw: Any):
        super().__init__(tag, queue, **kw)
        self._accepted = accepted

    def close(self, line: bytes, result: str) -> None:
        super().close(line, result)
        self.flush()  # untagged lines that came with the tagged reply
        self.queue.put_nowait(_ENDED)
        self._accepted.set()


def _news(lines: list[bytes]) -> bool:
    return any(bytes(line).upper().endswith(_NEW_MAIL) for line in lines)


def _bye(lines: list[bytes]) -> bool:
    return any(bytes(line).upper().startswith(b"BYE") for line in lines)


async def watch_inbox(
    opened: IncomingMailSession,
    *,
    hint: Callable[[PushHint], None],
    refresh_every: timedelta,
    timeouts: Timeouts,
) -> None:
    """Watch the Inbox of the open IMAP session ``opened`` until cancelled or failed."""
    session: _ImapSession = opened  # type: ignore[assignment]
    await _Watcher(session, timeouts).run(hint, refresh_every.total_seconds())


class _Watcher:
    def __init__(self, session: _ImapSession, timeouts: Timeouts) -> None:
        self._session = session
        self._client = session._client
        self._protocol: Any = session._client._protocol
        self._timeouts = timeouts
        self._mailbox_id = session._mailbox_id
        self._idle: _Idle | None = None

    async def run(self, hint: Callable[[PushHint], None], refresh_every: float) -> None:
        session = self._session
        if "IDLE" not in self._client.capabilities:
            raise ConfigurationError(
                "the IMAP server does not offer IDLE; the mailbox is polled only",
                mailbox_id=self._mailbox_id,
            )
        reply = await session._run("EXAMINE", self._examine, limit=self._timeouts.command)
        if not reply.ok:
            raise session._refused("EXAMINE", reply, kind="folder", what="opening the Inbox")
        try:
            first = True
            while True:
                queue = await self._begin()
                if first:
                    hint(PushHint.WATCHING)
                    first = False
                await self._listen(queue, hint, refresh_every)
                await self._end(queue, hint, self._timeouts.command)
        finally:
            if self._idle is not None and not session._broken:
                # Cancelled or failed mid-IDLE: end it politely so that LOGOUT follows, or
                # else drop the connection (LOGOUT would wait behind the IDLE).
                try:
                    await self._end(None, None, self._timeouts.close)
                except BaseException as exc:
                    session._broken = True
                    if not isinstance(exc, Exception):
                        raise

    async def _examine(self) -> Reply:
        response = await self._protocol.simple_command("EXAMINE", quote("INBOX"))
        return Reply(result=str(response.result), lines=list(response.lines))

    def _fail(self, why: str, exc: BaseException | None = None) -> ConnectionFailedError:
        self._session._broken = True
        error = ConnectionFailedError(f"IMAP IDLE: {why}", mailbox_id=self._mailbox_id)
        error.__cause__ = exc
        return error

    async def _begin(self) -> asyncio.Queue[Any]:
        """Send IDLE and wait for the server's '+'; the queue then carries its pushes."""
        protocol = self._protocol
        if self._session._broken or self._session._closed:
            raise self._fail("the session was dropped")
        queue: asyncio.Queue[Any] = asyncio.Queue()
        accepted: asyncio.Event = protocol._idle_event  # set by aioimaplib on the '+'
        accepted.clear()
        command = _Idle(protocol.new_tag(), queue, accepted, loop=protocol.loop)
        # What execute() would do, without waiting for the end: register, then send.
        protocol.pending_sync_command = command
        self._idle = command
        self._session._stats.commands["IDLE"] += 1
        protocol.send(str(command))
        limit = self._timeouts.command.total_seconds()
        try:
            async with asyncio.timeout(limit):
                await accepted.wait()
        except TimeoutError as exc:
            self._session._broken = True
            raise OperationTimeoutError(
                f"IMAP IDLE was not accepted within {limit:g} s", mailbox_id=self._mailbox_id
            ) from exc
        if command._event.is_set():  # ended instead of accepted
            self._idle = None
            self._check_end(command)
            raise self._fail(f"the server refused IDLE ({command.response.result})")
        return queue

    def _check_end(self, command: _Idle) -> None:
        if command._exception is not None:
            raise self._fail("the connection was lost", command._exception)

    async def _listen(
        self, queue: asyncio.Queue[Any], hint: Callable[[PushHint], None], refresh_every: float
    ) -> None:
        """Report pushes until it is time to re-issue IDLE."""
        loop = asyncio.get_running_loop()
        renew_at = loop.time() + refresh_every
        while True:
            remaining = renew_at - loop.time()
            if remaining <= 0:
                return
            try:
                async with asyncio.timeout(remaining):
                    item = await queue.get()
            except TimeoutError:
                return
            if item is _ENDED:
                command, self._idle = self._idle, None
                assert command is not None
                self._check_end(command)
                # The server ended the IDLE by itself (a tagged OK without DONE).
                raise self._fail(f"the server ended IDLE ({command.response.result})")
            if _bye(item):
                raise self._fail("the server said BYE")
            if _news(item):
                hint(PushHint.NEW_MAIL)

    async def _end(
        self,
        queue: asyncio.Queue[Any] | None,
        hint: Callable[[PushHint], None] | None,
        limit: timedelta,
    ) -> None:
        """DONE, and wait for the tagged reply within ``limit``: the watchdog."""
        command, self._idle = self._idle, None
        if command is None:
            return
        if not command._event.is_set():
            self._protocol.idle_done()
        try:
            async with asyncio.timeout(limit.total_seconds()):
                await command._event.wait()
        except TimeoutError as exc:
            self._session._broken = True
            raise OperationTimeoutError(
                f"the IMAP server did not answer DONE within {limit.total_seconds():g} s",
                mailbox_id=self._mailbox_id,
            ) from exc
        self._check_end(command)
        # Pushes that came between the last look and the reply still count.
        while queue is not None and hint is not None and not queue.empty():
            item = queue.get_nowait()
            if item is not _ENDED and _news(item):
                hint(PushHint.NEW_MAIL)
        if command.response.result != "OK":
            raise self._fail(f"DONE was answered {command.response.result}")
