"""The ``serversync`` command (extra ``cli``): a driver like any host, using the public API."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``serversync`` console script."""
    try:
        from serversync.cli._commands import cli
    except ModuleNotFoundError as exc:  # click is in the optional "cli" extra
        sys.exit(
            f"serversync: the command line needs the 'cli' extra ({exc.name} is missing): "
            "pip install 'serversync[cli]'"
        )
    cli.main(args=argv, prog_name="serversync")
