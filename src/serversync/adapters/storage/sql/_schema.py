"""The SQL schema: one definition for SQLite and PostgreSQL.

Each row keeps the whole value as JSON (``data``, written by the cattrs converter) next to
the few columns the store queries, constrains or locks on. The columns are projections of
``data`` and are always written together with it. Times in query columns are microseconds
since the Unix epoch (UTC): they compare the same way in both dialects.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

__all__ = [
    "SCHEMA_VERSION",
    "act_mappings",
    "act_records",
    "act_states",
    "act_sync_filters",
    "activities",
    "activity_addresses",
    "checkpoints",
    "counters",
    "leases",
    "mailboxes",
    "metadata",
    "profiles",
    "quarantine",
    "queue_items",
    "records",
    "secret_references",
    "tracking_folders",
    "tracking_users",
    "workload_states",
]

SCHEMA_VERSION = "0004"
"""The Alembic revision this code expects (``serversync db upgrade`` brings a store to it)."""

# SQLite only gives an auto-incrementing rowid to a column spelled INTEGER PRIMARY KEY.
_Serial = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

profiles = Table(
    "serversync_profiles",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("data", Text, nullable=False),
)

mailboxes = Table(
    "serversync_mailboxes",
    metadata,
    Column("id", String(400), primary_key=True),
    Column("profile_id", String(200), index=True),
    Column("data", Text, nullable=False),
)

workload_states = Table(
    "serversync_workload_states",
    metadata,
    Column("mailbox_id", String(400), primary_key=True),
    Column("workload", String(20), primary_key=True),
    Column("next_run_at", BigInteger),
    Column("data", Text, nullable=False),
)

checkpoints = Table(
    "serversync_checkpoints",
    metadata,
    Column("mailbox_id", String(400), primary_key=True),
    Column("folder", String(1000), primary_key=True),
    Column("data", Text, nullable=False),
)

activities = Table(
    "serversync_activities",
    metadata,
    # Insertion order: "oldest first" for claims and listings.
    Column("seq", _Serial, primary_key=True, autoincrement=True),
    Column("id", String(200), nullable=False, unique=True),
    Column("direction", SmallInteger, nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("message_id", String(1000)),
    Column("tracking_token", String(200), index=True),
    Column("conversation_index_hash", BigInteger),
    Column("sender", String(400)),
    Column("sender_mailbox_id", String(400)),
    Column("received_on", BigInteger),
    Column("last_activity_on", BigInteger),
    Column("postpone_sending_until", BigInteger),
    Column("tracking_folder_id", String(200), index=True),
    Column("claim_token", String(64)),
    Column("claim_owner", String(200)),
    Column("claim_expires_at", BigInteger),
    Column("data", Text, nullable=False),
    # Dynamics keeps one email per (Message-ID, direction) organisation-wide; emails without a
    # Message-ID (drafts) are not constrained, as NULLs are distinct in both dialects.
    UniqueConstraint("message_id", "direction"),
    Index(None, "sender_mailbox_id", "status"),
    Index(None, "sender", "direction", "received_on"),
    # Only emails with a conversation index: an index mostly of NULLs lost SQLite's favour
    # once ANALYZE had seen it (revision 0004).
    Index(
        "ix_serversync_activities_conversation_index_hash_present",
        "conversation_index_hash",
        sqlite_where=text("conversation_index_hash IS NOT NULL"),
        postgresql_where=text("conversation_index_hash IS NOT NULL"),
    ),
)

activity_addresses = Table(
    "serversync_activity_addresses",
    metadata,
    Column("activity_seq", BigInteger, primary_key=True),
    Column("address", String(400), primary_key=True),
    Index(None, "address", "activity_seq"),
)

queue_items = Table(
    "serversync_queue_items",
    metadata,
    Column("queue", String(400), primary_key=True),
    Column("activity_id", String(200), primary_key=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("seq", BigInteger, nullable=False),
    Column("data", Text, nullable=False),
)

tracking_folders = Table(
    "serversync_tracking_folders",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("mailbox_id", String(400), nullable=False, index=True),
    Column("seq", BigInteger, nullable=False),
    Column("data", Text, nullable=False),
)

leases = Table(
    "serversync_leases",
    metadata,
    Column("key", String(500), primary_key=True),
    Column("owner", String(200), nullable=False),
    Column("until", BigInteger, nullable=False),
)

tracking_users = Table(
    "serversync_tracking_users",
    metadata,
    Column("user_ref", String(400), primary_key=True),
    Column("number", Integer, nullable=False, unique=True),
)

counters = Table(
    "serversync_counters",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

records = Table(
    "serversync_records",
    metadata,
    Column("ref", String(400), primary_key=True),
    Column("address", String(400), nullable=False, index=True),
    Column("seq", BigInteger, nullable=False),
    Column("data", Text, nullable=False),
)

# Where a mailbox's or profile's secret lives (an environment variable or a file); never the
# secret itself. ``owner`` is "mailbox:<id>" or "profile:<id>".
secret_references = Table(
    "serversync_secret_references",
    metadata,
    Column("owner", String(500), primary_key=True),
    Column("data", Text, nullable=False),
)

# Poison messages, one row per message (mailbox, folder, remote id). ``next_attempt_at`` is
# NULL once the engine gave up on the message.
quarantine = Table(
    "serversync_quarantine",
    metadata,
    Column("mailbox_id", String(400), primary_key=True),
    Column("folder", String(1000), primary_key=True),
    Column("remote_id", String(500), primary_key=True),
    Column("first_failed_at", BigInteger, nullable=False),
    Column("next_attempt_at", BigInteger),
    Column("data", Text, nullable=False),
    Index(None, "mailbox_id", "next_attempt_at"),
)

# Exchange sync id mappings, one row per mapping. ``linked_record`` and ``linked_item`` are
# the record and the Exchange item while the mapping links them and NULL otherwise, so the
# unique constraints allow one linked mapping per (owner, record) and per (owner, item)
# (NULLs are distinct in both dialects). ``failed_at`` is the last failure of a mapping that
# never linked, what the retention purge deletes by.
act_mappings = Table(
    "serversync_act_mappings",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("owner", String(400), nullable=False),
    Column("entity", String(20), nullable=False),
    Column("linked_record", String(400)),
    Column("linked_item", String(1000)),
    Column("failed_at", BigInteger, index=True),
    Column("data", Text, nullable=False),
    UniqueConstraint("owner", "linked_record"),
    UniqueConstraint("owner", "linked_item"),
    Index(None, "owner", "entity"),
)

# Each mailbox's ACT sync state per entity.
act_states = Table(
    "serversync_act_states",
    metadata,
    Column("mailbox_id", String(400), primary_key=True),
    Column("entity", String(20), primary_key=True),
    Column("data", Text, nullable=False),
)

# CRM appointments, contacts and tasks for hosts without their own tables (the CLI, the
# demo). ``version`` is a random token replaced on every write.
act_records = Table(
    "serversync_act_records",
    metadata,
    Column("ref", String(400), primary_key=True),
    Column("entity", String(20), nullable=False),
    Column("owner", String(400), nullable=False),
    Column("version", String(64), nullable=False),
    Column("modified_on", BigInteger, nullable=False),
    Column("data", Text, nullable=False),
    Index(None, "entity", "modified_on", "ref"),
)

# Users' synchronization filters, next to the records they select.
act_sync_filters = Table(
    "serversync_act_sync_filters",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("owner", String(400), nullable=False),
    Column("entity", String(20), nullable=False),
    Column("data", Text, nullable=False),
    Index(None, "owner", "entity"),
)
