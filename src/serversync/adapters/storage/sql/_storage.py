"""Every repository port over SQLAlchemy Core: SQLite (embedded) and PostgreSQL (scale-out).

The database keeps the promises exactly-once rests on: the unique (Message-ID, direction)
constraint decides concurrent inserts, and claims take their rows with ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL (SQLite serialises writers with ``BEGIN IMMEDIATE``; reads are deferred).
Every method is one transaction, so a crash leaves either all of its writes or none; see
``_transactions`` for how they run.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Self, TypeVar, final

import attrs
from sqlalchemy import (
    Column,
    ColumnElement,
    bindparam,
    delete,
    exists,
    false,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from serversync.adapters._ports_docs import documented_by
from serversync.adapters.storage._send_outcomes import apply_send_outcome
from serversync.errors import (
    ConfigurationError,
    ErrorScope,
    LeaseLostError,
    MalformedMessageError,
    StorageConflictError,
    SyncError,
)
from serversync.model import (
    ActivityId,
    AddResult,
    AlreadyExists,
    Checkpoint,
    ClaimToken,
    CorrelationQuery,
    Created,
    EmailActivity,
    EmailApprovalStatus,
    EmailDirection,
    EmailServerProfile,
    EmailStatus,
    ErrorRecord,
    IncomingRunStart,
    Mailbox,
    MailboxId,
    MailboxTrackingFolder,
    MessageId,
    NewIncomingEmail,
    ProfileId,
    QuarantineCount,
    QuarantinedMessage,
    QueueItem,
    QueueItemId,
    RecordRef,
    SendClaim,
    SendOutcome,
    TestStatus,
    TrackingNumbers,
    Workload,
    WorkloadState,
)
from serversync.model.messages import normalize_address
from serversync.ports import (
    BatchIncomingRepository,
    CorrelationKeyLookup,
    IncomingRunRepository,
    Repositories,
    WorkloadRunEndRepository,
    WorkloadRunRepository,
)

from . import _database
from ._act import SqlExchangeMappings
from ._codec import (
    activity_columns,
    dump,
    from_micros,
    load,
    load_any,
    micros,
    party_addresses,
    storable,
)
from ._rows import next_value, upsert
from ._schema import (
    activities,
    activity_addresses,
    checkpoints,
    leases,
    mailboxes,
    profiles,
    quarantine,
    queue_items,
    tracking_folders,
    tracking_users,
    workload_states,
)
from ._transactions import Transactions

__all__ = ["SqlStorage"]

_T = TypeVar("_T")
_TRACKING_COUNTER = "tracking_token"
_USER_NUMBER_COUNTER = "tracking_user"
# Serialises mailbox provisioning on PostgreSQL (one mailbox per user or queue).
_PROVISIONING_LOCK = 0x5E5E_5C02
ORDER_COUNTER = "order"


# The statements of every poll, built once: building one costs more than running it on
# SQLite. (Parameters an UPDATE or INSERT sets cannot take a column's name.)
_PROFILE = select(profiles.c.data).where(profiles.c.id == bindparam("id"))
# The columns come with the parameters: a statement built with .values(...) for each email
# was almost half of the time of storing it on SQLite.
_INSERT_ACTIVITY = insert(activities).returning(activities.c.seq)
_MAILBOX = select(mailboxes.c.data).where(mailboxes.c.id == bindparam("id"))
_WORKLOAD_STATE = select(workload_states.c.data).where(
    workload_states.c.mailbox_id == bindparam("mailbox_id"),
    workload_states.c.workload == bindparam("workload"),
)
_CHECKPOINT = select(checkpoints.c.data).where(
    checkpoints.c.mailbox_id == bindparam("mailbox_id"),
    checkpoints.c.folder == bindparam("folder"),
)
_TAKE_LEASE = (
    update(leases)
    .where(
        leases.c.key == bindparam("l_key"),
        or_(leases.c.owner == bindparam("l_owner"), leases.c.until <= bindparam("l_now")),
    )
    .values(owner=bindparam("l_owner"), until=bindparam("l_until"))
)
_LEASE_HELD = select(exists().where(leases.c.key == bindparam("l_key")))
_NEW_LEASE = insert(leases).values(
    key=bindparam("l_key"), owner=bindparam("l_owner"), until=bindparam("l_until")
)
_RELEASE_LEASE = delete(leases).where(
    leases.c.key == bindparam("l_key"), leases.c.owner == bindparam("l_owner")
)
_MAILBOX_CHECKPOINTS = select(checkpoints.c.folder, checkpoints.c.data).where(
    checkpoints.c.mailbox_id == bindparam("mailbox_id")
)
_TRACKING_FOLDERS = (
    select(tracking_folders.c.data)
    .where(tracking_folders.c.mailbox_id == bindparam("mailbox_id"))
    .order_by(tracking_folders.c.seq)
)
_DUE_QUARANTINE = (
    select(quarantine.c.data)
    .where(
        quarantine.c.mailbox_id == bindparam("mailbox_id"),
        quarantine.c.next_attempt_at <= bindparam("now"),
    )
    .order_by(quarantine.c.next_attempt_at, quarantine.c.folder, quarantine.c.remote_id)
    .limit(bindparam("limit"))
)
# The mailbox's Pending Send emails due at ``now``, oldest first.
_DUE_TO_SEND = (
    select(activities.c.seq, activities.c.data)
    .where(
        activities.c.sender_mailbox_id == bindparam("mailbox_id"),
        activities.c.status == int(EmailStatus.PENDING_SEND),
        or_(
            activities.c.postpone_sending_until.is_(None),
            activities.c.postpone_sending_until <= bindparam("now"),
        ),
    )
    .order_by(activities.c.seq)
    .limit(bindparam("limit"))
    # Rows another engine is claiming right now are skipped, not waited for.
    .with_for_update(skip_locked=True)
)
# The mailbox's emails in Sending whose claim expired before ``now``.
_EXPIRED_CLAIMS = (
    select(
        activities.c.data,
        activities.c.claim_token,
        activities.c.claim_owner,
        activities.c.claim_expires_at,
    )
    .where(
        activities.c.sender_mailbox_id == bindparam("mailbox_id"),
        activities.c.status == int(EmailStatus.SENDING),
        activities.c.claim_token.is_not(None),
        activities.c.claim_expires_at < bindparam("now"),
    )
    .order_by(activities.c.seq)
)


@final
@documented_by(
    Repositories,
    WorkloadRunRepository,
    WorkloadRunEndRepository,
    IncomingRunRepository,
    BatchIncomingRepository,
    CorrelationKeyLookup,
)
class SqlStorage(SqlExchangeMappings):
    """The repository ports on SQLite or PostgreSQL, plus the host-side setup the CLI uses.

    It is the :class:`~serversync.ports.ExchangeSyncIdMappingRepository` of ACT sync too.

    Open it with :meth:`open` (which checks, or with ``upgrade=True`` brings up to date, the
    schema) and close it with :meth:`aclose`, or use it as an async context manager.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._db = Transactions(engine)

    @classmethod
    async def open(cls, url: str, *, upgrade: bool = False, **engine_options: Any) -> Self:
        """Connect to ``url`` (``sqlite:///path.db`` or ``postgresql://user@host/db``).

        With ``upgrade`` the schema is created or migrated first; without it a database
        whose schema is missing or older raises :class:`~serversync.errors.ConfigurationError`
        naming the command that upgrades it.
        """
        engine = _database.connect(url, **engine_options)
        try:
            if upgrade:
                await _database.upgrade(engine)
            else:
                found = await _database.current_revision(engine)
                wanted = _database.head_revision()
                if found != wanted:
                    raise ConfigurationError(
                        f"the database schema is at revision {found or 'none'}, this serversync "
                        f"needs {wanted}: run `serversync db upgrade`"
                    )
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine)

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy engine (hosts may share it)."""
        return self._engine

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._db.aclose()
        await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def transactions(self) -> Transactions:
        """How the repositories (and the directory sharing this store) run transactions."""
        return self._db

    # -- host-side setup ------------------------------------------------------------------------

    async def add_profile(self, profile: EmailServerProfile) -> None:
        """Store or replace a profile."""
        await self._db.write(
            lambda c: upsert(c, profiles, {"id": profile.id}, {"data": dump(profile)}), retry=True
        )

    async def list_profiles(self) -> Sequence[EmailServerProfile]:
        """Every profile, by id."""
        return await self._all(select(profiles.c.data).order_by(profiles.c.id), EmailServerProfile)

    async def add_mailbox(self, mailbox: Mailbox) -> None:
        """Store or replace a mailbox."""
        values = {"profile_id": mailbox.profile_id, "data": dump(mailbox)}
        await self._db.write(lambda c: upsert(c, mailboxes, {"id": mailbox.id}, values), retry=True)

    async def add_tracking_folder(self, rule: MailboxTrackingFolder) -> None:
        """Store or replace a folder-level tracking rule."""

        async def write(c: AsyncConnection) -> None:
            values = {
                "mailbox_id": rule.mailbox_id,
                "seq": await next_value(c, ORDER_COUNTER),
                "data": dump(rule),
            }
            await upsert(c, tracking_folders, {"id": rule.id}, values)

        await self._db.write(write, retry=True)

    async def put_activity(self, activity: EmailActivity) -> None:
        """Store or replace an email as the host would (a draft to send, a past email).

        Raises :class:`ValueError` when another email holds its (Message-ID, direction).
        """

        async def write(c: AsyncConnection) -> None:
            row = (
                await c.execute(
                    select(activities.c.seq, activities.c.data).where(
                        activities.c.id == activity.id
                    )
                )
            ).first()
            if row is None:
                await _insert_activity(c, activity)
            else:
                await _rewrite_activity(c, row.seq, load(row.data, EmailActivity), activity)

        try:
            await self._db.write(write, retry=True)
        except IntegrityError as exc:
            raise ValueError(f"{activity.dedupe_key} already belongs to another email") from exc

    async def activities(self) -> list[EmailActivity]:
        """Every stored email, in insertion order."""
        return await self._all(select(activities.c.data).order_by(activities.c.seq), EmailActivity)

    async def queue_items(self) -> list[QueueItem]:
        """Every queue item, in insertion order."""
        return await self._all(select(queue_items.c.data).order_by(queue_items.c.seq), QueueItem)

    # -- profiles and mailboxes -----------------------------------------------------------------

    async def get_profile(self, profile_id: ProfileId) -> EmailServerProfile | None:
        return await self._one(_PROFILE, EmailServerProfile, {"id": profile_id})

    async def list_mailboxes(self) -> Sequence[Mailbox]:
        return await self._all(select(mailboxes.c.data).order_by(mailboxes.c.id), Mailbox)

    async def get_mailbox(self, mailbox_id: MailboxId) -> Mailbox | None:
        return await self._one(_MAILBOX, Mailbox, {"id": mailbox_id})

    async def disable_workload(
        self, mailbox_id: MailboxId, workload: Workload, *, error: ErrorRecord, at: datetime
    ) -> bool:
        async def write(c: AsyncConnection) -> bool:
            mailbox = await _locked_mailbox(c, mailbox_id)
            if mailbox is None or not mailbox.enabled_for(workload):
                return False
            await _save_mailbox(c, mailbox.with_workload_disabled(workload))
            return True

        return await self._db.write(write)

    async def record_mailbox_test(
        self, mailbox_id: MailboxId, results: Mapping[Workload, TestStatus], *, at: datetime
    ) -> None:
        async def write(c: AsyncConnection) -> None:
            mailbox = await _locked_mailbox(c, mailbox_id)
            if mailbox is not None:
                await _save_mailbox(c, mailbox.with_test_results(results, at=at))

        await self._db.write(write)

    async def create_mailbox(self, mailbox: Mailbox) -> Mailbox | None:
        async def write(c: AsyncConnection) -> Mailbox | None:
            # One provisioning at a time (SQLite's BEGIN IMMEDIATE already serialises writers):
            # the owner is inside the JSON, so no unique constraint can guard it.
            if c.dialect.name == "postgresql":
                await c.execute(select(func.pg_advisory_xact_lock(_PROVISIONING_LOCK)))
            rows = await c.execute(select(mailboxes.c.data))
            for row in rows:
                other = load(row.data, Mailbox)
                if other.id == mailbox.id or (
                    mailbox.owner is not None and other.owner == mailbox.owner
                ):
                    return other
            await c.execute(
                insert(mailboxes).values(
                    id=mailbox.id, profile_id=mailbox.profile_id, data=dump(mailbox)
                )
            )
            return None

        return await self._db.write(write)

    async def change_mailbox_address(self, mailbox_id: MailboxId, address: str) -> Mailbox | None:
        async def write(c: AsyncConnection) -> Mailbox | None:
            mailbox = await _locked_mailbox(c, mailbox_id)
            if mailbox is None:
                return None
            changed = mailbox.with_email_address(address)
            await _save_mailbox(c, changed)
            return changed

        return await self._db.write(write)

    async def set_mailbox_approval(
        self, mailbox_id: MailboxId, approval: EmailApprovalStatus
    ) -> Mailbox | None:
        async def write(c: AsyncConnection) -> Mailbox | None:
            mailbox = await _locked_mailbox(c, mailbox_id)
            if mailbox is None:
                return None
            changed = attrs.evolve(mailbox, approval=approval)
            await _save_mailbox(c, changed)
            return changed

        return await self._db.write(write)

    async def _one(
        self, query: Any, kind: type[_T], parameters: dict[str, Any] | None = None
    ) -> _T | None:
        text = await self._db.read(lambda c: _scalar_one_or_none(c, query, parameters))
        return None if text is None else load(text, kind)

    async def _all(
        self, query: Any, kind: type[_T], parameters: dict[str, Any] | None = None
    ) -> list[_T]:
        """The first column of every row of ``query``, loaded as ``kind``."""
        texts = await self._db.read(lambda c: _scalars(c, query, parameters))
        return [load(text, kind) for text in texts]

    # -- workload state and checkpoints ---------------------------------------------------------

    async def get_workload_state(
        self, mailbox_id: MailboxId, workload: Workload
    ) -> WorkloadState | None:
        return await self._one(
            _WORKLOAD_STATE, WorkloadState, {"mailbox_id": mailbox_id, "workload": workload.value}
        )

    async def save_workload_state(
        self, mailbox_id: MailboxId, workload: Workload, state: WorkloadState
    ) -> None:
        await self._db.write(lambda c: _save_state(c, mailbox_id, workload, state), retry=True)

    async def clear_checkpoints(self, mailbox_id: MailboxId) -> None:
        await self._db.write(
            lambda c: c.execute(delete(checkpoints).where(checkpoints.c.mailbox_id == mailbox_id))
        )

    async def load_checkpoint(self, mailbox_id: MailboxId, folder: str) -> Checkpoint | None:
        parameters = {"mailbox_id": mailbox_id, "folder": folder}
        text = await self._db.read(lambda c: _scalar_one_or_none(c, _CHECKPOINT, parameters))
        return None if text is None else load_any(text, Checkpoint)

    async def save_checkpoint(
        self, mailbox_id: MailboxId, folder: str, checkpoint: Checkpoint
    ) -> None:
        key = {"mailbox_id": mailbox_id, "folder": folder}
        data = dump(checkpoint, Checkpoint)
        await self._db.write(lambda c: upsert(c, checkpoints, key, {"data": data}), retry=True)

    # -- activities -----------------------------------------------------------------------------

    async def add_incoming(
        self, activity: EmailActivity, *, queues: Collection[RecordRef] = ()
    ) -> AddResult:
        _check_fits(activity)

        async def write(c: AsyncConnection) -> None:
            await _insert_activity(c, activity)
            for queue in queues:
                await _insert_queue_item(c, queue, activity.id, activity.received_on)

        try:
            await self._db.write(write)
            return Created(activity_id=activity.id)
        except IntegrityError:
            # The database's unique constraint decided: another insert holds the key.
            pass
        except DataError as exc:
            # Any other value the database refuses for this email alone.
            raise MalformedMessageError(
                f"email {activity.id} holds a value the database refuses: {exc.orig}",
                reason="value refused by the database",
            ) from exc
        holder = await self._db.read(lambda c: _holder(c, activity))
        if holder is None:
            raise StorageConflictError(f"email {activity.id} could not be stored")
        return AlreadyExists(activity_id=holder)

    async def add_incoming_batch(
        self, emails: Sequence[NewIncomingEmail]
    ) -> Sequence[AddResult | SyncError]:
        results: list[AddResult | SyncError | None] = [None] * len(emails)
        fitting: list[tuple[int, NewIncomingEmail]] = []
        for n, email in enumerate(emails):
            try:
                _check_fits(email.activity)
            except MalformedMessageError as exc:
                results[n] = exc
                continue
            fitting.append((n, email))
        keys = [e.activity.dedupe_key for _, e in fitting if e.activity.dedupe_key is not None]
        ids = [e.activity.id for _, e in fitting]
        if len(set(keys)) == len(keys) and len(set(ids)) == len(ids):
            # No two of them share a key (the engine's batches never do).

            async def write(c: AsyncConnection) -> None:
                for _, email in fitting:
                    activity = email.activity
                    await _insert_activity(c, activity)
                    for queue in email.queues:
                        await _insert_queue_item(c, queue, activity.id, activity.received_on)

            try:
                # One transaction for them all: the common case, no email stored before.
                await self._db.write(write)
            except (IntegrityError, DataError):
                pass  # one of them holds a stored key or a refused value: one at a time
            else:
                for n, email in fitting:
                    results[n] = Created(activity_id=email.activity.id)
                return [r for r in results if r is not None]
        for n, email in fitting:
            try:
                results[n] = await self.add_incoming(email.activity, queues=email.queues)
            except SyncError as exc:
                if exc.scope is not ErrorScope.ITEM:
                    raise
                results[n] = exc
        return [r for r in results if r is not None]

    async def ensure_queue_item(self, queue: RecordRef, activity_id: ActivityId) -> bool:
        async def write(c: AsyncConnection) -> bool:
            present = await c.scalar(
                select(
                    exists().where(
                        queue_items.c.queue == str(queue),
                        queue_items.c.activity_id == activity_id,
                    )
                )
            )
            if present:
                return False
            await _insert_queue_item(c, queue, activity_id, None)
            return True

        return await self._db.write(write, retry=True)

    async def get_activity(self, activity_id: ActivityId) -> EmailActivity | None:
        return await self._one(
            select(activities.c.data).where(activities.c.id == activity_id), EmailActivity
        )

    async def find_by_message_ids(
        self, message_ids: Collection[MessageId]
    ) -> Sequence[EmailActivity]:
        wanted = storable(message_ids)
        if not wanted:
            return []
        return await self._activities_where(activities.c.message_id.in_(wanted))

    async def _activities_where(self, condition: ColumnElement[bool]) -> list[EmailActivity]:
        return await self._all(
            select(activities.c.data).where(condition).order_by(activities.c.seq), EmailActivity
        )

    async def count_recent_from(self, sender: str, *, since: datetime) -> int:
        if not storable([sender]):
            return 0
        query = select(func.count()).where(
            activities.c.sender == normalize_address(sender),
            activities.c.direction == int(EmailDirection.INCOMING),
            activities.c.received_on >= micros(since),
        )
        count = await self._db.read(lambda c: c.scalar(query))
        return int(count or 0)

    async def find_by_correlation_keys(
        self,
        *,
        conversation_index_hashes: Collection[int] = (),
        tracking_tokens: Collection[str] = (),
    ) -> Sequence[EmailActivity]:
        conditions: list[ColumnElement[bool]] = []
        hashes, tokens = sorted(set(conversation_index_hashes)), storable(tracking_tokens)
        if hashes:
            conditions.append(activities.c.conversation_index_hash.in_(hashes))
        if tokens:
            conditions.append(activities.c.tracking_token.in_(tokens))
        return await self._activities_where(or_(*conditions)) if conditions else []

    async def find_correlation_candidates(self, query: CorrelationQuery) -> Sequence[EmailActivity]:
        conditions: list[ColumnElement[bool]] = []
        message_ids, tokens = storable(query.message_ids), storable(query.tracking_tokens)
        if message_ids:
            conditions.append(activities.c.message_id.in_(message_ids))
        if tokens:
            conditions.append(activities.c.tracking_token.in_(tokens))
        if query.conversation_index_hash is not None:
            conditions.append(activities.c.conversation_index_hash == query.conversation_index_hash)
        matched = await self._activities_where(or_(false(), *conditions)) if conditions else []
        participants = storable(query.participants)
        if participants:
            wanted = sorted({normalize_address(p) for p in participants})
            among = select(activity_addresses.c.activity_seq).where(
                activity_addresses.c.address.in_(wanted)
            )
            recent = (
                select(activities.c.data)
                .where(activities.c.seq.in_(among))
                .order_by(activities.c.last_activity_on.desc().nulls_last(), activities.c.seq)
                .limit(query.limit)
            )
            if query.since is not None:
                recent = recent.where(activities.c.last_activity_on >= micros(query.since))
            found = await self._all(recent, EmailActivity)
            known = {a.id for a in matched}
            matched += [a for a in found if a.id not in known]
        return matched

    # -- the outgoing claim cycle ---------------------------------------------------------------

    async def claim_pending_send(
        self,
        mailbox_id: MailboxId,
        *,
        owner: str,
        now: datetime,
        until: datetime,
        limit: int,
    ) -> Sequence[SendClaim]:
        due = {"mailbox_id": mailbox_id, "now": micros(now), "limit": limit}
        return await self._db.write(lambda c: _claim(c, due, owner=owner, until=until))

    async def prepare_send(
        self,
        claim: SendClaim,
        *,
        message_id: MessageId,
        subject: str,
        tracking_token: str | None,
    ) -> SendClaim:
        async def write(c: AsyncConnection) -> EmailActivity:
            seq, current = await _claimed(c, claim)
            prepared = attrs.evolve(
                current, message_id=message_id, subject=subject, tracking_token=tracking_token
            )
            await _rewrite_activity(c, seq, current, prepared)
            return prepared

        try:
            prepared = await self._db.write(write)
        except IntegrityError as exc:
            raise StorageConflictError(
                f"{message_id} already belongs to another email than {claim.activity.id}"
            ) from exc
        return attrs.evolve(claim, activity=prepared)

    async def allocate_tracking_numbers(self, user: RecordRef) -> TrackingNumbers:
        async def allocate(c: AsyncConnection) -> TrackingNumbers:
            number = await c.scalar(
                select(tracking_users.c.number).where(tracking_users.c.user_ref == str(user))
            )
            if number is None:
                number = await next_value(c, _USER_NUMBER_COUNTER)
                await c.execute(insert(tracking_users).values(user_ref=str(user), number=number))
            counter = await next_value(c, _TRACKING_COUNTER)
            return TrackingNumbers(user_number=int(number), counter=counter)

        return await self._db.write(allocate, retry=True)

    async def list_expired_claims(
        self, mailbox_id: MailboxId, *, now: datetime
    ) -> Sequence[SendClaim]:
        parameters = {"mailbox_id": mailbox_id, "now": micros(now)}
        rows = await self._db.read(lambda c: _rows(c, _EXPIRED_CLAIMS, parameters))
        return [_claim_of(row) for row in rows]

    async def count_pending_send(self, mailbox_id: MailboxId) -> int:
        query = select(func.count()).where(
            activities.c.sender_mailbox_id == mailbox_id,
            activities.c.status == int(EmailStatus.PENDING_SEND),
        )
        count = await self._db.read(lambda c: c.scalar(query))
        return int(count or 0)

    async def record_send_outcome(self, claim: SendClaim, outcome: SendOutcome) -> EmailActivity:
        async def write(c: AsyncConnection) -> EmailActivity:
            seq, current = await _claimed(c, claim)
            updated = apply_send_outcome(current, outcome)
            await _rewrite_activity(c, seq, current, updated, release_claim=True)
            return updated

        return await self._db.write(write)

    # -- tracking folders -----------------------------------------------------------------------

    async def list_tracking_folders(self, mailbox_id: MailboxId) -> Sequence[MailboxTrackingFolder]:
        return await self._all(_TRACKING_FOLDERS, MailboxTrackingFolder, {"mailbox_id": mailbox_id})

    async def link_to_tracking_folder(
        self, activity_id: ActivityId, rule: MailboxTrackingFolder
    ) -> None:
        async def write(c: AsyncConnection) -> None:
            row = (
                await c.execute(
                    select(activities.c.seq, activities.c.data)
                    .where(activities.c.id == activity_id)
                    .with_for_update()
                )
            ).first()
            if row is None:
                raise StorageConflictError(f"no email {activity_id} to link to {rule.id}")
            current = load(row.data, EmailActivity)
            linked = attrs.evolve(
                current,
                tracking_folder_id=rule.id,
                regarding=rule.regarding if rule.regarding is not None else current.regarding,
            )
            await _rewrite_activity(c, row.seq, current, linked)

        await self._db.write(write)

    async def enforce_tracking_folder_regarding(self, rule: MailboxTrackingFolder) -> int:
        if rule.regarding is None:
            return 0

        async def write(c: AsyncConnection) -> int:
            changed = 0
            rows = await c.execute(
                select(activities.c.seq, activities.c.data)
                .where(activities.c.tracking_folder_id == rule.id)
                .with_for_update()
            )
            for row in rows.all():
                current = load(row.data, EmailActivity)
                if current.regarding != rule.regarding:
                    relinked = attrs.evolve(current, regarding=rule.regarding)
                    await _rewrite_activity(c, row.seq, current, relinked)
                    changed += 1
            return changed

        return await self._db.write(write)

    # -- leases ---------------------------------------------------------------------------------

    async def try_acquire_lease(
        self, key: str, *, owner: str, now: datetime, until: datetime
    ) -> bool:
        parameters = {
            "l_key": key,
            "l_owner": owner,
            "l_now": micros(now),
            "l_until": micros(until),
        }

        async def write(c: AsyncConnection) -> bool:
            # Take it over when ours or expired; a conditional update is atomic in both
            # dialects, so two engines can never both see "expired" and both win.
            taken = await c.execute(_TAKE_LEASE, parameters)
            if taken.rowcount == 1:
                return True
            if await c.scalar(_LEASE_HELD, parameters):
                return False
            await c.execute(_NEW_LEASE, parameters)
            return True

        try:
            return await self._db.write(write)
        except IntegrityError:
            return False  # another engine created the lease first

    async def release_lease(self, key: str, *, owner: str) -> None:
        parameters = {"l_key": key, "l_owner": owner}
        await self._db.write(lambda c: c.execute(_RELEASE_LEASE, parameters))

    # -- a workload run's bookkeeping in fewer calls (WorkloadRunRepository) ------------------

    async def list_workload_states(self) -> Mapping[tuple[MailboxId, Workload], WorkloadState]:
        query = select(
            workload_states.c.mailbox_id, workload_states.c.workload, workload_states.c.data
        )
        rows = await self._db.read(lambda c: _rows(c, query))
        return {
            (MailboxId(mailbox_id), Workload(workload)): load(data, WorkloadState)
            for mailbox_id, workload, data in rows
        }

    async def acquire_workload_lease(
        self,
        mailbox_id: MailboxId,
        workload: Workload,
        *,
        key: str,
        owner: str,
        now: datetime,
        until: datetime,
    ) -> tuple[bool, WorkloadState | None]:
        parameters = {
            "l_key": key,
            "l_owner": owner,
            "l_now": micros(now),
            "l_until": micros(until),
            "mailbox_id": mailbox_id,
            "workload": workload.value,
        }

        async def write(c: AsyncConnection) -> tuple[bool, str | None]:
            # As try_acquire_lease, then the state read under the lease just taken.
            taken = await c.execute(_TAKE_LEASE, parameters)
            if taken.rowcount != 1:
                if await c.scalar(_LEASE_HELD, parameters):
                    return False, None
                await c.execute(_NEW_LEASE, parameters)
            return True, await c.scalar(_WORKLOAD_STATE, parameters)

        try:
            acquired, text = await self._db.write(write)
        except IntegrityError:
            return False, None  # another engine created the lease first
        return acquired, None if text is None else load(text, WorkloadState)

    async def release_leases(self, leases: Sequence[tuple[str, str]]) -> None:
        if leases:
            await self._db.write(lambda c: _release_leases(c, leases))

    async def load_incoming_run(
        self, mailbox_id: MailboxId, *, now: datetime, quarantine_limit: int
    ) -> IncomingRunStart:
        parameters = {"mailbox_id": mailbox_id, "now": micros(now), "limit": quarantine_limit}

        async def read(c: AsyncConnection) -> tuple[list[Any], list[Any], list[Any]]:
            return (
                await _scalars(c, _TRACKING_FOLDERS, parameters),
                await _scalars(c, _DUE_QUARANTINE, parameters),
                await _rows(c, _MAILBOX_CHECKPOINTS, parameters),
            )

        rules, due, cursors = await self._db.read(read)
        return IncomingRunStart(
            tracking_folders=tuple(load(text, MailboxTrackingFolder) for text in rules),
            due_quarantine=tuple(load(text, QuarantinedMessage) for text in due),
            checkpoints={row.folder: load_any(row.data, Checkpoint) for row in cursors},
        )

    async def finish_workload_run(
        self,
        mailbox_id: MailboxId,
        workload: Workload,
        state: WorkloadState,
        leases: Sequence[tuple[str, str]],
    ) -> None:
        async def write(c: AsyncConnection) -> None:
            await _save_state(c, mailbox_id, workload, state)
            await _release_leases(c, leases)

        await self._db.write(write, retry=True)

    async def claim_pending_send_unless_expired(
        self,
        mailbox_id: MailboxId,
        *,
        owner: str,
        now: datetime,
        until: datetime,
        limit: int,
    ) -> tuple[Sequence[SendClaim], Sequence[SendClaim]]:
        due = {"mailbox_id": mailbox_id, "now": micros(now), "limit": limit}

        async def write(c: AsyncConnection) -> tuple[list[SendClaim], list[SendClaim]]:
            expired = [_claim_of(row) for row in await _rows(c, _EXPIRED_CLAIMS, due)]
            if expired:
                return expired, []
            return [], await _claim(c, due, owner=owner, until=until)

        return await self._db.write(write)

    async def get_lease_holder(self, key: str, *, now: datetime) -> str | None:
        query = select(leases.c.owner).where(leases.c.key == key, leases.c.until > micros(now))
        owner = await self._db.read(lambda c: c.scalar(query))
        return None if owner is None else str(owner)

    # -- quarantine -----------------------------------------------------------------------------

    async def quarantine(self, message: QuarantinedMessage) -> None:
        key = {
            "mailbox_id": message.mailbox_id,
            "folder": message.folder,
            "remote_id": message.remote_id,
        }
        values = {
            "first_failed_at": micros(message.first_failed_at),
            "next_attempt_at": None if message.given_up else micros(message.next_attempt_at),
            "data": dump(message),
        }
        await self._db.write(lambda c: upsert(c, quarantine, key, values), retry=True)

    async def get_quarantined(
        self, mailbox_id: MailboxId, folder: str, remote_id: str
    ) -> QuarantinedMessage | None:
        return await self._one(
            select(quarantine.c.data).where(
                quarantine.c.mailbox_id == mailbox_id,
                quarantine.c.folder == folder,
                quarantine.c.remote_id == remote_id,
            ),
            QuarantinedMessage,
        )

    async def list_quarantine(
        self, mailbox_id: MailboxId | None = None
    ) -> Sequence[QuarantinedMessage]:
        query = select(quarantine.c.data).order_by(
            quarantine.c.mailbox_id,
            quarantine.c.first_failed_at,
            quarantine.c.folder,
            quarantine.c.remote_id,
        )
        if mailbox_id is not None:
            query = query.where(quarantine.c.mailbox_id == mailbox_id)
        return await self._all(query, QuarantinedMessage)

    async def due_quarantine(
        self, mailbox_id: MailboxId, *, now: datetime, limit: int
    ) -> Sequence[QuarantinedMessage]:
        parameters = {"mailbox_id": mailbox_id, "now": micros(now), "limit": limit}
        return await self._all(_DUE_QUARANTINE, QuarantinedMessage, parameters)

    async def release_quarantine(self, mailbox_id: MailboxId, folder: str, remote_id: str) -> bool:
        statement = delete(quarantine).where(
            quarantine.c.mailbox_id == mailbox_id,
            quarantine.c.folder == folder,
            quarantine.c.remote_id == remote_id,
        )
        return await self._db.write(lambda c: _changed(c, statement))

    async def count_quarantine(self, mailbox_id: MailboxId) -> QuarantineCount:
        query = select(
            func.count(),
            func.count(quarantine.c.next_attempt_at),
            func.min(quarantine.c.next_attempt_at),
        ).where(quarantine.c.mailbox_id == mailbox_id)
        [(total, waiting, earliest)] = await self._db.read(lambda c: _rows(c, query))
        return QuarantineCount(
            waiting=waiting,
            given_up=total - waiting,
            next_attempt_at=None if earliest is None else from_micros(earliest),
        )


# -- row helpers ----------------------------------------------------------------------------


async def _scalar_one_or_none(
    c: AsyncConnection, query: Any, parameters: dict[str, Any] | None = None
) -> Any:
    return (await c.execute(query, parameters)).scalar_one_or_none()


async def _save_state(
    c: AsyncConnection, mailbox_id: MailboxId, workload: Workload, state: WorkloadState
) -> None:
    key = {"mailbox_id": mailbox_id, "workload": workload.value}
    values = {"next_run_at": micros(state.next_run_at), "data": dump(state)}
    await upsert(c, workload_states, key, values)


async def _release_leases(c: AsyncConnection, leases: Sequence[tuple[str, str]]) -> None:
    """``release_lease`` of every (key, owner) in ``leases``."""
    if leases:
        await c.execute(_RELEASE_LEASE, [{"l_key": key, "l_owner": owner} for key, owner in leases])


async def _scalars(
    c: AsyncConnection, query: Any, parameters: dict[str, Any] | None = None
) -> list[Any]:
    return list((await c.execute(query, parameters)).scalars())


async def _claim(
    c: AsyncConnection, due: dict[str, Any], *, owner: str, until: datetime
) -> list[SendClaim]:
    """Claim for ``owner`` until ``until`` the emails ``_DUE_TO_SEND`` selects with the
    parameters ``due``."""
    claims: list[SendClaim] = []
    for row in (await c.execute(_DUE_TO_SEND, due)).all():
        claimed = attrs.evolve(load(row.data, EmailActivity), status=EmailStatus.SENDING)
        token = ClaimToken(uuid.uuid4().hex)
        await c.execute(
            update(activities)
            .where(activities.c.seq == row.seq)
            .values(
                status=int(EmailStatus.SENDING),
                data=dump(claimed),
                claim_token=token,
                claim_owner=owner,
                claim_expires_at=micros(until),
            )
        )
        claims.append(SendClaim(activity=claimed, token=token, owner=owner, expires_at=until))
    return claims


async def _rows(
    c: AsyncConnection, query: Any, parameters: dict[str, Any] | None = None
) -> list[Any]:
    return list((await c.execute(query, parameters)).all())


async def _changed(c: AsyncConnection, statement: Any) -> bool:
    return bool((await c.execute(statement)).rowcount > 0)


def _check_fits(activity: EmailActivity) -> None:
    """Refuse an email with a column value longer than its column or holding a NUL character,
    in both dialects alike (SQLite would store it, PostgreSQL refuse it): hostile mail carries
    such values, and it must fail as that message alone (scope ``item``), not as the mailbox.
    """
    values: list[tuple[Column[Any], object]] = [
        (activities.c[name], value) for name, value in activity_columns(activity).items()
    ]
    values += [(activity_addresses.c.address, a) for a in party_addresses(activity)]
    for column, value in values:
        if not isinstance(value, str):
            continue
        if "\x00" in value:
            raise MalformedMessageError(
                f"email {activity.id}: its {column.name} holds a NUL character",
                reason=f"NUL character in {column.name}",
            )
        length = getattr(column.type, "length", None)
        if length is not None and len(value) > length:
            raise MalformedMessageError(
                f"email {activity.id}: its {column.name} has {len(value)} characters, more than "
                f"the {length} the store holds",
                reason=f"{column.name} too long",
            )


async def _locked_mailbox(c: AsyncConnection, mailbox_id: MailboxId) -> Mailbox | None:
    text = await c.scalar(
        select(mailboxes.c.data).where(mailboxes.c.id == mailbox_id).with_for_update()
    )
    return None if text is None else load(text, Mailbox)


async def _save_mailbox(c: AsyncConnection, mailbox: Mailbox) -> None:
    await c.execute(
        update(mailboxes).where(mailboxes.c.id == mailbox.id).values(data=dump(mailbox))
    )


async def _insert_activity(c: AsyncConnection, activity: EmailActivity) -> int:
    seq = await c.scalar(_INSERT_ACTIVITY, activity_columns(activity))
    assert seq is not None
    await _insert_addresses(c, seq, party_addresses(activity))
    return int(seq)


async def _insert_addresses(c: AsyncConnection, seq: int, addresses: Collection[str]) -> None:
    if addresses:
        await c.execute(
            insert(activity_addresses),
            [{"activity_seq": seq, "address": address} for address in sorted(addresses)],
        )


async def _rewrite_activity(
    c: AsyncConnection,
    seq: int,
    before: EmailActivity,
    after: EmailActivity,
    *,
    release_claim: bool = False,
) -> None:
    values = activity_columns(after)
    if release_claim:
        values.update(claim_token=None, claim_owner=None, claim_expires_at=None)
    await c.execute(update(activities).where(activities.c.seq == seq).values(**values))
    old, new = party_addresses(before), party_addresses(after)
    if old != new:
        await c.execute(delete(activity_addresses).where(activity_addresses.c.activity_seq == seq))
        await _insert_addresses(c, seq, new)


async def _insert_queue_item(
    c: AsyncConnection, queue: RecordRef, activity_id: ActivityId, created_on: datetime | None
) -> None:
    item = QueueItem(
        id=QueueItemId(str(uuid.uuid4())),
        queue=queue,
        activity_id=activity_id,
        created_on=created_on,
    )
    await c.execute(
        insert(queue_items).values(
            queue=str(queue),
            activity_id=activity_id,
            id=item.id,
            seq=await next_value(c, ORDER_COUNTER),
            data=dump(item),
        )
    )


async def _holder(c: AsyncConnection, activity: EmailActivity) -> ActivityId | None:
    """The email that holds ``activity``'s dedupe key, or its id."""
    key = activity.dedupe_key
    if key is not None:
        holder = await c.scalar(
            select(activities.c.id).where(
                activities.c.message_id == key.message_id,
                activities.c.direction == int(key.direction),
            )
        )
        if holder is not None:
            return ActivityId(holder)
    same_id = await c.scalar(select(activities.c.id).where(activities.c.id == activity.id))
    return ActivityId(same_id) if same_id is not None else None


async def _claimed(c: AsyncConnection, claim: SendClaim) -> tuple[int, EmailActivity]:
    """The claimed email's row, locked; :class:`LeaseLostError` when the claim is gone."""
    row = (
        await c.execute(
            select(activities.c.seq, activities.c.data)
            .where(activities.c.id == claim.activity.id, activities.c.claim_token == claim.token)
            .with_for_update()
        )
    ).first()
    if row is None:
        raise LeaseLostError(f"the send claim on email {claim.activity.id} is no longer held")
    return int(row.seq), load(row.data, EmailActivity)


def _claim_of(row: Any) -> SendClaim:
    return SendClaim(
        activity=load(row.data, EmailActivity),
        token=ClaimToken(row.claim_token),
        owner=row.claim_owner,
        expires_at=from_micros(row.claim_expires_at),
    )
