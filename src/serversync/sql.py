"""SQL storage (extra ``sql``): every repository port on SQLite or PostgreSQL.

SQLite is the embedded default (the CLI and the demo use it); PostgreSQL lets several engine
processes on several machines share one store::

    storage = await SqlStorage.open("sqlite:///serversync.db", upgrade=True)
    directory = SqlDirectory(storage)
    credentials = SqlCredentials(storage)  # secrets stay in environment variables or files
    act_records = SqlActRecords(storage)  # CRM appointments, contacts, tasks for ACT sync

Install it with ``pip install 'serversync[sql]'``.
"""

from __future__ import annotations

try:
    from serversync.adapters.storage.sql import (
        SqlActRecords,
        SqlCredentials,
        SqlDirectory,
        SqlStorage,
    )
    from serversync.adapters.storage.sql._database import head_revision as schema_head
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "serversync.sql needs the 'sql' extra: pip install 'serversync[sql]'"
    ) from exc

__all__ = ["SqlActRecords", "SqlCredentials", "SqlDirectory", "SqlStorage", "schema_head"]
