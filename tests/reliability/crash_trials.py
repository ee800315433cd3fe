"""Crash trials: kill the engine with SIGKILL at random moments and check nothing is lost.

A trial seeds a fresh store (SQLite or PostgreSQL) and fresh Dovecot mailboxes
(:mod:`tests.reliability.scenario`), then starts an engine process, kills it with SIGKILL at a
moment drawn from the trial's seed, starts it again, and so on, 1 to 3 times; the last
process runs until every Inbox is read and no email waits, and is stopped with SIGTERM. The
checks then compare the store and what the SMTP server accepted with what must hold.

A kill aims at a step the engine process logs (:mod:`tests.reliability.engine_process`): a
message being fetched (``fetch``), a message stored and about to be tagged (``mark``), an email
handed to the SMTP server (``send``), an email the server accepted but whose outcome is not
stored yet (``sent``), or a moment after the first step (``time``); then waits a few random
milliseconds. The aiosmtpd server runs in this process, so it counts what it accepted across
kills.

Run the long trial with ``python -m tests.reliability.crash_trials --trials 200``: it starts
its own Dovecot, PostgreSQL and SMTP server on 127.0.0.1 and prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import secrets
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from serversync import ActivityId, ExpiredClaimPolicy
from tests.integration.dovecot import Dovecot
from tests.integration.smtp_server import Mode, SmtpServer
from tests.reliability.engine_process import EngineConfig
from tests.reliability.figures import Figures, format_figures
from tests.reliability.scenario import Outcome, Scenario, accepted_message_ids
from tests.reliability.stores import StoreMaker, postgres_databases
from tests.reliability.zygote import Zygote

__all__ = ["TrialPlan", "Trials", "plan_trials"]

_WORK_EVENTS = frozenset({"headers", "fetch", "fetched", "mark", "send", "sent", "item", "email"})
_INCOMING_TARGETS = ("fetch", "mark")
_OUTGOING_TARGETS = ("send", "sent")
# Short, so that a restarted process under a new engine id takes over soon.
LEASE_SECONDS = 0.6
CLAIM_SECONDS = 0.6
# How long a process may take to reach the step a kill aims at before it is killed anyway.
_AIM_SECONDS = 2.5
# A process that did some work and then nothing for this long has nothing left to do.
_QUIET_SECONDS = 0.4


@attrs.frozen(kw_only=True)
class TrialPlan:
    """One trial, drawn from the run's seed: which store, which policy, how many kills."""

    index: int
    seed: int
    store: str
    policy: ExpiredClaimPolicy
    kills: int
    same_engine_id: bool
    """Whether the restarted process keeps the killed one's engine id (as a host that names
    its engines after the machine would), or comes back under a new one."""


