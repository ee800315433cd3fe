"""New mail to stored activity with IMAP IDLE: messages delivered (IMAP APPEND by another
client) at random intervals into the Inbox of a mailbox the engine runs in ``run_forever``
with polls an hour apart, so that only a push can bring them in; the time from the start of
each APPEND to the activity stored (the observer's ``item_processed``).

The baseline, in the same run and for the same deliveries: a bare aioimaplib client in IDLE
on the same Inbox, timed from the same instants to the arrival of the server's push
(``EXISTS``). The difference is what serversync adds: the hint, the wake of the engine's
loop, and a whole incoming cycle (connect, login, list, headers, body, store)."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable
from datetime import timedelta

import aioimaplib  # type: ignore[import-untyped]

from bench._context import Bench, log
from bench._results import Better, Figure, Result, Target
from bench._servers import PASSWORD
from bench._wiring import engine, imap_profile
from serversync import (
    BaseSyncObserver,
    IncomingFilteringMethod,
    ItemOutcome,
    OutcomeKind,
    Schedule,
    SyncSettings,
)
from serversync.adapters.transports import ImapTransport
from serversync.testing import InMemoryDirectory, InMemoryStorage, a_mailbox, a_user, an_email

__all__ = ["measure"]

_SETTLE_SECONDS = 1.0


class _Stored(BaseSyncObserver):
    """When each tracked message was stored, by Message-ID."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}

    def item_processed(self, outcome: ItemOutcome) -> None:
        if outcome.kind is OutcomeKind.TRACKED and outcome.message_id is not None:
            self.at.setdefault(str(outcome.message_id), time.perf_counter())


async def _until(condition: Callable[[], bool], seconds: float) -> None:
    """Wait until ``condition()`` holds, at most ``seconds``."""
    deadline = time.perf_counter() + seconds
    # Polling: what is watched (counters, dicts filled by callbacks) has no event.
    while not condition() and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


async def _raw_idle(port: int, user: str, ready: asyncio.Event, arrivals: dict[int, float]) -> None:
    """A bare aioimaplib client in IDLE on the Inbox, noting when the push announcing each
    message arrives (``arrivals[n]`` for the n-th message delivered). The server may announce
    several messages in one ``EXISTS``, so the count, not the line, tells which."""
    client = aioimaplib.IMAP4(host="127.0.0.1", port=port, timeout=30)
    await client.wait_hello_from_server()
    assert (await client.login(user, PASSWORD)).result == "OK"
    selected = await client.select("INBOX")
    assert selected.result == "OK"
    base = max((_exists(line) for line in selected.lines), default=0)
    idle = await client.idle_start(timeout=3600)
    ready.set()
    try:
        while True:
            lines = await client.wait_server_push(timeout=3600)
            now = time.perf_counter()
            if isinstance(lines, list):
                for n in range(base, max((_exists(line) for line in lines), default=0)):
                    arrivals.setdefault(n - base, now)
    finally:
        client.idle_done()
        await asyncio.wait_for(idle, 5)
        await client.logout()


def _exists(line: bytes | bytearray | str) -> int:
    """The count of an ``n EXISTS`` response line, else 0."""
    text = bytes(line, "ascii") if isinstance(line, str) else bytes(line)
    parts = text.split()
    return int(parts[0]) if len(parts) == 2 and parts[1] == b"EXISTS" and parts[0].isdigit() else 0


async def _append(port: int, user: str, message: bytes) -> None:
    client = aioimaplib.IMAP4(host="127.0.0.1", port=port, timeout=30)
    await client.wait_hello_from_server()
    await client.login(user, PASSWORD)
    response = await client.append(message, mailbox="INBOX")
    assert response.result == "OK", response
    await client.logout()


