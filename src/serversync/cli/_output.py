"""Printing for the CLI: rich tables on stdout, errors on stderr without tracebacks."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import click
from rich.console import Console

from serversync import SyncError

__all__ = ["console", "fail", "show_error"]


def console() -> Console:
    """The console tables go to. Piped into a file or grep, tables are not cut to 80
    columns: they get ``$COLUMNS`` or 200."""
    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS") or 200)
    return Console(highlight=False, soft_wrap=True, width=width)


def show_error(exc: BaseException) -> None:
    """Say what went wrong in one line; serversync errors never carry secrets."""
    if isinstance(exc, click.exceptions.Exit | click.ClickException | SystemExit):
        raise exc
    kind = "error" if isinstance(exc, SyncError) else type(exc).__name__
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[red]serversync: {kind}:[/] {exc}"
    )


def fail(message: str) -> NoReturn:
    """End the command with ``message`` and exit status 1."""
    raise click.ClickException(message)
