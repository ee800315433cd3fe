"""One engine process of the crash trials: :func:`run_engine` runs in a child process.

It runs ``run_forever`` on the trial's store against Dovecot (IMAP) and the harness's aiosmtpd
(SMTP) with short intervals, leases and send claims, and appends one JSON line per step to its
events file: sessions opening and closing, a message being fetched or tagged, an email going
to the SMTP server and the server accepting it, outcomes recorded. The harness reads the
lines to SIGKILL the process at chosen moments. Lines are written with one ``os.write`` on an
``O_APPEND`` descriptor, so they reach the kernel before the next step and survive a SIGKILL.
SIGTERM stops the engine after the work in hand.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import attrs

from serversync import (
    BaseSyncObserver,
    Credentials,
    EmailServerProfile,
    ExpiredClaimPolicy,
    ItemOutcome,
    Limits,
    Mailbox,
    MailboxRunReport,
    RetryPolicy,
    Schedule,
    SendResult,
    ServerType,
    SyncEngine,
    SyncSettings,
    Timeouts,
    Transports,
)
from serversync.adapters.transports import ImapTransport, SmtpTransport
from serversync.model import (
    Checkpoint,
    IncomingBatch,
    OutgoingMessage,
    RawHeaders,
    RawMessage,
    RemoteFolder,
    RemoteMark,
    RemoteMessageRef,
)
from serversync.model.outcomes import SendReceipt
from serversync.ports import (
    IncomingMailSession,
    IncomingMailTransport,
    OutgoingMailSession,
    OutgoingMailTransport,
)
from serversync.sql import SqlCredentials, SqlDirectory, SqlStorage

__all__ = ["EngineConfig", "EventLog", "run_engine"]


@attrs.frozen(kw_only=True)
class EngineConfig:
    """What one engine process needs; travels to the child as JSON."""

    url: str
    engine_id: str
    events: str
    expired_claim_policy: str = ExpiredClaimPolicy.MARK_UNCERTAIN.value
    lease_seconds: float = 1.0
    claim_seconds: float = 1.0
    incoming_batch_size: int = 3

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


class EventLog:
    """Appends one JSON line per event to a file several processes may share."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, event: str, **fields: object) -> None:
        line = {"e": event, "pid": os.getpid(), "t": time.time(), **fields}
        os.write(self._fd, (json.dumps(line) + "\n").encode())

    def close(self) -> None:
        os.close(self._fd)


class _LoggedIncomingSession(IncomingMailSession):
    def __init__(self, inner: IncomingMailSession, log: EventLog, mailbox: str) -> None:
        self._inner = inner
        self._log = log
        self._mailbox = mailbox

    async def list_folders(self) -> Sequence[RemoteFolder]:
        return await self._inner.list_folders()

    async def list_new(
        self, folder: str, checkpoint: Checkpoint | None, *, limit: int
    ) -> IncomingBatch:
        return await self._inner.list_new(folder, checkpoint, limit=limit)

    async def fetch_headers(self, refs: Sequence[RemoteMessageRef]) -> Sequence[RawHeaders]:
        self._log.write("headers", mailbox=self._mailbox, count=len(refs))
        return await self._inner.fetch_headers(refs)

    async def fetch_message(self, ref: RemoteMessageRef) -> RawMessage:
        self._log.write("fetch", mailbox=self._mailbox, uid=ref.remote_id)
        message = await self._inner.fetch_message(ref)
        self._log.write("fetched", mailbox=self._mailbox, uid=ref.remote_id)
        return message

    async def mark(self, refs: Sequence[RemoteMessageRef], mark: RemoteMark) -> None:
        # The engine tags a message after storing it: this is the moment after the commit.
        uids = [r.remote_id for r in refs]
        self._log.write("mark", mailbox=self._mailbox, uids=uids)
        await self._inner.mark(refs, mark)


class LoggedIncoming(IncomingMailTransport):
    """An incoming transport that logs its sessions and steps."""

    def __init__(self, inner: IncomingMailTransport, log: EventLog) -> None:
        self._inner = inner
        self._log = log

    @asynccontextmanager
    async def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AsyncIterator[IncomingMailSession]:
        async with self._inner.open(mailbox, profile, credentials) as session:
            self._log.write("in-open", mailbox=mailbox.id)
            try:
                yield _LoggedIncomingSession(session, self._log, mailbox.id)
            finally:
                self._log.write("in-close", mailbox=mailbox.id)