async def measure(bench: Bench) -> list[Result]:
    """p95 of delivery to stored activity through IDLE, and of delivery to the bare push."""
    config = bench.config
    dovecot = bench.dovecot
    user = bench.PUSH_USER
    count = config.push_messages
    rng = random.Random(config.seed)
    gaps = [rng.uniform(*config.push_gap) for _ in range(count)]

    storage = InMemoryStorage()
    directory = InMemoryDirectory()
    profile = imap_profile(dovecot, profile_id="bench-push")
    storage.add_profile(profile)
    record = a_user(user, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    directory.add(record)
    mailbox = a_mailbox(user, owner=record.ref, profile_id=profile.id)
    storage.add_mailbox(mailbox)
    # Polls an hour apart: whatever is stored sooner came through a push.
    hour = timedelta(hours=1)
    settings = SyncSettings(
        schedule=Schedule(incoming_interval=hour, outgoing_interval=hour, idle_sleep=hour)
    )
    stored = _Stored()
    imap = ImapTransport(timeouts=settings.timeouts)
    pushes: dict[int, float] = {}
    sent: dict[str, float] = {}
    log(f"push: {count} messages into an IDLE-watched Inbox, {config.push_gap} s apart")
    stop = asyncio.Event()
    ready = asyncio.Event()
    async with engine(
        storage, directory, [mailbox], imap=imap, settings=settings, observer=stored
    ) as sync:
        runner = asyncio.create_task(sync.run_forever(stop=stop))
        raw = asyncio.create_task(_raw_idle(dovecot.imap_port, user, ready, pushes))
        try:
            await asyncio.wait_for(ready.wait(), 30)
            await _until(lambda: imap.stats.commands["IDLE"] > 0, 30)
            assert imap.stats.commands["IDLE"] > 0, "the engine never started IDLE"
            # The watch's first hint runs one cycle; let it end before delivering.
            await asyncio.sleep(_SETTLE_SECONDS)
            for n, gap in enumerate(gaps):
                await asyncio.sleep(gap)
                message_id = f"<push-{n}@fabrikam.example>"
                data = an_email(
                    sender="jane@fabrikam.example",
                    to=[user],
                    subject=f"Push {n}",
                    message_id=message_id,
                )
                sent[message_id] = time.perf_counter()
                await _append(dovecot.imap_port, user, data)
            await _until(lambda: len(stored.at) >= count and len(pushes) >= count, 30)
        finally:
            raw.cancel()
            stop.set()
            await asyncio.wait_for(runner, 60)
            await asyncio.gather(raw, return_exceptions=True)
    missing = [m for m in sent if m not in stored.at]
    assert not missing, f"not stored within 30 s: {missing}"
    assert len(pushes) >= count, f"the bare client saw {len(pushes)} pushes for {count}"
    starts = list(sent.values())
    ours = [stored.at[m] - t for m, t in sent.items()]
    theirs = [pushes[n] - t for n, t in enumerate(starts)]
    p95, raw_p95 = _p95(ours), _p95(theirs)

    def side(label: str, latencies: list[float]) -> Figure:
        return Figure(
            label=label,
            seconds=tuple(latencies),
            items=len(latencies),
            extra={
                "p50_ms": round(statistics.median(latencies) * 1000, 2),
                "p95_ms": round(_p95(latencies) * 1000, 2),
                "max_ms": round(max(latencies) * 1000, 2),
            },
        )

    return [
        Result(
            id="idle_push_latency",
            title="New mail to stored activity with IDLE, p95",
            unit="seconds (p95)",
            value=p95,
            ratio=p95 / raw_p95,
            ratio_means="serversync p95 (APPEND to stored) ÷ bare aioimaplib p95 (APPEND to push)",
            target=Target(value=2.0, better=Better.LOWER),
            ours=side("serversync run_forever, IDLE watch, in-memory store", ours),
            baseline=side("aioimaplib IDLE: the server's EXISTS push", theirs),
            params={
                "messages": count,
                "gap_s": list(config.push_gap),
                "poll_interval_s": hour.total_seconds(),
                "tls": False,
                "store": "in-memory",
                "filter": "all email messages",
            },
            notes=(
                "figures' seconds are the per-message latencies; value = their p95. Each "
                "message runs one whole incoming cycle: new connection, login, listing, "
                "headers, body, store"
            ),
        )
    ]
