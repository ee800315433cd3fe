"""The conversation index hash indexed only where an email has one.

Most emails carry no conversation index, so the column is mostly NULL. Once ``ANALYZE``
had run while it was NULL everywhere, SQLite judged a full index on it useless and scanned
the whole table for each lookup (1.7 s with a million emails). A partial index holds the
emails that have a hash only, and an equality lookup always uses it.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_TABLE = "serversync_activities"
_FULL = "ix_serversync_activities_conversation_index_hash"
_PARTIAL = "ix_serversync_activities_conversation_index_hash_present"
_PRESENT = sa.text("conversation_index_hash IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        _PARTIAL,
        _TABLE,
        ["conversation_index_hash"],
        sqlite_where=_PRESENT,
        postgresql_where=_PRESENT,
    )
    op.drop_index(_FULL, table_name=_TABLE)


def downgrade() -> None:
    op.create_index(_FULL, _TABLE, ["conversation_index_hash"])
    op.drop_index(_PARTIAL, table_name=_TABLE)
