"""``serversync run``, ``status`` and ``explain``: running the engine on the store."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from serversync import (
    INBOX,
    ActAction,
    BaseSyncObserver,
    ItemOutcome,
    MailboxHealth,
    MailboxRunReport,
    QuarantineCount,
    RunReport,
    RunStatus,
    Workload,
)

from ._admin import with_store
from ._output import console
from ._store import Store, mailbox_id_for, store_url

__all__ = ["explain", "run", "status"]


@click.command()
@click.option("--once", is_flag=True, help="Run every due workload once, then stop.")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    help="Engine processes sharing the store (leases keep each mailbox on one at a time).",
)
@click.option("--engine-id", help="This engine's name in leases and claims.")
@click.pass_context
def run(context: click.Context, once: bool, workers: int, engine_id: str | None) -> None:
    """Synchronize the mailboxes: once, or until SIGINT/SIGTERM (finishing the current work)."""
    if workers > 1:
        raise SystemExit(_run_workers(context, workers, once=once))

    async def work(store: Store) -> RunReport | None:
        if once and sys.stdout.isatty():
            return await _run_once_with_progress(store, engine_id)
        async with store.engine(engine_id=engine_id) as engine:
            if once:
                return await engine.run_once()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await engine.run_forever(stop=stop)
            return None

    report = with_store(context, work)
    if report is not None:
        _print_run(report)
        if any(r.status is RunStatus.FAILED for r in report.mailboxes):
            raise SystemExit(2)


class _ProgressObserver(BaseSyncObserver):
    """Advances a progress bar as mailbox workloads finish."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def mailbox_run_finished(self, report: MailboxRunReport) -> None:
        self._progress.advance(self._task)
        self._progress.update(self._task, description=report.mailbox_id.removeprefix("mailbox:"))


async def _run_once_with_progress(store: Store, engine_id: str | None) -> RunReport:
    """``run --once`` on a terminal: a bar over every mailbox workload."""
    mailboxes = await store.storage.list_mailboxes()
    with Progress(
        TextColumn("{task.description:<40}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console(),
        transient=True,
    ) as progress:
        task = progress.add_task("mailboxes", total=len(mailboxes) * 2)
        observer = _ProgressObserver(progress, task)
        async with store.engine(engine_id=engine_id, observer=observer) as engine:
            return await engine.run_once()


def _run_workers(context: click.Context, workers: int, *, once: bool) -> int:
    """Start ``workers`` engine processes on the same store, pass signals on, and wait."""
    command = [sys.executable, "-m", "serversync", "--store", store_url(context.obj), "run"]
    if once:
        command.append("--once")
    children = [
        subprocess.Popen([*command, "--engine-id", f"{_host()}-{n}"]) for n in range(workers)
    ]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            child.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    codes = [child.wait() for child in children]
    return max(codes)


def _host() -> str:
    import socket

    return socket.gethostname()


_NO_WRITE = frozenset({ActAction.ECHO, ActAction.SKIPPED})


def _print_run(report: RunReport) -> None:
    table = Table("mailbox", "workload", "status", "tracked", "other", "sent", "reason")
    for item in report.mailboxes:
        tracked = sum(1 for i in item.items if i.activity_id is not None)
        other = len(item.items) - tracked
        if item.workload is Workload.ACT:
            # Appointments, contacts and tasks: records and items written, and the rest.
            tracked = sum(1 for a in item.act if a.action not in _NO_WRITE and a.error is None)
            other = len(item.act) - tracked
        reason = ""
        if item.error is not None:
            reason = f"{item.error.error_type}: {item.error.message}"
        elif item.skip_reason is not None:
            reason = item.skip_reason.value
        table.add_row(
            item.mailbox_id,
            item.workload.value,
            item.status.value,
            str(tracked),
            str(other),
            str(len(item.sends)),
            reason,
        )
    console().print(table)


@click.command()
@click.option("--mailbox", "address", help="Only this mailbox.")
@click.pass_context
def status(context: click.Context, address: str | None) -> None:
    """Mailbox health: enabled, last success, last error, failures in a row, next run,
    quarantined messages."""

    async def work(store: Store) -> tuple[MailboxHealth, ...]:
        async with store.engine() as engine:
            return await engine.health(mailbox_id_for(address) if address else None)

    rows = with_store(context, work)
    table = Table(
        "mailbox",
        "workload",
        "state",
        "last success",
        "failures",
        "last error",
        "next run",
        "quarantined",
    )
    for row in rows:
        state = "blocked: " + row.blocked_by.value if row.blocked_by else "enabled"
        if row.lease_holder:
            state += f" (running on {row.lease_holder})"
        error = f"{row.last_error.error_type}: {row.last_error.message}" if row.last_error else ""
        table.add_row(
            row.email_address,
            row.workload.value,
            f"[red]{state}[/]" if row.failing else state,
            _when(row.last_success),
            str(row.consecutive_failures),
            error,
            _when(row.next_run_at),
            _quarantined(row.quarantined),
        )
    console().print(table)


def _quarantined(count: QuarantineCount | None) -> str:
    if count is None:
        return ""
    if count.total == 0:
        return "0"
    parts = [f"{count.waiting} waiting"]
    if count.given_up:
        parts.append(f"{count.given_up} given up")
    if count.next_attempt_at is not None:
        parts.append(f"next {_when(count.next_attempt_at)}")
    return ", ".join(parts)


@click.command()
@click.argument("message", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--mailbox", "address", required=True, help="The mailbox that received it.")
@click.option("--folder", default=INBOX, show_default=True)
@click.pass_context
def explain(context: click.Context, message: Path, address: str, folder: str) -> None:
    """Say whether a message (an .eml file) would be tracked, and why, without storing it."""
    data = message.read_bytes()

    async def work(store: Store) -> ItemOutcome:
        async with store.engine() as engine:
            return await engine.explain(data, mailbox_id_for(address), folder=folder)

    outcome = with_store(context, work)
    out = console()
    reason = outcome.reason.name if outcome.reason is not None else "-"
    out.print(f"[bold]{outcome.kind.value}[/] ({reason}) by {outcome.rule or '-'}")
    if outcome.explanation:
        out.print(outcome.explanation)
    table = Table("rule", "decision", "reason", "explanation")
    for step in outcome.trace:
        table.add_row(
            step.rule,
            step.decision.value,
            step.reason.name if step.reason is not None else "",
            step.explanation,
        )
    out.print(table)


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
