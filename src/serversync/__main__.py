"""``python -m serversync``: the command line (what ``run --workers`` starts)."""

from serversync.cli import main

main()
