"""Helpers for the scheduling, error-policy, health and lease tests: transports that take
time or wait for the test, and an observer that keeps what it is told."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta

from serversync import (
    Alert,
    AlertKind,
    BaseSyncObserver,
    Checkpoint,
    Credentials,
    EmailServerProfile,
    IncomingBatch,
    IncomingMailSession,
    Mailbox,
    MailboxRunReport,
    OutgoingMailSession,
    OutgoingMessage,
    RawHeaders,
    RawMessage,
    RemoteFolder,
    RemoteMark,
    RemoteMessageRef,
    SendReceipt,
    Transports,
)
from serversync.testing import (
    FakeClock,
    InMemoryIncomingTransport,
    InMemoryOutgoingTransport,
    InMemoryWorld,
)

__all__ = ["Gate", "Recorder", "SlowServer", "wait_for"]


class Recorder(BaseSyncObserver):
    """Keeps every alert and mailbox report."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.runs: list[MailboxRunReport] = []

    def alert_raised(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def alerts_of(self, kind: AlertKind) -> list[Alert]:
        """The alerts of one kind, in the order raised."""
        return [a for a in self.alerts if a.kind is kind]

    def mailbox_run_finished(self, report: MailboxRunReport) -> None:
        self.runs.append(report)


class Gate:
    """Holds server calls until the test opens it; ``reached`` is set when one waits."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.opened = asyncio.Event()

    async def pass_through(self) -> None:
        self.reached.set()
        await self.opened.wait()


async def wait_for(condition: Callable[[], bool], *, seconds: float = 5.0) -> None:
    """Wait (in real time) until ``condition()`` holds; fail after ``seconds``."""
    async with asyncio.timeout(seconds):
        # Polling: the conditions watched (calls into the store) have no event to wait on.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.002)


class _IncomingSession:
    def __init__(self, inner: IncomingMailSession, server: SlowServer) -> None:
        self._inner = inner
        self._server = server

    async def list_folders(self) -> Sequence[RemoteFolder]:
        return await self._inner.list_folders()

    async def list_new(
        self, folder: str, checkpoint: Checkpoint | None, *, limit: int
    ) -> IncomingBatch:
        self._server.clock.advance(self._server.list_delay)
        return await self._inner.list_new(folder, checkpoint, limit=limit)

    async def fetch_headers(self, refs: Sequence[RemoteMessageRef]) -> Sequence[RawHeaders]:
        return await self._inner.fetch_headers(refs)

    async def fetch_message(self, ref: RemoteMessageRef) -> RawMessage:
        if self._server.fetch_gate is not None:
            await self._server.fetch_gate.pass_through()
        return await self._inner.fetch_message(ref)

    async def mark(self, refs: Sequence[RemoteMessageRef], mark: RemoteMark) -> None:
        await self._inner.mark(refs, mark)


class _OutgoingSession:
    def __init__(self, inner: OutgoingMailSession, server: SlowServer) -> None:
        self._inner = inner
        self._server = server

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        if self._server.send_gate is not None:
            await self._server.send_gate.pass_through()
        return await self._inner.send(message)


class _IncomingTransport:
    def __init__(self, server: SlowServer) -> None:
        self._server = server
        self._inner = InMemoryIncomingTransport(server.world.server)

    @asynccontextmanager
    async def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AsyncIterator[IncomingMailSession]:
        async with self._inner.open(mailbox, profile, credentials) as session:
            yield _IncomingSession(session, self._server)


class _OutgoingTransport:
    def __init__(self, server: SlowServer) -> None:
        self._server = server
        self._inner = InMemoryOutgoingTransport(server.world.server)

    @asynccontextmanager
    async def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AsyncIterator[OutgoingMailSession]:
        async with self._inner.open(mailbox, profile, credentials) as session:
            yield _OutgoingSession(session, self._server)


class SlowServer:
    """The world's in-memory server behind transports that take time or wait for the test.

    ``list_delay`` moves the fake clock on each listing (a long incoming cycle);
    ``fetch_gate`` and ``send_gate`` hold every message fetch or send until opened.
    """

    def __init__(self, world: InMemoryWorld, *, list_delay: timedelta = timedelta(0)) -> None:
        self.world = world
        self.clock: FakeClock = world.clock
        self.list_delay = list_delay
        self.fetch_gate: Gate | None = None
        self.send_gate: Gate | None = None

    def transports(self) -> Transports:
        """Transports for every server type over this server."""
        return Transports.for_all(
            incoming=_IncomingTransport(self), outgoing=_OutgoingTransport(self)
        )