def plan_trials(count: int, *, seed: int, stores: Sequence[str]) -> list[TrialPlan]:
    """``count`` trials spread evenly over ``stores`` and both expired-claim policies."""
    rng = random.Random(seed)
    policies = (ExpiredClaimPolicy.MARK_UNCERTAIN, ExpiredClaimPolicy.RESEND)
    return [
        TrialPlan(
            index=n,
            seed=rng.randrange(2**32),
            store=stores[n % len(stores)],
            policy=policies[(n // len(stores)) % 2],
            kills=rng.randint(1, 3),
            same_engine_id=rng.random() < 0.5,
        )
        for n in range(count)
    ]


class _Events:
    """Reads the events file of one engine process as it grows."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""
        self.seen: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        if not self._path.exists():
            return []
        with self._path.open("rb") as file:
            file.seek(self._offset)
            data = file.read()
        self._offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        new = [json.loads(line) for line in lines if line]
        self.seen += new
        return new

    def count(self, event: str) -> int:
        return sum(1 for e in self.seen if e["e"] == event)

    def open_sessions(self, kind: str) -> int:
        return self.count(f"{kind}-open") - self.count(f"{kind}-close")

    def accepted_unrecorded(self) -> int:
        sent = {e["message_id"] for e in self.seen if e["e"] == "sent"}
        recorded = {e["message_id"] for e in self.seen if e["e"] == "email"}
        return len(sent - recorded)


class Trials:
    """Runs trials against one Dovecot, one SMTP server and one zygote."""

    def __init__(
        self,
        *,
        dovecot: Dovecot,
        smtp: SmtpServer,
        zygote: Zygote,
        fresh_store: Callable[[str], Awaitable[str]],
        workdir: Path,
    ) -> None:
        self._dovecot = dovecot
        self._smtp = smtp
        self._zygote = zygote
        self._fresh_store = fresh_store
        self._workdir = workdir
        self.figures = Figures()
        self._tag = secrets.token_hex(3)
        # Per trial, the steps done so far by its killed processes (to aim at work left).
        self._done: dict[int, Counter[str]] = {}

    async def run(self, plans: Sequence[TrialPlan], *, concurrency: int = 2) -> Figures:
        """Run ``plans``, ``concurrency`` at a time, and return the summed figures."""
        started = time.monotonic()
        slots = asyncio.Semaphore(concurrency)

        async def one(plan: TrialPlan) -> None:
            async with slots:
                outcome = await self.trial(plan)
                name = f"trial {plan.index} ({plan.store}, seed {plan.seed})"
                self.figures.add(outcome, trial=name, policy=plan.policy)

        async with asyncio.TaskGroup() as group:
            for plan in plans:
                group.create_task(one(plan))
        self.figures.seconds = round(time.monotonic() - started, 1)
        return self.figures

    async def trial(self, plan: TrialPlan) -> Outcome:
        """Seed, kill ``plan.kills`` times, let the last process settle, stop it, check."""
        rng = random.Random(plan.seed)
        directory = self._workdir / f"trial-{plan.index}"
        directory.mkdir()
        url = await self._fresh_store(plan.store)
        scenario = await Scenario.create(
            trial=plan.index,
            label=f"{self._tag}-{plan.index}",
            url=url,
            policy=plan.policy,
            dovecot=self._dovecot,
            smtp=self._smtp,
            secrets=directory,
            rng=rng,
        )
        try:
            outcome = await self._kill_and_restart(plan, scenario, url, directory, rng)
        finally:
            await scenario.aclose()
        shutil.rmtree(directory, ignore_errors=True)
        return outcome

    async def _kill_and_restart(
        self,
        plan: TrialPlan,
        scenario: Scenario,
        url: str,
        directory: Path,
        rng: random.Random,
    ) -> Outcome:
        engine_id = f"trial-{plan.index}-engine"
        orphaned: set[ActivityId] = set()
        problems: list[str] = []
        for start in range(plan.kills + 1):
            if not plan.same_engine_id:
                engine_id = f"trial-{plan.index}-engine-{start}"
            config = EngineConfig(
                url=url,
                engine_id=engine_id,
                events=str(directory / f"events-{start}.jsonl"),
                expired_claim_policy=plan.policy.value,
                lease_seconds=LEASE_SECONDS,
                claim_seconds=CLAIM_SECONDS,
            )
            events = _Events(Path(config.events))
            pid = await self._zygote.spawn(config)
            if start < plan.kills:
                await self._kill_at_random(pid, events, rng, scenario)
                orphaned |= await scenario.sending()
            else:
                problems += await self._settle_and_stop(pid, events, scenario)
        outcome = await scenario.check(accepted_message_ids(self._smtp), orphaned)
        outcome.problems[:0] = problems
        return outcome

    def _target(
        self, rng: random.Random, events_so_far: Counter[str], scenario: Scenario
    ) -> tuple[str, int, float]:
        kinds: list[str] = ["time"]
        if events_so_far["mark"] < len(scenario.relevant):
            kinds += _INCOMING_TARGETS
        if events_so_far["email"] < len(scenario.emails):
            kinds += _OUTGOING_TARGETS
        kind = rng.choice(kinds)
        if kind == "time":
            return kind, 1, rng.uniform(0.0, 0.4)
        return kind, rng.randint(1, 2), rng.uniform(0.0, 0.008)

    async def _kill_at_random(
        self, pid: int, events: _Events, rng: random.Random, scenario: Scenario
    ) -> None:
        figures = self.figures
        kind, nth, delay = self._target(rng, self._history(scenario), scenario)
        kind = await self._wait_for(kind, nth, delay, events)
        os.kill(pid, signal.SIGKILL)
        events.poll()
        code = await self._reap(pid, seconds=10)
        assert code == -signal.SIGKILL, f"engine process {pid} ended with {code}, not SIGKILL"
        events.poll()
        figures.kills += 1
        figures.kills_by_target[kind] += 1
        incoming = events.open_sessions("in") > 0
        outgoing = events.open_sessions("out") > 0
        figures.kills_during_incoming += incoming
        figures.kills_during_outgoing += outgoing
        figures.kills_while_idle += not (incoming or outgoing)
        figures.kills_after_acceptance += events.accepted_unrecorded()
        self._record_history(scenario, events)

    async def _wait_for(self, kind: str, nth: int, delay: float, events: _Events) -> str:
        """Wait until the aimed-at step (and ``delay`` after it); the kind of kill it became.

        A process that finds no such work is killed anyway ("idle"): when it has been
        quiet for a while after working, or when it never reached any work.
        """
        started = last_work = time.monotonic()
        worked = False
        while True:
            now = time.monotonic()
            for event in events.poll():
                if event["e"] in _WORK_EVENTS:
                    if not worked and kind == "time":
                        await asyncio.sleep(delay)
                        return kind
                    worked, last_work = True, now
            if kind != "time" and events.count(kind) >= nth:
                await asyncio.sleep(delay)
                return kind
            if now - started > _AIM_SECONDS or (worked and now - last_work > _QUIET_SECONDS):
                return "idle"
            await asyncio.sleep(0.003)

    def _history(self, scenario: Scenario) -> Counter[str]:
        return self._done.setdefault(scenario.trial, Counter())

    def _record_history(self, scenario: Scenario, events: _Events) -> None:
        history = self._history(scenario)
        history["mark"] += events.count("mark")
        history["email"] += events.count("email")

    async def _settle_and_stop(self, pid: int, events: _Events, scenario: Scenario) -> list[str]:
        problems = []
        deadline = time.monotonic() + 30
        # Settled, and the process is running its engine (before that it has no SIGTERM
        # handler yet, and the signal would simply end it).
        while not (await scenario.settled() and events.count("ready")):
            if time.monotonic() > deadline:
                problems.append("the last engine process did not finish the work within 30 s")
                break
            await asyncio.sleep(0.1)
            events.poll()
        os.kill(pid, signal.SIGTERM)
        code = await self._reap(pid, seconds=15)
        if code is None:
            os.kill(pid, signal.SIGKILL)
            await self._reap(pid, seconds=10)
            problems.append("the last engine process did not stop within 15 s of SIGTERM")
        elif code != 0:
            problems.append(f"the last engine process exited with {code} after SIGTERM")
        events.poll()
        return problems

    async def _reap(self, pid: int, *, seconds: float) -> int | None:
        """``pid``'s exit code, or ``None`` when it still runs after ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            code = await self._zygote.poll(pid)
            if code is not None or time.monotonic() > deadline:
                return code
            await asyncio.sleep(0.01)


# --- the long run's command ---------------------------------------------------------------


async def _long_run(args: argparse.Namespace) -> Figures:
    from tests.postgres_server import PostgresServer

    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    plans = plan_trials(args.trials, seed=args.seed, stores=stores)
    workdir = Path(tempfile.mkdtemp(prefix="serversync-crash-"))
    mailboxes = 2 * args.trials + 10
    postgres = PostgresServer() if "postgresql" in stores else None
    try:
        with Dovecot(oauth2_url="http://127.0.0.1:9/unused", users=mailboxes) as dovecot:
            new_postgres = None
            if postgres is not None:
                postgres.start()
                new_postgres = await postgres_databases(postgres)
            stores_maker = await StoreMaker.create(workdir, new_postgres)
            with SmtpServer(dovecot.pki, mode=Mode.STARTTLS, require_auth=False) as smtp:
                async with Zygote() as zygote:
                    trials = Trials(
                        dovecot=dovecot,
                        smtp=smtp,
                        zygote=zygote,
                        fresh_store=stores_maker.fresh,
                        workdir=workdir,
                    )
                    return await trials.run(plans, concurrency=args.concurrency)
    finally:
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="harness: %(name)s: %(message)s")
    # A killed engine leaves aiosmtpd sessions cut in the middle; it logs each at length.
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    figures = asyncio.run(_long_run(args))
    print(json.dumps(figures.as_dict(), indent=2) if args.json else format_figures(figures))
    raise SystemExit(1 if figures.problems else 0)


if __name__ == "__main__":
    main()