class _LoggedOutgoingSession(OutgoingMailSession):
    def __init__(self, inner: OutgoingMailSession, log: EventLog, mailbox: str) -> None:
        self._inner = inner
        self._log = log
        self._mailbox = mailbox

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        self._log.write("send", mailbox=self._mailbox, message_id=message.message_id)
        receipt = await self._inner.send(message)
        # The server answered 250: from here until "email" the outcome is not yet stored.
        self._log.write("sent", mailbox=self._mailbox, message_id=message.message_id)
        return receipt


class LoggedOutgoing(OutgoingMailTransport):
    """An outgoing transport that logs its sessions and sends."""

    def __init__(self, inner: OutgoingMailTransport, log: EventLog) -> None:
        self._inner = inner
        self._log = log

    @asynccontextmanager
    async def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AsyncIterator[OutgoingMailSession]:
        async with self._inner.open(mailbox, profile, credentials) as session:
            self._log.write("out-open", mailbox=mailbox.id)
            try:
                yield _LoggedOutgoingSession(session, self._log, mailbox.id)
            finally:
                self._log.write("out-close", mailbox=mailbox.id)


class _LoggingObserver(BaseSyncObserver):
    def __init__(self, log: EventLog) -> None:
        self._log = log

    def item_processed(self, outcome: ItemOutcome) -> None:
        self._log.write("item", kind=outcome.kind.value, message_id=outcome.message_id)

    def email_sent(self, result: SendResult) -> None:
        self._log.write("email", status=result.status.name, message_id=result.message_id)

    def mailbox_run_finished(self, report: MailboxRunReport) -> None:
        error = report.error.error_type if report.error else None
        self._log.write(
            "run", workload=report.workload.value, status=report.status.value, error=error
        )


def settings_for(config: EngineConfig) -> SyncSettings:
    """Short intervals, leases and claims, so a trial takes seconds, not hours."""
    quick = timedelta(milliseconds=200)
    return SyncSettings(
        timeouts=Timeouts(
            connect=timedelta(seconds=10),
            command=timedelta(seconds=10),
            fetch=timedelta(seconds=10),
            send=timedelta(seconds=10),
            storage=timedelta(seconds=20),
            close=timedelta(seconds=2),
        ),
        limits=Limits(incoming_batch_size=config.incoming_batch_size),
        retry=RetryPolicy(
            mailbox_transient_backoff=quick,
            send_retry_interval=quick,
            send_claim_duration=timedelta(seconds=config.claim_seconds),
            expired_claim_policy=ExpiredClaimPolicy(config.expired_claim_policy),
        ),
        schedule=Schedule(
            incoming_interval=quick,
            outgoing_interval=quick,
            lease_duration=timedelta(seconds=config.lease_seconds),
            lease_check_interval=timedelta(milliseconds=100),
            idle_sleep=timedelta(milliseconds=100),
        ),
    )


async def _main(config: EngineConfig) -> None:
    log = EventLog(config.events)
    settings = settings_for(config)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    storage = await SqlStorage.open(config.url)
    transports = Transports.by_server_type(
        incoming={
            ServerType.IMAP_SMTP: LoggedIncoming(ImapTransport(timeouts=settings.timeouts), log)
        },
        outgoing={
            ServerType.IMAP_SMTP: LoggedOutgoing(SmtpTransport(timeouts=settings.timeouts), log)
        },
    )
    try:
        async with (
            storage,
            SyncEngine(
                repositories=storage,
                directory=SqlDirectory(storage),
                transports=transports,
                credentials=SqlCredentials(storage),
                settings=settings,
                observer=_LoggingObserver(log),
                engine_id=config.engine_id,
            ) as engine,
        ):
            log.write("ready", engine=config.engine_id)
            await engine.run_forever(stop=stop)
        log.write("stopped")
    finally:
        log.close()


def run_engine(config: EngineConfig) -> int:
    """The child process's body; returns its exit code."""
    logging.basicConfig(
        level=logging.WARNING, format="engine process %(process)d: %(name)s: %(message)s"
    )
    asyncio.run(_main(config))
    return 0
