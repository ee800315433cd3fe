"""Appointment, contact and task sync: Exchange sync id mappings, each mailbox's ACT sync
state, and CRM records and sync filters for hosts without their own.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "serversync_act_mappings",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("owner", sa.String(400), nullable=False),
        sa.Column("entity", sa.String(20), nullable=False),
        sa.Column("linked_record", sa.String(400)),
        sa.Column("linked_item", sa.String(1000)),
        sa.Column("failed_at", sa.BigInteger()),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_serversync_act_mappings"),
        sa.UniqueConstraint(
            "owner", "linked_record", name="uq_serversync_act_mappings_owner_linked_record"
        ),
        sa.UniqueConstraint(
            "owner", "linked_item", name="uq_serversync_act_mappings_owner_linked_item"
        ),
    )
    op.create_index(
        "ix_serversync_act_mappings_failed_at", "serversync_act_mappings", ["failed_at"]
    )
    op.create_index(
        "ix_serversync_act_mappings_owner_entity", "serversync_act_mappings", ["owner", "entity"]
    )
    op.create_table(
        "serversync_act_states",
        sa.Column("mailbox_id", sa.String(400), nullable=False),
        sa.Column("entity", sa.String(20), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("mailbox_id", "entity", name="pk_serversync_act_states"),
    )
    op.create_table(
        "serversync_act_records",
        sa.Column("ref", sa.String(400), nullable=False),
        sa.Column("entity", sa.String(20), nullable=False),
        sa.Column("owner", sa.String(400), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("modified_on", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("ref", name="pk_serversync_act_records"),
    )
    op.create_index(
        "ix_serversync_act_records_entity_modified_on_ref",
        "serversync_act_records",
        ["entity", "modified_on", "ref"],
    )
    op.create_table(
        "serversync_act_sync_filters",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("owner", sa.String(400), nullable=False),
        sa.Column("entity", sa.String(20), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_serversync_act_sync_filters"),
    )
    op.create_index(
        "ix_serversync_act_sync_filters_owner_entity",
        "serversync_act_sync_filters",
        ["owner", "entity"],
    )


def downgrade() -> None:
    op.drop_table("serversync_act_sync_filters")
    op.drop_table("serversync_act_records")
    op.drop_table("serversync_act_states")
    op.drop_table("serversync_act_mappings")
