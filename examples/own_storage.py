"""A host's own storage: every repository port over the standard library's ``sqlite3``.

serversync keeps its state (mailboxes, cursors, email activities, send claims, leases) in the
host's database, through the narrow methods of ``serversync.Repositories``. This file
implements them on SQLite, the way a host implements them on its own tables, and proves the
implementation with ``serversync.testing.contracts.check_repositories``, the checks
serversync's own stores pass. Then it synchronizes a mailbox over it, closes the database,
opens it again as a restarted process would, and shows that nothing is stored twice.

Run it with ``python examples/own_storage.py``.

How the rows are laid out:

* each value (``Mailbox``, ``EmailActivity``, ``WorkloadState``, a checkpoint ...) is stored
  whole as JSON in a ``doc`` column, written and read with
  ``serversync.serialization.make_converter()``;
* the fields that queries filter on are copied into indexed columns when the value is
  written (one place: ``_write_email``), and the database's constraints carry the promises:
  ``UNIQUE (message_id, direction)`` makes ``add_incoming`` exactly-once, a claim token
  column makes send claims exclusive, and every multi-step write runs in one
  ``BEGIN IMMEDIATE`` transaction, so several processes may share the file.

``sqlite3`` calls block; on a local file they take microseconds. A host on a database server
would use an async driver (or ``asyncio.to_thread``) in the same methods.

When the repository ports gain a method, this class needs it too. ``mypy`` names it: the
class does not inherit from the ``Repositories`` protocol (inheriting would hand it the
protocol's empty method bodies and hide the gap), so passing it where ``Repositories`` is
expected fails to type-check until every method is there. ``check_repositories`` then checks
what the new method does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import attrs

from serversync import (
    ActivityId,
    AddResult,
    AlreadyExists,
    Checkpoint,
    ClaimToken,
    CorrelationQuery,
    Created,
    Credentials,
    EmailActivity,
    EmailApprovalStatus,
    EmailDirection,
    EmailServerProfile,
    EmailStatus,
    ErrorRecord,
    IncomingFilteringMethod,
    LeaseLostError,
    Mailbox,
    MailboxId,
    MailboxTrackingFolder,
    MappingCredentials,
    MessageId,
    ProfileId,
    QuarantineCount,
    QuarantinedMessage,
    RecordRef,
    Repositories,
    Secret,
    SendClaim,
    SendOutcome,
    StorageConflictError,
    SyncEngine,
    TestStatus,
    TrackingNumbers,
    Transports,
    Workload,
    WorkloadState,
    apply_send_outcome,
)
from serversync.serialization import make_converter
from serversync.testing import (
    FakeClock,
    InMemoryDirectory,
    InMemoryIncomingTransport,
    InMemoryMailServer,
    InMemoryOutgoingTransport,
    a_mailbox,
    a_profile,
    a_user,
    an_email,
)
from serversync.testing.contracts import check_repositories

T = TypeVar("T")

# --8<-- [start:schema]
SCHEMA = """
CREATE TABLE profile (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE mailbox (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE workload_state (
    mailbox_id TEXT NOT NULL, workload TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (mailbox_id, workload)
);
CREATE TABLE checkpoint (
    mailbox_id TEXT NOT NULL, folder TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (mailbox_id, folder)
);
CREATE TABLE email (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,      -- insertion order: "oldest first"
    id TEXT NOT NULL UNIQUE,
    message_id TEXT,
    direction INTEGER NOT NULL,
    status INTEGER NOT NULL,
    sender TEXT,                                -- trimmed and lower-cased
    sender_mailbox_id TEXT,
    received_on REAL,                           -- POSIX timestamps compare as numbers
    last_activity_on REAL,
    postpone_sending_until REAL,
    tracking_token TEXT,
    conversation_index_hash INTEGER,
    tracking_folder_id TEXT,
    claim_token TEXT,
    claim_owner TEXT,
    claim_expires_at REAL,
    doc TEXT NOT NULL,
    UNIQUE (message_id, direction)              -- the organisation-wide dedupe key
);
CREATE INDEX email_outbox ON email (sender_mailbox_id, status);
CREATE TABLE email_party (email_id TEXT NOT NULL, address TEXT NOT NULL);
CREATE INDEX email_party_address ON email_party (address);
CREATE TABLE queue_item (
    queue TEXT NOT NULL, email_id TEXT NOT NULL, id TEXT NOT NULL, created_on REAL,
    PRIMARY KEY (queue, email_id)
);
CREATE TABLE tracking_folder (id TEXT PRIMARY KEY, mailbox_id TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE tracking_user (user TEXT PRIMARY KEY, number INTEGER NOT NULL UNIQUE);
CREATE TABLE tracking_counter (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
INSERT INTO tracking_counter VALUES (1, 0);
CREATE TABLE lease (key TEXT PRIMARY KEY, owner TEXT NOT NULL, until REAL NOT NULL);
CREATE TABLE quarantine (                       -- messages that failed alone
    mailbox_id TEXT NOT NULL, folder TEXT NOT NULL, remote_id TEXT NOT NULL,
    first_failed_at REAL NOT NULL,
    next_attempt_at REAL,                       -- NULL once the engine gave up
    doc TEXT NOT NULL,
    PRIMARY KEY (mailbox_id, folder, remote_id)
);
"""
# --8<-- [end:schema]


_REPLACE_EMAIL = """
ON CONFLICT (id) DO UPDATE SET
    message_id = excluded.message_id, direction = excluded.direction,
    status = excluded.status, sender = excluded.sender,
    sender_mailbox_id = excluded.sender_mailbox_id, received_on = excluded.received_on,
    last_activity_on = excluded.last_activity_on,
    postpone_sending_until = excluded.postpone_sending_until,
    tracking_token = excluded.tracking_token,
    conversation_index_hash = excluded.conversation_index_hash,
    tracking_folder_id = excluded.tracking_folder_id, doc = excluded.doc
"""


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _address(value: str) -> str:
    return value.strip().lower()


class SqliteStorage:
    """Every repository port of serversync over one SQLite database (``Repositories``)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._json = make_converter()

    @classmethod
    def open(cls, path: str) -> SqliteStorage:
        """Open (and on first use create) the database at ``path``."""
        db = sqlite3.connect(path, isolation_level=None)  # transactions are explicit
        if db.execute("SELECT name FROM sqlite_master WHERE name = 'email'").fetchone() is None:
            db.executescript(SCHEMA)
        return cls(db)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    # -- helpers -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")  # takes the write lock at once
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _dump(self, value: object) -> str:
        return json.dumps(self._json.unstructure(value))

    def _load(self, doc: str, cls: Any) -> Any:
        return self._json.structure(json.loads(doc), cls)

    def _one(self, sql: str, args: Sequence[object], cls: type[T]) -> T | None:
        row = self._db.execute(sql, args).fetchone()
        return None if row is None else self._load(row[0], cls)

    def _emails(
        self, where: str, args: Sequence[object] = (), *, limit: int = -1
    ) -> list[EmailActivity]:
        """The emails matching ``where``, oldest first."""
        sql = f"SELECT doc FROM email WHERE {where} ORDER BY seq LIMIT ?"
        return [self._load(doc, EmailActivity) for (doc,) in self._db.execute(sql, [*args, limit])]

    def _write_email(
        self, db: sqlite3.Connection, activity: EmailActivity, *, new: bool = False
    ) -> None:
        """Write one email and its indexed columns (the claim columns are left alone).

        With ``new`` an email with the same id is an ``IntegrityError``; otherwise it is
        replaced. The same (Message-ID, direction) as another email is always one.
        """
        replace = "" if new else _REPLACE_EMAIL
        db.execute(
            f"""
            INSERT INTO email (id, message_id, direction, status, sender, sender_mailbox_id,
                received_on, last_activity_on, postpone_sending_until, tracking_token,
                conversation_index_hash, tracking_folder_id, doc)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) {replace}
            """,
            (
                activity.id,
                activity.message_id,
                int(activity.direction),
                int(activity.status),
                _address(activity.sender) if activity.sender else None,
                activity.sender_mailbox_id,
                _ts(activity.received_on),
                _ts(activity.last_activity_on),
                _ts(activity.postpone_sending_until),
                activity.tracking_token,
                activity.base_conversation_index_hash,
                activity.tracking_folder_id,
                self._dump(activity),
            ),
        )
        db.execute("DELETE FROM email_party WHERE email_id = ?", (activity.id,))
        db.executemany(
            "INSERT INTO email_party VALUES (?, ?)",
            [(activity.id, _address(p.address)) for p in activity.parties if p.address],
        )

    def _claimed(self, claim: SendClaim) -> EmailActivity:
        """The claimed email, if ``claim`` is still its current claim."""
        row = self._db.execute(
            "SELECT doc FROM email WHERE id = ? AND claim_token = ?",
            (claim.activity.id, claim.token),
        ).fetchone()
        if row is None:
            raise LeaseLostError(f"the send claim on email {claim.activity.id} is no longer held")
        loaded: EmailActivity = self._load(row[0], EmailActivity)
        return loaded

    # -- the host's own writes (the CRM's code, not serversync's) ----------------------------

    def save_profile(self, profile: EmailServerProfile) -> None:
        """Store or replace an email server profile."""
        with self._transaction() as db:
            db.execute("REPLACE INTO profile VALUES (?, ?)", (profile.id, self._dump(profile)))

    def save_mailbox(self, mailbox: Mailbox) -> None:
        """Store or replace a mailbox."""
        with self._transaction() as db:
            db.execute("REPLACE INTO mailbox VALUES (?, ?)", (mailbox.id, self._dump(mailbox)))

    def save_email(self, activity: EmailActivity) -> None:
        """Store or replace an email (a draft to send, an email received earlier ...)."""
        with self._transaction() as db:
            self._write_email(db, activity)

    def count_emails(self) -> int:
        """How many email activities are stored."""
        (count,) = self._db.execute("SELECT count(*) FROM email").fetchone()
        return int(count)

    # -- profiles, mailboxes, state and cursors ----------------------------------------------

    async def get_profile(self, profile_id: ProfileId) -> EmailServerProfile | None:
        sql = "SELECT doc FROM profile WHERE id = ?"
        return self._one(sql, (profile_id,), EmailServerProfile)

    async def list_mailboxes(self) -> Sequence[Mailbox]:
        rows = self._db.execute("SELECT doc FROM mailbox ORDER BY id")
        return [self._load(doc, Mailbox) for (doc,) in rows]

    async def get_mailbox(self, mailbox_id: MailboxId) -> Mailbox | None:
        return self._one("SELECT doc FROM mailbox WHERE id = ?", (mailbox_id,), Mailbox)

    async def disable_workload(
        self, mailbox_id: MailboxId, workload: Workload, *, error: ErrorRecord, at: datetime
    ) -> bool:
        with self._transaction() as db:
            row = db.execute("SELECT doc FROM mailbox WHERE id = ?", (mailbox_id,)).fetchone()
            if row is None:
                return False
            mailbox: Mailbox = self._load(row[0], Mailbox)
            if not mailbox.enabled_for(workload):
                return False
            changes: dict[str, Any] = {
                f"enabled_for_{workload.value}": False,
                f"{workload.value}_status": TestStatus.FAILURE,
            }
            disabled = attrs.evolve(mailbox, **changes)
            db.execute(
                "UPDATE mailbox SET doc = ? WHERE id = ?", (self._dump(disabled), mailbox_id)
            )
            return True

    async def create_mailbox(self, mailbox: Mailbox) -> Mailbox | None:
        with self._transaction() as db:  # the write lock makes check-then-insert atomic
            for (doc,) in db.execute("SELECT doc FROM mailbox"):
                other: Mailbox = self._load(doc, Mailbox)
                if other.id == mailbox.id or (
                    mailbox.owner is not None and other.owner == mailbox.owner
                ):
                    return other
            db.execute(
                "INSERT INTO mailbox (id, doc) VALUES (?, ?)", (mailbox.id, self._dump(mailbox))
            )
            return None

    async def change_mailbox_address(self, mailbox_id: MailboxId, address: str) -> Mailbox | None:
        return self._change_mailbox(mailbox_id, lambda m: m.with_email_address(address))

    async def set_mailbox_approval(
        self, mailbox_id: MailboxId, approval: EmailApprovalStatus
    ) -> Mailbox | None:
        return self._change_mailbox(mailbox_id, lambda m: attrs.evolve(m, approval=approval))

    def _change_mailbox(
        self, mailbox_id: MailboxId, change: Callable[[Mailbox], Mailbox]
    ) -> Mailbox | None:
        with self._transaction() as db:
            row = db.execute("SELECT doc FROM mailbox WHERE id = ?", (mailbox_id,)).fetchone()
            if row is None:
                return None
            changed = change(self._load(row[0], Mailbox))
            db.execute("UPDATE mailbox SET doc = ? WHERE id = ?", (self._dump(changed), mailbox_id))
            return changed

    async def record_mailbox_test(
        self, mailbox_id: MailboxId, results: Mapping[Workload, TestStatus], *, at: datetime
    ) -> None:
        with self._transaction() as db:
            row = db.execute("SELECT doc FROM mailbox WHERE id = ?", (mailbox_id,)).fetchone()
            if row is None:
                return
            changes: dict[str, Any] = {"test_completed_on": at}
            for workload, status in results.items():
                changes[f"{workload.value}_status"] = status
                changes[f"enabled_for_{workload.value}"] = status is TestStatus.SUCCESS
            tested = attrs.evolve(self._load(row[0], Mailbox), **changes)
            db.execute("UPDATE mailbox SET doc = ? WHERE id = ?", (self._dump(tested), mailbox_id))

    async def get_workload_state(
        self, mailbox_id: MailboxId, workload: Workload
    ) -> WorkloadState | None:
        sql = "SELECT doc FROM workload_state WHERE mailbox_id = ? AND workload = ?"
        return self._one(sql, (mailbox_id, workload.value), WorkloadState)

    async def save_workload_state(
        self, mailbox_id: MailboxId, workload: Workload, state: WorkloadState
    ) -> None:
        with self._transaction() as db:
            db.execute(
                "REPLACE INTO workload_state VALUES (?, ?, ?)",
                (mailbox_id, workload.value, self._dump(state)),
            )

    async def load_checkpoint(self, mailbox_id: MailboxId, folder: str) -> Checkpoint | None:
        sql = "SELECT doc FROM checkpoint WHERE mailbox_id = ? AND folder = ?"
        row = self._db.execute(sql, (mailbox_id, folder)).fetchone()
        if row is None:
            return None
        checkpoint: Checkpoint = self._load(row[0], Checkpoint)
        return checkpoint

    async def save_checkpoint(
        self, mailbox_id: MailboxId, folder: str, checkpoint: Checkpoint
    ) -> None:
        doc = json.dumps(self._json.unstructure(checkpoint, Checkpoint))  # tagged union
        with self._transaction() as db:
            db.execute("REPLACE INTO checkpoint VALUES (?, ?, ?)", (mailbox_id, folder, doc))

    async def clear_checkpoints(self, mailbox_id: MailboxId) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM checkpoint WHERE mailbox_id = ?", (mailbox_id,))

    # -- incoming emails ---------------------------------------------------------------------

    # --8<-- [start:add_incoming]
    async def add_incoming(
        self, activity: EmailActivity, *, queues: Collection[RecordRef] = ()
    ) -> AddResult:
        try:
            with self._transaction() as db:
                self._write_email(db, activity, new=True)
                for queue in queues:
                    db.execute(
                        "INSERT OR IGNORE INTO queue_item VALUES (?, ?, ?, ?)",
                        (str(queue), activity.id, str(uuid.uuid4()), _ts(activity.received_on)),
                    )
        except sqlite3.IntegrityError:
            # The same (Message-ID, direction), or the same id, is already stored.
            row = self._db.execute(
                "SELECT id FROM email WHERE (message_id = ? AND direction = ?) OR id = ?",
                (activity.message_id, int(activity.direction), activity.id),
            ).fetchone()
            return AlreadyExists(activity_id=ActivityId(row[0]))
        return Created(activity_id=activity.id)

    # --8<-- [end:add_incoming]

    async def ensure_queue_item(self, queue: RecordRef, activity_id: ActivityId) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO queue_item VALUES (?, ?, ?, NULL)",
                (str(queue), activity_id, str(uuid.uuid4())),
            )
            return cursor.rowcount == 1

    async def get_activity(self, activity_id: ActivityId) -> EmailActivity | None:
        return self._one("SELECT doc FROM email WHERE id = ?", (activity_id,), EmailActivity)

    async def find_by_message_ids(
        self, message_ids: Collection[MessageId]
    ) -> Sequence[EmailActivity]:
        ids = list(message_ids)
        marks = ", ".join("?" * len(ids))
        return self._emails(f"message_id IN ({marks})", ids) if ids else []

    async def count_recent_from(self, sender: str, *, since: datetime) -> int:
        (count,) = self._db.execute(
            "SELECT count(*) FROM email WHERE direction = ? AND sender = ? AND received_on >= ?",
            (int(EmailDirection.INCOMING), _address(sender), since.timestamp()),
        ).fetchone()
        return int(count)

    async def find_correlation_candidates(self, query: CorrelationQuery) -> Sequence[EmailActivity]:
        found: dict[ActivityId, EmailActivity] = {}
        for column, values in (
            ("message_id", list(query.message_ids)),
            ("tracking_token", list(query.tracking_tokens)),
        ):
            if values:
                marks = ", ".join("?" * len(values))
                found.update((a.id, a) for a in self._emails(f"{column} IN ({marks})", values))
        if query.conversation_index_hash is not None:
            matches = self._emails("conversation_index_hash = ?", [query.conversation_index_hash])
            found.update((a.id, a) for a in matches)
        if query.participants:
            addresses = sorted({_address(p) for p in query.participants})
            marks = ", ".join("?" * len(addresses))
            rows = self._db.execute(
                f"""
                SELECT doc FROM email
                WHERE id IN (SELECT email_id FROM email_party WHERE address IN ({marks}))
                  AND (? IS NULL OR last_activity_on >= ?)
                ORDER BY last_activity_on DESC LIMIT ?
                """,
                [*addresses, _ts(query.since), _ts(query.since), query.limit],
            )
            for (doc,) in rows:
                activity: EmailActivity = self._load(doc, EmailActivity)
                found.setdefault(activity.id, activity)
        return list(found.values())

    # -- the outgoing claim cycle -------------------------------------------------------------

    # --8<-- [start:claim]
    async def claim_pending_send(
        self,
        mailbox_id: MailboxId,
        *,
        owner: str,
        now: datetime,
        until: datetime,
        limit: int,
    ) -> Sequence[SendClaim]:
        claims = []
        with self._transaction() as db:
            due = self._emails(
                "status = ? AND sender_mailbox_id = ?"
                " AND (postpone_sending_until IS NULL OR postpone_sending_until <= ?)",
                (int(EmailStatus.PENDING_SEND), mailbox_id, now.timestamp()),
                limit=limit,
            )
            for activity in due:
                claimed = attrs.evolve(activity, status=EmailStatus.SENDING)
                token = ClaimToken(uuid.uuid4().hex)
                self._write_email(db, claimed)
                db.execute(
                    "UPDATE email SET claim_token = ?, claim_owner = ?, claim_expires_at = ?"
                    " WHERE id = ?",
                    (token, owner, until.timestamp(), activity.id),
                )
                claims.append(
                    SendClaim(activity=claimed, token=token, owner=owner, expires_at=until)
                )
        return claims

    # --8<-- [end:claim]

    async def prepare_send(
        self,
        claim: SendClaim,
        *,
        message_id: MessageId,
        subject: str,
        tracking_token: str | None,
    ) -> SendClaim:
        with self._transaction() as db:
            prepared = attrs.evolve(
                self._claimed(claim),
                message_id=message_id,
                subject=subject,
                tracking_token=tracking_token,
            )
            try:
                self._write_email(db, prepared)
            except sqlite3.IntegrityError as exc:
                raise StorageConflictError(
                    f"{message_id} already belongs to another email"
                ) from exc
        return attrs.evolve(claim, activity=prepared)

    async def allocate_tracking_numbers(self, user: RecordRef) -> TrackingNumbers:
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO tracking_user"
                " SELECT ?, coalesce(max(number), 0) + 1 FROM tracking_user",
                (str(user),),
            )
            (number,) = db.execute(
                "SELECT number FROM tracking_user WHERE user = ?", (str(user),)
            ).fetchone()
            (counter,) = db.execute(
                "UPDATE tracking_counter SET value = value + 1 RETURNING value"
            ).fetchone()
        return TrackingNumbers(user_number=number, counter=counter)

    async def list_expired_claims(
        self, mailbox_id: MailboxId, *, now: datetime
    ) -> Sequence[SendClaim]:
        rows = self._db.execute(
            "SELECT doc, claim_token, claim_owner, claim_expires_at FROM email"
            " WHERE sender_mailbox_id = ? AND status = ? AND claim_expires_at < ? ORDER BY seq",
            (mailbox_id, int(EmailStatus.SENDING), now.timestamp()),
        )
        return [
            SendClaim(
                activity=self._load(doc, EmailActivity),
                token=ClaimToken(token),
                owner=owner,
                expires_at=datetime.fromtimestamp(expires, UTC),
            )
            for doc, token, owner, expires in rows
        ]

    async def count_pending_send(self, mailbox_id: MailboxId) -> int:
        (count,) = self._db.execute(
            "SELECT count(*) FROM email WHERE sender_mailbox_id = ? AND status = ?",
            (mailbox_id, int(EmailStatus.PENDING_SEND)),
        ).fetchone()
        return int(count)

    async def record_send_outcome(self, claim: SendClaim, outcome: SendOutcome) -> EmailActivity:
        with self._transaction() as db:
            updated = apply_send_outcome(self._claimed(claim), outcome)
            self._write_email(db, updated)
            db.execute(
                "UPDATE email SET claim_token = NULL, claim_owner = NULL, claim_expires_at = NULL"
                " WHERE id = ?",
                (updated.id,),
            )
        return updated

    # -- folder-level tracking ---------------------------------------------------------------

    async def list_tracking_folders(self, mailbox_id: MailboxId) -> Sequence[MailboxTrackingFolder]:
        rows = self._db.execute(
            "SELECT doc FROM tracking_folder WHERE mailbox_id = ? ORDER BY id", (mailbox_id,)
        )
        return [self._load(doc, MailboxTrackingFolder) for (doc,) in rows]

    async def link_to_tracking_folder(
        self, activity_id: ActivityId, rule: MailboxTrackingFolder
    ) -> None:
        with self._transaction() as db:
            [activity] = self._emails("id = ?", [activity_id])
            regarding = rule.regarding if rule.regarding is not None else activity.regarding
            linked = attrs.evolve(activity, tracking_folder_id=rule.id, regarding=regarding)
            self._write_email(db, linked)

    async def enforce_tracking_folder_regarding(self, rule: MailboxTrackingFolder) -> int:
        if rule.regarding is None:
            return 0
        changed = 0
        with self._transaction() as db:
            for activity in self._emails("tracking_folder_id = ?", [rule.id]):
                if activity.regarding != rule.regarding:
                    self._write_email(db, attrs.evolve(activity, regarding=rule.regarding))
                    changed += 1
        return changed

    # -- quarantine ----------------------------------------------------------------------------

    async def quarantine(self, message: QuarantinedMessage) -> None:
        next_attempt = None if message.given_up else _ts(message.next_attempt_at)
        with self._transaction() as db:
            db.execute(
                "REPLACE INTO quarantine VALUES (?, ?, ?, ?, ?, ?)",
                (
                    message.mailbox_id,
                    message.folder,
                    message.remote_id,
                    _ts(message.first_failed_at),
                    next_attempt,
                    self._dump(message),
                ),
            )

    async def get_quarantined(
        self, mailbox_id: MailboxId, folder: str, remote_id: str
    ) -> QuarantinedMessage | None:
        sql = "SELECT doc FROM quarantine WHERE mailbox_id = ? AND folder = ? AND remote_id = ?"
        return self._one(sql, (mailbox_id, folder, remote_id), QuarantinedMessage)

    async def list_quarantine(
        self, mailbox_id: MailboxId | None = None
    ) -> Sequence[QuarantinedMessage]:
        rows = self._db.execute(
            """
            SELECT doc FROM quarantine WHERE ? IS NULL OR mailbox_id = ?
            ORDER BY mailbox_id, first_failed_at, folder, remote_id
            """,
            (mailbox_id, mailbox_id),
        )
        return [self._load(doc, QuarantinedMessage) for (doc,) in rows]

    async def due_quarantine(
        self, mailbox_id: MailboxId, *, now: datetime, limit: int
    ) -> Sequence[QuarantinedMessage]:
        rows = self._db.execute(
            """
            SELECT doc FROM quarantine WHERE mailbox_id = ? AND next_attempt_at <= ?
            ORDER BY next_attempt_at, folder, remote_id LIMIT ?
            """,
            (mailbox_id, now.timestamp(), limit),
        )
        return [self._load(doc, QuarantinedMessage) for (doc,) in rows]

    async def release_quarantine(self, mailbox_id: MailboxId, folder: str, remote_id: str) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM quarantine WHERE mailbox_id = ? AND folder = ? AND remote_id = ?",
                (mailbox_id, folder, remote_id),
            )
            return cursor.rowcount == 1

    async def count_quarantine(self, mailbox_id: MailboxId) -> QuarantineCount:
        total, waiting, earliest = self._db.execute(
            "SELECT COUNT(*), COUNT(next_attempt_at), MIN(next_attempt_at) FROM quarantine "
            "WHERE mailbox_id = ?",
            (mailbox_id,),
        ).fetchone()
        return QuarantineCount(
            waiting=waiting,
            given_up=total - waiting,
            next_attempt_at=None if earliest is None else datetime.fromtimestamp(earliest, UTC),
        )

    # -- leases --------------------------------------------------------------------------------

    # --8<-- [start:lease]
    async def try_acquire_lease(
        self, key: str, *, owner: str, now: datetime, until: datetime
    ) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                """
                INSERT INTO lease VALUES (?, ?, ?)
                ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, until = excluded.until
                WHERE lease.owner = excluded.owner OR lease.until <= ?
                """,
                (key, owner, until.timestamp(), now.timestamp()),
            )
            return cursor.rowcount == 1

    # --8<-- [end:lease]

    async def release_lease(self, key: str, *, owner: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM lease WHERE key = ? AND owner = ?", (key, owner))

    async def get_lease_holder(self, key: str, *, now: datetime) -> str | None:
        row = self._db.execute(
            "SELECT owner FROM lease WHERE key = ? AND until > ?", (key, now.timestamp())
        ).fetchone()
        return None if row is None else str(row[0])


# -- proving it: the contract checks -----------------------------------------------------------


# --8<-- [start:harness]
@attrs.frozen
class SqliteHarness:
    """What ``check_repositories`` needs: the store under test and a way to seed it."""

    storage: SqliteStorage

    @property
    def repositories(self) -> Repositories:
        """The store under test."""
        return self.storage

    async def seed(
        self,
        *,
        profiles: Sequence[EmailServerProfile] = (),
        mailboxes: Sequence[Mailbox] = (),
        activities: Sequence[EmailActivity] = (),
    ) -> None:
        """Write rows with the host's own code, not through the ports."""
        for profile in profiles:
            self.storage.save_profile(profile)
        for mailbox in mailboxes:
            self.storage.save_mailbox(mailbox)
        for activity in activities:
            self.storage.save_email(activity)


async def prove_the_contract() -> int:
    """Run every repository check, each group on a fresh in-memory database."""
    opened: list[SqliteStorage] = []

    async def fresh_database() -> SqliteHarness:
        storage = SqliteStorage.open(":memory:")
        opened.append(storage)
        return SqliteHarness(storage)

    try:
        await check_repositories(fresh_database)
    finally:
        for storage in opened:
            storage.close()
    return len(opened)


# --8<-- [end:harness]


# -- using it: an engine over the SQLite file, restarted once ----------------------------------

ALICE = "alice@contoso.example"
BOB = "bob@contoso.example"
JANE = "jane@fabrikam.example"


async def sync_twice(path: str) -> None:
    """Two runs over one database file, each as a separate process would do it."""
    clock = FakeClock()
    server = InMemoryMailServer(clock=clock)
    directory = InMemoryDirectory()
    secrets: dict[MailboxId, Credentials] = {}
    mailboxes = []
    for address in (ALICE, BOB):
        user = a_user(address, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
        directory.add(user)
        server.add_account(address, password="s3cret")
        mailbox = a_mailbox(address, owner=user.ref)
        mailboxes.append(mailbox)
        secrets[mailbox.id] = Credentials(username=address, secret=Secret("s3cret"))
    transports = Transports.for_all(
        incoming=InMemoryIncomingTransport(server), outgoing=InMemoryOutgoingTransport(server)
    )

    # One message to Alice with Bob in Cc: it lands in both mailboxes.
    both = an_email(sender=JANE, to=[ALICE], cc=[BOB], subject="Order 1234")
    server.deliver(ALICE, both)
    server.deliver(BOB, both)

    for run in (1, 2):
        storage = SqliteStorage.open(path)  # a fresh connection, as after a restart
        if run == 1:  # the CRM's own code created the profile and the mailboxes
            storage.save_profile(a_profile())
            for mailbox in mailboxes:
                storage.save_mailbox(mailbox)
        else:
            server.deliver(ALICE, an_email(sender=JANE, to=[ALICE], subject="RE: Order 1234"))
            clock.advance(6 * 60)  # past the five-minute polling interval
        async with SyncEngine(
            repositories=storage,
            directory=directory,
            transports=transports,
            credentials=MappingCredentials(by_mailbox=secrets),
            clock=clock,
        ) as engine:
            report = await engine.run_once()
        for item in sorted(report.items(), key=lambda i: i.mailbox_id):
            reason = item.reason.name if item.reason is not None else "-"
            address = item.mailbox_id.removeprefix("mailbox:")
            print(f"run {run}: {address}: {item.subject!r} {item.kind.value} ({reason})")
        print(f"run {run}: email activities in the database: {storage.count_emails()}")
        storage.close()


async def main() -> None:
    databases = await prove_the_contract()
    print(f"check_repositories passed ({databases} fresh databases)")
    with tempfile.TemporaryDirectory() as folder:
        await sync_twice(str(Path(folder) / "crm.sqlite3"))


if __name__ == "__main__":
    asyncio.run(main())
