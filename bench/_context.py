"""The run's configuration (full or quick), its servers, and the timing helpers."""

from __future__ import annotations

import contextlib
import resource
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import attrs

from bench._mail import MailPlan
from bench._servers import Dovecot, PostgresServer, SmtpSink

__all__ = ["Bench", "Config", "Run", "cpu_seconds", "log"]

T = TypeVar("T")

Run = tuple[float, float, int, int]
"""One timed run: wall seconds, CPU seconds of this process, items handled, bytes moved."""


def cpu_seconds() -> float:
    """User and system CPU seconds of this process, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def log(message: str) -> None:
    """A progress line on stderr."""
    import sys

    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@attrs.frozen(kw_only=True)
class Config:
    """Sizes and repetitions of one run."""

    quick: bool
    runs: int
    imap_messages: int
    imap_batch: int
    e2e_messages: int
    e2e_sql_messages: int
    e2e_runs: int
    pop3_messages: int
    smtp_messages: int
    smtp_connections: tuple[int, ...]
    idle_mailboxes: int
    idle_interval: float
    idle_window: float
    store_small: int
    store_big: int
    store_cycle_messages: int
    store_pending: int
    store_repeats: int
    rss_sizes: tuple[int, ...]
    ews_messages: int
    push_messages: int
    push_gap: tuple[float, float]
    seed: int = 1

    @classmethod
    def full(cls) -> Config:
        """The sizes the targets name (about 15 minutes on 2 cores)."""
        return cls(
            quick=False,
            runs=5,
            imap_messages=10_000,
            imap_batch=500,
            e2e_messages=1_000,
            e2e_sql_messages=400,
            e2e_runs=3,
            pop3_messages=1_500,
            smtp_messages=300,
            smtp_connections=(1, 10),
            idle_mailboxes=1_000,
            idle_interval=60.0,
            idle_window=60.0,
            store_small=10_000,
            store_big=1_000_000,
            store_cycle_messages=100,
            store_pending=5,
            store_repeats=5,
            rss_sizes=(1_000, 10_000, 100_000),
            ews_messages=400,
            push_messages=60,
            push_gap=(0.2, 1.5),
        )

    @classmethod
    def quick_run(cls) -> Config:
        """Everything small: under a minute; for the test suite, so the harness cannot rot."""
        return cls(
            quick=True,
            runs=1,
            imap_messages=500,
            imap_batch=500,
            e2e_messages=100,
            e2e_sql_messages=50,
            e2e_runs=1,
            pop3_messages=150,
            smtp_messages=40,
            smtp_connections=(1, 10),
            idle_mailboxes=30,
            idle_interval=2.0,
            idle_window=3.0,
            store_small=1_000,
            store_big=10_000,
            store_cycle_messages=20,
            store_pending=2,
            store_repeats=1,
            rss_sizes=(100, 500),
            ews_messages=50,
            push_messages=10,
            push_gap=(0.1, 0.5),
        )


def _idle_user(n: int) -> str:
    return f"idle-{n:04d}@contoso.example"


class Bench:
    """The servers and scratch space of a run; servers start when first asked for."""

    HEADERS_USER = "headers@contoso.example"
    E2E_USER = "e2e@contoso.example"
    E2E_SQL_USER = "e2e-sql@contoso.example"
    POP3_USER = "pop@contoso.example"
    PUSH_USER = "push@contoso.example"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.workdir = Path(tempfile.mkdtemp(prefix="serversync-bench-"))
        self._dovecot: Dovecot | None = None
        self._smtp: SmtpSink | None = None
        self._postgres: PostgresServer | None = None
        self._stack = contextlib.ExitStack()
        self._seeded: set[str] = set()

    # -- users ---------------------------------------------------------------------------

    def idle_users(self) -> list[str]:
        """The accounts of the idle-mailboxes measure."""
        return [_idle_user(n) for n in range(self.config.idle_mailboxes)]

    @staticmethod
    def store_user(backend: str, size: str, repeat: int) -> str:
        """The account of one cycle of the stored-activities measure."""
        return f"store-{backend}-{size}-{repeat}@contoso.example"

    @staticmethod
    def rss_user(size: int) -> str:
        """The account of the memory measure's mailbox of ``size`` messages."""
        return f"rss-{size}@contoso.example"

    def _all_users(self) -> list[str]:
        c = self.config
        users = [
            self.HEADERS_USER,
            self.E2E_USER,
            self.E2E_SQL_USER,
            self.POP3_USER,
            self.PUSH_USER,
            *self.idle_users(),
        ]
        for backend in ("sqlite", "postgresql"):
            for size in ("small", "big"):
                users += [self.store_user(backend, size, r) for r in range(c.store_repeats + 1)]
        users += [self.rss_user(size) for size in c.rss_sizes]
        return users

    # -- servers -------------------------------------------------------------------------

    @property
    def dovecot(self) -> Dovecot:
        """The run's Dovecot (IMAP, IMAPS, POP3), with every benchmark account."""
        if self._dovecot is None:
            limit = max(400, 2 * self.config.idle_mailboxes)
            self._dovecot = self._stack.enter_context(
                Dovecot(self._all_users(), process_limit=limit)
            )
        return self._dovecot

    @property
    def smtp(self) -> SmtpSink:
        """aiosmtpd in a child process."""
        if self._smtp is None:
            self._smtp = self._stack.enter_context(SmtpSink())
        return self._smtp

    @property
    def postgres(self) -> PostgresServer:
        """A throw-away PostgreSQL cluster."""
        if self._postgres is None:
            self._postgres = self._stack.enter_context(PostgresServer())
        return self._postgres

    def seed(self, user: str, plan: MailPlan) -> tuple[int, int]:
        """Put ``plan``'s mail into ``user``'s Inbox once; (messages, bytes)."""
        if user in self._seeded:
            raise AssertionError(f"{user} was seeded already")
        self._seeded.add(user)
        return self.dovecot.seed(user, plan.messages())

    def close(self) -> None:
        """Stop every server and remove the scratch space."""
        try:
            self._stack.close()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- timing --------------------------------------------------------------------------

    async def compare(
        self,
        ours: Callable[[], Awaitable[tuple[int, int]]],
        baseline: Callable[[], Awaitable[tuple[int, int]]],
        *,
        runs: int | None = None,
        warm_up: bool = True,
    ) -> tuple[list[Run], list[Run]]:
        """Run both sides ``runs`` times, alternating which goes first, after one untimed
        run of each; every call returns (items, bytes)."""
        count = runs if runs is not None else self.config.runs
        if warm_up:
            await ours()
            await baseline()
        mine: list[Run] = []
        theirs: list[Run] = []
        for n in range(count):
            order = ((ours, mine), (baseline, theirs))
            for call, into in order if n % 2 == 0 else reversed(order):
                into.append(await timed(call))
        return mine, theirs


async def timed(call: Callable[[], Awaitable[tuple[int, int]]]) -> Run:
    """Run ``call`` once: (seconds, CPU seconds, items, bytes)."""
    cpu = cpu_seconds()
    started = time.perf_counter()
    items, nbytes = await call()
    return time.perf_counter() - started, cpu_seconds() - cpu, items, nbytes


@contextlib.contextmanager
def elapsed() -> Iterator[Callable[[], float]]:
    """``with elapsed() as seconds: ...`` then ``seconds()``."""
    started = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - started
    end.append(time.perf_counter())
