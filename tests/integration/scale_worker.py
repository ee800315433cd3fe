"""One engine process for the scale-out test: ``python -m tests.integration.scale_worker
STORE_URL ENGINE_ID LOG``.

It runs ``run_forever`` on the shared store with short intervals and leases, and writes one
JSON line to LOG when an incoming session with a mailbox opens and one when it closes: the
sessions are what must never overlap for one mailbox across processes. SIGTERM stops it after
the work in hand.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from serversync import (
    Credentials,
    EmailServerProfile,
    Mailbox,
    Schedule,
    ServerType,
    SyncEngine,
    SyncSettings,
    Transports,
)
from serversync.adapters.transports import ImapTransport
from serversync.ports import IncomingMailSession, IncomingMailTransport
from serversync.sql import SqlCredentials, SqlDirectory, SqlStorage
from serversync.testing import InMemoryMailServer, InMemoryOutgoingTransport

LEASE = timedelta(seconds=4)


class SessionLog(IncomingMailTransport):
    """The IMAP transport, writing when each mailbox session opens and closes."""

    def __init__(self, inner: IncomingMailTransport, engine_id: str, path: str) -> None:
        self._inner = inner
        self._engine_id = engine_id
        self._path = path

    def _write(self, event: str, mailbox: Mailbox) -> None:
        line = {"event": event, "mailbox": mailbox.id, "engine": self._engine_id, "at": time.time()}
        # O_APPEND writes of one short line are atomic, so processes may share the file.
        with open(self._path, "a", encoding="utf-8") as log:
            log.write(json.dumps(line) + "\n")
            log.flush()
            os.fsync(log.fileno())

    @asynccontextmanager
    async def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AsyncIterator[IncomingMailSession]:
        async with self._inner.open(mailbox, profile, credentials) as session:
            self._write("open", mailbox)
            try:
                yield session
            finally:
                self._write("close", mailbox)


async def main(url: str, engine_id: str, log: str) -> None:
    storage = await SqlStorage.open(url)
    settings = SyncSettings(
        schedule=Schedule(
            incoming_interval=timedelta(seconds=1),
            outgoing_interval=timedelta(seconds=1),
            lease_duration=LEASE,
            idle_sleep=timedelta(milliseconds=200),
        )
    )
    transports = Transports.by_server_type(
        incoming={ServerType.IMAP_SMTP: SessionLog(ImapTransport(), engine_id, log)},
        outgoing={ServerType.IMAP_SMTP: InMemoryOutgoingTransport(InMemoryMailServer())},
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with (
        storage,
        SyncEngine(
            repositories=storage,
            directory=SqlDirectory(storage),
            transports=transports,
            credentials=SqlCredentials(storage),
            settings=settings,
            engine_id=engine_id,
        ) as engine,
    ):
        await engine.run_forever(stop=stop)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
