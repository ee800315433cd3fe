"""Click commands."""

from __future__ import annotations

import asyncio

import click

from serversync import __version__
from serversync.demo import render, run_demo

__all__ = ["cli"]


@click.group()
@click.version_option(__version__, prog_name="serversync")
def cli() -> None:
    """serversync: email synchronization for CRM backends."""


@cli.command()
def demo() -> None:
    """Run the whole job in one process on sample mail and print what happened and why."""
    click.echo(render(asyncio.run(run_demo())))
