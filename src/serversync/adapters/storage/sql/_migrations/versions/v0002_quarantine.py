"""The quarantine of poison messages: incoming messages that failed alone.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "serversync_quarantine",
        sa.Column("mailbox_id", sa.String(400), nullable=False),
        sa.Column("folder", sa.String(1000), nullable=False),
        sa.Column("remote_id", sa.String(500), nullable=False),
        sa.Column("first_failed_at", sa.BigInteger(), nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger()),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "mailbox_id", "folder", "remote_id", name="pk_serversync_quarantine"
        ),
    )
    op.create_index(
        "ix_serversync_quarantine_mailbox_id_next_attempt_at",
        "serversync_quarantine",
        ["mailbox_id", "next_attempt_at"],
    )


def downgrade() -> None:
    op.drop_table("serversync_quarantine")
