"""The first schema: profiles, mailboxes, workload states, cursors, emails, queue items,
tracking folders, leases, tracking numbers, the record directory and secret references.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_serial = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "serversync_profiles",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_serversync_profiles"),
    )
    op.create_table(
        "serversync_mailboxes",
        sa.Column("id", sa.String(400), nullable=False),
        sa.Column("profile_id", sa.String(200)),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_serversync_mailboxes"),
    )
    op.create_index("ix_serversync_mailboxes_profile_id", "serversync_mailboxes", ["profile_id"])
    op.create_table(
        "serversync_workload_states",
        sa.Column("mailbox_id", sa.String(400), nullable=False),
        sa.Column("workload", sa.String(20), nullable=False),
        sa.Column("next_run_at", sa.BigInteger()),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("mailbox_id", "workload", name="pk_serversync_workload_states"),
    )
    op.create_table(
        "serversync_checkpoints",
        sa.Column("mailbox_id", sa.String(400), nullable=False),
        sa.Column("folder", sa.String(1000), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("mailbox_id", "folder", name="pk_serversync_checkpoints"),
    )
    op.create_table(
        "serversync_activities",
        sa.Column("seq", _serial, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("direction", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("message_id", sa.String(1000)),
        sa.Column("tracking_token", sa.String(200)),
        sa.Column("conversation_index_hash", sa.BigInteger()),
        sa.Column("sender", sa.String(400)),
        sa.Column("sender_mailbox_id", sa.String(400)),
        sa.Column("received_on", sa.BigInteger()),
        sa.Column("last_activity_on", sa.BigInteger()),
        sa.Column("postpone_sending_until", sa.BigInteger()),
        sa.Column("tracking_folder_id", sa.String(200)),
        sa.Column("claim_token", sa.String(64)),
        sa.Column("claim_owner", sa.String(200)),
        sa.Column("claim_expires_at", sa.BigInteger()),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_serversync_activities"),
        sa.UniqueConstraint("id", name="uq_serversync_activities_id"),
        sa.UniqueConstraint(
            "message_id", "direction", name="uq_serversync_activities_message_id_direction"
        ),
    )
    for columns in (
        ["tracking_token"],
        ["conversation_index_hash"],
        ["tracking_folder_id"],
        ["sender_mailbox_id", "status"],
        ["sender", "direction", "received_on"],
    ):
        op.create_index(
            "ix_serversync_activities_" + "_".join(columns), "serversync_activities", columns
        )
    op.create_table(
        "serversync_activity_addresses",
        sa.Column("activity_seq", sa.BigInteger(), nullable=False),
        sa.Column("address", sa.String(400), nullable=False),
        sa.PrimaryKeyConstraint("activity_seq", "address", name="pk_serversync_activity_addresses"),
    )
    op.create_index(
        "ix_serversync_activity_addresses_address_activity_seq",
        "serversync_activity_addresses",
        ["address", "activity_seq"],
    )
    op.create_table(
        "serversync_queue_items",
        sa.Column("queue", sa.String(400), nullable=False),
        sa.Column("activity_id", sa.String(200), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("queue", "activity_id", name="pk_serversync_queue_items"),
        sa.UniqueConstraint("id", name="uq_serversync_queue_items_id"),
    )
    op.create_table(
        "serversync_tracking_folders",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("mailbox_id", sa.String(400), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_serversync_tracking_folders"),
    )
    op.create_index(
        "ix_serversync_tracking_folders_mailbox_id", "serversync_tracking_folders", ["mailbox_id"]
    )
    op.create_table(
        "serversync_leases",
        sa.Column("key", sa.String(500), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("until", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_serversync_leases"),
    )
    op.create_table(
        "serversync_tracking_users",
        sa.Column("user_ref", sa.String(400), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("user_ref", name="pk_serversync_tracking_users"),
        sa.UniqueConstraint("number", name="uq_serversync_tracking_users_number"),
    )
    op.create_table(
        "serversync_counters",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_serversync_counters"),
    )
    op.create_table(
        "serversync_records",
        sa.Column("ref", sa.String(400), nullable=False),
        sa.Column("address", sa.String(400), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("ref", name="pk_serversync_records"),
    )
    op.create_index("ix_serversync_records_address", "serversync_records", ["address"])
    op.create_table(
        "serversync_secret_references",
        sa.Column("owner", sa.String(500), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("owner", name="pk_serversync_secret_references"),
    )


def downgrade() -> None:
    for table in (
        "serversync_secret_references",
        "serversync_records",
        "serversync_counters",
        "serversync_tracking_users",
        "serversync_leases",
        "serversync_tracking_folders",
        "serversync_queue_items",
        "serversync_activity_addresses",
        "serversync_activities",
        "serversync_checkpoints",
        "serversync_workload_states",
        "serversync_mailboxes",
        "serversync_profiles",
    ):
        op.drop_table(table)
