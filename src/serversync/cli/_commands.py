"""Click commands: the ``serversync`` group and the commands that manage the store itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from serversync import __version__
from serversync.demo import DEMO_STORE, render, run_demo
from serversync.sql import schema_head

from ._admin import mailbox, profile, with_store
from ._operate import explain, run, status
from ._output import console
from ._quarantine import quarantine
from ._store import STORE_VARIABLE, Store

__all__ = ["cli"]


@click.group()
@click.version_option(__version__, prog_name="serversync")
@click.option(
    "--store",
    metavar="URL",
    envvar=STORE_VARIABLE,
    help="sqlite:///path.db or postgresql://user@host/db (default: sqlite:///serversync.db).",
)
@click.pass_context
def cli(context: click.Context, store: str | None) -> None:
    """serversync: email synchronization for CRM backends."""
    context.obj = store


@cli.command()
@click.option(
    "--store-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEMO_STORE,
    show_default=True,
    help="The SQLite file the demo (re)creates and leaves behind.",
)
def demo(store_file: Path) -> None:
    """Run the whole job in one process on sample mail and print what happened and why."""
    click.echo(render(asyncio.run(run_demo(store_file))))
    click.echo(
        f"\nThe store is in {store_file}; see it with: "
        f"serversync --store sqlite:///{store_file} status"
    )


@cli.command()
@click.pass_context
def init(context: click.Context) -> None:
    """Create the store (a SQLite file by default) with the current schema."""

    async def work(store: Store) -> None:
        return None

    with_store(context, work, upgrade=True)
    console().print(f"store ready (schema {schema_head()})")


@cli.group()
def db() -> None:
    """The store's schema."""


@db.command()
@click.pass_context
def upgrade(context: click.Context) -> None:
    """Create or migrate the schema to the newest revision (safe while engines run)."""

    async def work(store: Store) -> None:
        return None

    with_store(context, work, upgrade=True)
    console().print(f"schema at {schema_head()}")


for command in (profile, mailbox, run, status, explain):
    cli.add_command(command)
cli.add_command(quarantine)
