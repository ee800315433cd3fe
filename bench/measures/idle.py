"""Idle mailboxes: many mailboxes with no new mail, polled on a schedule by one engine
process (``run_forever``), with the CPU it uses; the baseline is the bare protocol work of
the same polls (aioimaplib: TLS connection, LOGIN, SELECT, LOGOUT)."""

from __future__ import annotations

import asyncio
import ssl
import time
from datetime import timedelta

import aioimaplib  # type: ignore[import-untyped]

from bench._context import Bench, cpu_seconds, log
from bench._results import Better, Figure, Result, Target
from bench._servers import PASSWORD
from bench._wiring import Directory, Store, add_mailbox, add_profile, engine, imap_profile
from serversync import BaseSyncObserver, MailboxRunReport, RunStatus, SyncSettings, Workload
from serversync.adapters.storage.sql import SqlDirectory, SqlStorage
from serversync.model import EmailServerProfile, TlsMode
from serversync.settings import Schedule
from serversync.testing import InMemoryDirectory, InMemoryStorage

__all__ = ["measure"]


class _Polls(BaseSyncObserver):
    """Counts finished workload runs."""

    def __init__(self) -> None:
        self.incoming = 0
        self.outgoing = 0
        self.failed: list[MailboxRunReport] = []

    def mailbox_run_finished(self, report: MailboxRunReport) -> None:
        if report.status is RunStatus.FAILED:
            self.failed.append(report)
        elif report.status is RunStatus.SUCCEEDED:
            if report.workload is Workload.INCOMING:
                self.incoming += 1
            elif report.workload is Workload.OUTGOING:
                self.outgoing += 1


async def _raw_poll(port: int, context: ssl.SSLContext, user: str) -> None:
    client = aioimaplib.IMAP4_SSL(host="127.0.0.1", port=port, ssl_context=context, timeout=30)
    await client.wait_hello_from_server()
    response = await client.login(user, PASSWORD)
    assert response.result == "OK", response
    response = await client.select("INBOX")
    assert response.result == "OK", response
    await client.logout()


async def raw_polls(port: int, ca_file: str, users: list[str], connections: int) -> None:
    """Every mailbox polled once, ``connections`` at a time."""
    context = ssl.create_default_context(cafile=ca_file)
    limit = asyncio.Semaphore(connections)

    async def one(user: str) -> None:
        async with limit:
            await _raw_poll(port, context, user)

    await asyncio.gather(*(one(u) for u in users))


async def _polling(
    bench: Bench, storage: Store, directory: Directory, profile: EmailServerProfile
) -> tuple[float, float, int, int]:
    """Run the engine over the idle mailboxes for the configured window: (CPU seconds,
    seconds, incoming polls, outgoing polls) in the window."""
    config = bench.config
    await add_profile(storage, profile)
    mailboxes = [await add_mailbox(storage, directory, u, profile) for u in bench.idle_users()]
    interval = timedelta(seconds=config.idle_interval)
    settings = SyncSettings(
        schedule=Schedule(incoming_interval=interval, outgoing_interval=interval)
    )
    polls = _Polls()
    stop = asyncio.Event()
    async with engine(storage, directory, mailboxes, settings=settings, observer=polls) as sync:
        runner = asyncio.create_task(sync.run_forever(stop=stop))
        # Every poll of an idle mailbox, the first included, does the same work.
        await asyncio.sleep(config.idle_interval / 10)
        first, outgoing = polls.incoming, polls.outgoing
        cpu = cpu_seconds()
        started = time.perf_counter()
        await asyncio.sleep(config.idle_window)
        used = cpu_seconds() - cpu
        window = time.perf_counter() - started
        done = polls.incoming - first
        sent = polls.outgoing - outgoing
        stop.set()
        await asyncio.wait_for(runner, 300)
    assert not polls.failed, polls.failed[0].error
    assert done > 0, "no mailbox was polled in the window"
    return used, window, done, sent


async def measure(bench: Bench) -> list[Result]:
    """CPU of one engine process polling idle mailboxes every interval, with the SQLite
    store and with the in-memory one (the engine and transports alone)."""
    config = bench.config
    dovecot = bench.dovecot
    users = bench.idle_users()
    profile = imap_profile(
        dovecot, profile_id="bench-idle", tls=TlsMode.IMPLICIT, smtp_port=bench.smtp.port
    )
    connections = profile.max_concurrent_connections
    log("idle: the polls with bare aioimaplib")
    cpu = cpu_seconds()
    started = time.perf_counter()
    await raw_polls(dovecot.imaps_port, str(dovecot.pki.ca_file), users, connections)
    raw_seconds = time.perf_counter() - started
    raw_cpu = cpu_seconds() - cpu
    raw_per_poll = raw_cpu / len(users)
    baseline = Figure(
        label="aioimaplib: IMAPS connect, LOGIN, SELECT, LOGOUT",
        seconds=(raw_seconds,),
        cpu_seconds=(raw_cpu,),
        items=len(users),
        extra={"cpu_ms_per_poll": round(raw_per_poll * 1000, 3)},
    )

    results = []
    for store in ("SQLite", "in-memory"):
        log(
            f"idle: {len(users)} mailboxes, {store} store, {config.idle_window:g} s of polls "
            f"every {config.idle_interval:g} s"
        )
        if store == "SQLite":
            sql = await SqlStorage.open(f"sqlite:///{bench.workdir}/idle.db", upgrade=True)
            try:
                used, window, done, sent = await _polling(bench, sql, SqlDirectory(sql), profile)
            finally:
                await sql.aclose()
        else:
            used, window, done, sent = await _polling(
                bench, InMemoryStorage(), InMemoryDirectory(), profile
            )
        per_poll = used / done
        # CPU % of one core for 1,000 mailboxes each polled every 60 s, from the CPU per
        # poll measured here (both workloads of a mailbox: incoming and outgoing).
        projected = per_poll * 1000 / 60 * 100
        ours = Figure(
            label=f"serversync engine run_forever, {store} store, IMAPS",
            seconds=(window,),
            cpu_seconds=(used,),
            items=done,
            extra={
                "cpu_percent_measured": round(used / window * 100, 3),
                "cpu_ms_per_poll": round(per_poll * 1000, 3),
                "outgoing_polls": sent,
            },
        )
        results.append(
            Result(
                id="idle_mailboxes" if store == "SQLite" else "idle_mailboxes_memory",
                title=f"1,000 idle mailboxes polled every 60 s, one process ({store} store)",
                unit="CPU % of one core",
                value=projected,
                ratio=per_poll / raw_per_poll,
                ratio_means="serversync CPU per poll ÷ bare aioimaplib CPU per poll",
                target=Target(value=25.0, better=Better.LOWER),
                ours=ours,
                baseline=baseline,
                params={
                    "mailboxes": len(users),
                    "interval_s": config.idle_interval,
                    "window_s": config.idle_window,
                    "tls": True,
                    "store": store,
                    "profile_connection_limit": connections,
                },
                notes=(
                    "value = CPU per incoming poll (the outgoing poll of the same mailbox "
                    "included) × 1,000 mailboxes ÷ 60 s"
                ),
            )
        )
    return results
