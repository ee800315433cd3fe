"""``serversync quarantine ...``: incoming messages that failed alone, and what to do with them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import click
from rich.table import Table

from serversync import ItemOutcome, MailboxId, QuarantinedMessage, SyncEngine, Workload

from ._admin import with_store
from ._output import console, fail
from ._store import Store, mailbox_id_for

__all__ = ["quarantine"]


@click.group()
def quarantine() -> None:
    """Poison messages: incoming mail that could not be fetched, parsed or stored."""


@quarantine.command("list")
@click.option("--mailbox", "address", help="Only this mailbox.")
@click.pass_context
def quarantine_list(context: click.Context, address: str | None) -> None:
    """List quarantined messages: attempts, next try or given up, and the last error."""
    mailbox_id = mailbox_id_for(address) if address else None
    entries = _with_engine(context, lambda engine: engine.quarantine(mailbox_id))
    if not entries:
        console().print("no quarantined messages")
        return
    _print(entries)


def _selection(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option("--mailbox", "address", help="The mailbox whose messages to select."),
            click.option("--folder", help="Only messages in this folder."),
            click.option("--id", "remote_id", help="Only the message with this server id."),
            click.option("--all", "every", is_flag=True, help="Every mailbox's messages."),
        ]
    ):
        command = option(command)
    return command


def _mailbox(address: str | None, every: bool) -> MailboxId | None:
    if every == (address is not None):
        fail("name one mailbox with --mailbox ADDRESS, or every mailbox with --all")
    return mailbox_id_for(address) if address else None


@quarantine.command("retry")
@_selection
@click.option("--now", is_flag=True, help="Run the incoming cycle of their mailboxes now.")
@click.pass_context
def quarantine_retry(
    context: click.Context,
    address: str | None,
    folder: str | None,
    remote_id: str | None,
    every: bool,
    now: bool,
) -> None:
    """Try quarantined messages again on their mailbox's next incoming cycle (or ``--now``),
    given-up ones included."""
    mailbox_id = _mailbox(address, every)

    async def work(store: Store) -> tuple[tuple[QuarantinedMessage, ...], list[ItemOutcome]]:
        async with store.engine() as engine:
            retried = await engine.retry_quarantined(mailbox_id, folder=folder, remote_id=remote_id)
            outcomes: list[ItemOutcome] = []
            if now:
                for box in dict.fromkeys(entry.mailbox_id for entry in retried):
                    for report in await engine.sync_mailbox(box, workloads=[Workload.INCOMING]):
                        outcomes += report.items
            return retried, outcomes

    retried, outcomes = with_store(context, work)
    if not now:
        if retried:
            _print(retried)
        console().print(f"{_count(retried)} due on the next incoming cycle (serversync run)")
        return
    keys = {(entry.mailbox_id, entry.folder, entry.remote_id) for entry in retried}
    table = Table("mailbox", "folder", "id", "subject", "outcome", "explanation")
    for item in outcomes:
        if (item.mailbox_id, item.folder, item.remote_id) in keys:
            table.add_row(
                item.mailbox_id.removeprefix("mailbox:"),
                item.folder,
                item.remote_id,
                item.subject if item.subject is not None else "-",
                item.kind.value,
                item.explanation,
            )
    console().print(table)
    console().print(f"{_count(retried)} tried again")


@quarantine.command("discard")
@_selection
@click.pass_context
def quarantine_discard(
    context: click.Context,
    address: str | None,
    folder: str | None,
    remote_id: str | None,
    every: bool,
) -> None:
    """Forget quarantined messages without trying them again (the mail stays on the server)."""
    mailbox_id = _mailbox(address, every)
    discarded = _with_engine(
        context,
        lambda engine: engine.discard_quarantined(mailbox_id, folder=folder, remote_id=remote_id),
    )
    if discarded:
        _print(discarded)
    console().print(f"{_count(discarded)} discarded")


def _with_engine(
    context: click.Context,
    call: Callable[[SyncEngine], Awaitable[tuple[QuarantinedMessage, ...]]],
) -> tuple[QuarantinedMessage, ...]:
    async def work(store: Store) -> tuple[QuarantinedMessage, ...]:
        async with store.engine() as engine:
            return await call(engine)

    return with_store(context, work)


def _count(entries: Sequence[QuarantinedMessage]) -> str:
    return f"{len(entries)} message" + ("" if len(entries) == 1 else "s")


def _print(entries: Sequence[QuarantinedMessage]) -> None:
    table = Table(
        "mailbox", "folder", "id", "subject", "from", "attempts", "state", "first failed", "error"
    )
    for entry in entries:
        if entry.given_up:
            state = f"[red]given up {_when(entry.given_up_at)}[/]"
        else:
            state = f"next try {_when(entry.next_attempt_at)}"
        table.add_row(
            entry.mailbox_id.removeprefix("mailbox:"),
            entry.folder,
            entry.remote_id,
            entry.subject if entry.subject is not None else "-",
            entry.sender or "-",
            str(entry.attempts),
            state,
            _when(entry.first_failed_at),
            f"{entry.error.error_type}: {entry.explanation or entry.error.message}",
        )
    console().print(table)


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
