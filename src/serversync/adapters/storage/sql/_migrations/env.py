"""Alembic environment: migrations always run on a connection serversync hands over."""

from __future__ import annotations

from alembic import context

from serversync.adapters.storage.sql._database import VERSION_TABLE
from serversync.adapters.storage.sql._schema import metadata

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    # SQLite alters tables by copying them; batch mode does that for later migrations.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
