"""Dict-based repositories with the uniqueness and claim semantics a database gives.

Every method checks ``faults`` before it takes effect and after, so tests can fail or
"crash" at exactly that point. Values are immutable, so nothing handed out can change the
store behind its back.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import final

import attrs

from serversync.adapters._faults import FaultPlan, FaultPoint
from serversync.adapters._ports_docs import documented_by
from serversync.adapters.storage._memory_act import InMemoryActRecords, InMemoryExchangeMappings
from serversync.adapters.storage._send_outcomes import apply_send_outcome
from serversync.adapters.storage._sender_records import sender_record
from serversync.errors import ErrorScope, LeaseLostError, StorageConflictError, SyncError
from serversync.model import (
    ActivityId,
    AddResult,
    AlreadyExists,
    Checkpoint,
    ClaimToken,
    CorrelationQuery,
    Created,
    CrmRecord,
    DedupeKey,
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
    SenderRecordRequest,
    SendOutcome,
    TestStatus,
    TrackingNumbers,
    Workload,
    WorkloadState,
)
from serversync.model.messages import normalize_address
from serversync.ports import (
    ActRecordRepository,
    BatchIncomingRepository,
    Clock,
    CorrelationKeyLookup,
    ExchangeSyncIdMappingRepository,
    IncomingRunRepository,
    RecordCreator,
    RecordDirectory,
    Repositories,
    WorkloadRunEndRepository,
    WorkloadRunRepository,
)

__all__ = ["InMemoryDirectory", "InMemoryStorage"]


@attrs.frozen
class _Claim:
    token: ClaimToken
    owner: str
    expires_at: datetime


@attrs.frozen
class _Lease:
    owner: str
    until: datetime


@final
@documented_by(
    Repositories,
    WorkloadRunRepository,
    WorkloadRunEndRepository,
    IncomingRunRepository,
    ActRecordRepository,
    ExchangeSyncIdMappingRepository,
    BatchIncomingRepository,
    CorrelationKeyLookup,
)
class InMemoryStorage(InMemoryActRecords, InMemoryExchangeMappings):
    """Every repository port over dicts; also the host-side setup helpers tests need.

    It also serves appointment, contact and task sync: the host's CRM records and sync
    filters (:class:`~serversync.ports.ActRecordRepository`) and the Exchange mappings
    (:class:`~serversync.ports.ExchangeSyncIdMappingRepository`). ``clock`` stamps the
    ``modified_on`` of records created or changed here.
    """

    def __init__(self, *, faults: FaultPlan | None = None, clock: Clock | None = None) -> None:
        self.faults = faults or FaultPlan()
        self._clock = clock
        self._init_act_records()
        self._init_exchange_mappings()
        self._profiles: dict[ProfileId, EmailServerProfile] = {}
        self._mailboxes: dict[MailboxId, Mailbox] = {}
        self._states: dict[tuple[MailboxId, Workload], WorkloadState] = {}
        self._checkpoints: dict[tuple[MailboxId, str], Checkpoint] = {}
        self._activities: dict[ActivityId, EmailActivity] = {}
        self._by_key: dict[DedupeKey, ActivityId] = {}
        self._queue_items: dict[tuple[str, ActivityId], QueueItem] = {}
        self._claims: dict[ActivityId, _Claim] = {}
        self._tracking_folders: dict[MailboxId, list[MailboxTrackingFolder]] = {}
        self._leases: dict[str, _Lease] = {}
        self._order = itertools.count()
        self._user_numbers: dict[RecordRef, int] = {}
        self._tracking_counter = 0
        self._inserted: dict[ActivityId, int] = {}
        self._quarantine: dict[tuple[MailboxId, str, str], QuarantinedMessage] = {}

    # -- host-side setup ------------------------------------------------------------------------

    def add_profile(self, profile: EmailServerProfile) -> None:
        """Store or replace a profile."""
        self._profiles[profile.id] = profile

    def add_mailbox(self, mailbox: Mailbox) -> None:
        """Store or replace a mailbox."""
        self._mailboxes[mailbox.id] = mailbox

    def add_tracking_folder(self, rule: MailboxTrackingFolder) -> None:
        """Store a folder-level tracking rule."""
        self._tracking_folders.setdefault(rule.mailbox_id, []).append(rule)

    def put_activity(self, activity: EmailActivity) -> None:
        """Store an email as the host would (a draft to send, a past email), keeping the
        (Message-ID, direction) uniqueness."""
        key = activity.dedupe_key
        if key is not None:
            holder = self._by_key.get(key)
            if holder is not None and holder != activity.id:
                raise ValueError(f"{key} already belongs to email {holder}")
            self._by_key[key] = activity.id
        self._activities[activity.id] = activity
        self._inserted.setdefault(activity.id, next(self._order))

    def activities(self) -> list[EmailActivity]:
        """Every stored email, in insertion order."""
        return sorted(self._activities.values(), key=lambda a: self._inserted[a.id])

    def queue_items(self) -> list[QueueItem]:
        """Every queue item."""
        return list(self._queue_items.values())

    # -- fault points ---------------------------------------------------------------------------

    def _before(self, operation: str) -> None:
        self.faults.check(operation, FaultPoint.BEFORE)

    def _after(self, operation: str) -> None:
        self.faults.check(operation, FaultPoint.AFTER)

    # -- profiles and mailboxes -----------------------------------------------------------------

    async def get_profile(self, profile_id: ProfileId) -> EmailServerProfile | None:
        self._before("get_profile")
        return self._profiles.get(profile_id)

    async def list_mailboxes(self) -> Sequence[Mailbox]:
        self._before("list_mailboxes")
        return list(self._mailboxes.values())

    async def get_mailbox(self, mailbox_id: MailboxId) -> Mailbox | None:
        self._before("get_mailbox")
        return self._mailboxes.get(mailbox_id)

    async def disable_workload(
        self, mailbox_id: MailboxId, workload: Workload, *, error: ErrorRecord, at: datetime
    ) -> bool:
        self._before("disable_workload")
        mailbox = self._mailboxes.get(mailbox_id)
        if mailbox is None or not mailbox.enabled_for(workload):
            return False
        self._mailboxes[mailbox_id] = mailbox.with_workload_disabled(workload)
        self._after("disable_workload")
        return True

    async def record_mailbox_test(
        self, mailbox_id: MailboxId, results: Mapping[Workload, TestStatus], *, at: datetime
    ) -> None:
        self._before("record_mailbox_test")
        mailbox = self._mailboxes.get(mailbox_id)
        if mailbox is not None:
            self._mailboxes[mailbox_id] = mailbox.with_test_results(results, at=at)
        self._after("record_mailbox_test")

    async def create_mailbox(self, mailbox: Mailbox) -> Mailbox | None:
        self._before("create_mailbox")
        for other in self._mailboxes.values():
            if other.id == mailbox.id or (
                mailbox.owner is not None and other.owner == mailbox.owner
            ):
                return other
        self._mailboxes[mailbox.id] = mailbox
        self._after("create_mailbox")
        return None

    async def change_mailbox_address(self, mailbox_id: MailboxId, address: str) -> Mailbox | None:
        self._before("change_mailbox_address")
        mailbox = self._mailboxes.get(mailbox_id)
        if mailbox is None:
            return None
        self._mailboxes[mailbox_id] = changed = mailbox.with_email_address(address)
        self._after("change_mailbox_address")
        return changed

    async def set_mailbox_approval(
        self, mailbox_id: MailboxId, approval: EmailApprovalStatus
    ) -> Mailbox | None:
        self._before("set_mailbox_approval")
        mailbox = self._mailboxes.get(mailbox_id)
        if mailbox is None:
            return None
        self._mailboxes[mailbox_id] = changed = attrs.evolve(mailbox, approval=approval)
        self._after("set_mailbox_approval")
        return changed

    # -- workload state and checkpoints ---------------------------------------------------------

    async def get_workload_state(
        self, mailbox_id: MailboxId, workload: Workload
    ) -> WorkloadState | None:
        self._before("get_workload_state")
        return self._states.get((mailbox_id, workload))

    async def save_workload_state(
        self, mailbox_id: MailboxId, workload: Workload, state: WorkloadState
    ) -> None:
        self._before("save_workload_state")
        self._states[(mailbox_id, workload)] = state
        self._after("save_workload_state")

    async def load_checkpoint(self, mailbox_id: MailboxId, folder: str) -> Checkpoint | None:
        self._before("load_checkpoint")
        return self._checkpoints.get((mailbox_id, folder))

    async def save_checkpoint(
        self, mailbox_id: MailboxId, folder: str, checkpoint: Checkpoint
    ) -> None:
        self._before("save_checkpoint")
        self._checkpoints[(mailbox_id, folder)] = checkpoint
        self._after("save_checkpoint")

    async def clear_checkpoints(self, mailbox_id: MailboxId) -> None:
        self._before("clear_checkpoints")
        for key in [k for k in self._checkpoints if k[0] == mailbox_id]:
            del self._checkpoints[key]
        self._after("clear_checkpoints")

    # -- activities -----------------------------------------------------------------------------

    async def add_incoming(
        self, activity: EmailActivity, *, queues: Collection[RecordRef] = ()
    ) -> AddResult:
        self._before("add_incoming")
        key = activity.dedupe_key
        if key is not None and key in self._by_key:
            return AlreadyExists(activity_id=self._by_key[key])
        if activity.id in self._activities:
            return AlreadyExists(activity_id=activity.id)
        self.put_activity(activity)
        for queue in queues:
            self._add_queue_item(queue, activity.id, activity.received_on)
        self._after("add_incoming")
        return Created(activity_id=activity.id)

    async def add_incoming_batch(
        self, emails: Sequence[NewIncomingEmail]
    ) -> Sequence[AddResult | SyncError]:
        # One email at a time, each through add_incoming and its faults: dicts need no
        # transaction, and a fault planned for one email fails that email alone.
        self._before("add_incoming_batch")
        results: list[AddResult | SyncError] = []
        for email in emails:
            try:
                results.append(await self.add_incoming(email.activity, queues=email.queues))
            except SyncError as exc:
                if exc.scope is not ErrorScope.ITEM:
                    raise
                results.append(exc)
        self._after("add_incoming_batch")
        return results

    def _add_queue_item(
        self, queue: RecordRef, activity_id: ActivityId, created_on: datetime | None
    ) -> bool:
        key = (str(queue), activity_id)
        if key in self._queue_items:
            return False
        self._queue_items[key] = QueueItem(
            id=QueueItemId(str(uuid.uuid4())),
            queue=queue,
            activity_id=activity_id,
            created_on=created_on,
        )
        return True

    async def ensure_queue_item(self, queue: RecordRef, activity_id: ActivityId) -> bool:
        self._before("ensure_queue_item")
        added = self._add_queue_item(queue, activity_id, None)
        self._after("ensure_queue_item")
        return added

    async def get_activity(self, activity_id: ActivityId) -> EmailActivity | None:
        self._before("get_activity")
        return self._activities.get(activity_id)

    async def find_by_message_ids(
        self, message_ids: Collection[MessageId]
    ) -> Sequence[EmailActivity]:
        self._before("find_by_message_ids")
        wanted = set(message_ids)
        return [a for a in self.activities() if a.message_id in wanted]

    async def count_recent_from(self, sender: str, *, since: datetime) -> int:
        self._before("count_recent_from")
        wanted = normalize_address(sender)
        return sum(
            1
            for a in self._activities.values()
            if a.direction is EmailDirection.INCOMING
            and a.sender is not None
            and normalize_address(a.sender) == wanted
            and a.received_on is not None
            and a.received_on >= since
        )

    async def find_by_correlation_keys(
        self,
        *,
        conversation_index_hashes: Collection[int] = (),
        tracking_tokens: Collection[str] = (),
    ) -> Sequence[EmailActivity]:
        self._before("find_by_correlation_keys")
        hashes, tokens = set(conversation_index_hashes), set(tracking_tokens)
        return [
            a
            for a in self.activities()
            if (
                a.base_conversation_index_hash is not None
                and a.base_conversation_index_hash in hashes
            )
            or (a.tracking_token is not None and a.tracking_token in tokens)
        ]

    async def find_correlation_candidates(self, query: CorrelationQuery) -> Sequence[EmailActivity]:
        self._before("find_correlation_candidates")
        ids = set(query.message_ids)
        tokens = set(query.tracking_tokens)
        matched = [
            a
            for a in self.activities()
            if (a.message_id is not None and a.message_id in ids)
            or (a.tracking_token is not None and a.tracking_token in tokens)
            or (
                query.conversation_index_hash is not None
                and a.base_conversation_index_hash == query.conversation_index_hash
            )
        ]
        if query.participants:
            wanted = {normalize_address(p) for p in query.participants}
            recent = [
                a
                for a in self.activities()
                if any(normalize_address(p.address) in wanted for p in a.parties)
                and (
                    query.since is None
                    or (a.last_activity_on is not None and a.last_activity_on >= query.since)
                )
            ]
            recent.sort(key=_newest_first)
            matched += [a for a in recent[: query.limit] if a not in matched]
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
        self._before("claim_pending_send")
        due = [
            a
            for a in self.activities()
            if a.status is EmailStatus.PENDING_SEND
            and a.sender_mailbox_id == mailbox_id
            and (a.postpone_sending_until is None or a.postpone_sending_until <= now)
        ][:limit]
        claims = []
        for activity in due:
            claimed = attrs.evolve(activity, status=EmailStatus.SENDING)
            token = ClaimToken(uuid.uuid4().hex)
            self._activities[activity.id] = claimed
            self._claims[activity.id] = _Claim(token=token, owner=owner, expires_at=until)
            claims.append(SendClaim(activity=claimed, token=token, owner=owner, expires_at=until))
        self._after("claim_pending_send")
        return claims

    def _require_claim(self, claim: SendClaim) -> None:
        current = self._claims.get(claim.activity.id)
        if current is None or current.token != claim.token:
            raise LeaseLostError(f"the send claim on email {claim.activity.id} is no longer held")

    async def prepare_send(
        self,
        claim: SendClaim,
        *,
        message_id: MessageId,
        subject: str,
        tracking_token: str | None,
    ) -> SendClaim:
        self._before("prepare_send")
        activity_id = claim.activity.id
        self._require_claim(claim)
        key = DedupeKey(message_id=message_id, direction=claim.activity.direction)
        holder = self._by_key.get(key)
        if holder is not None and holder != activity_id:
            raise StorageConflictError(f"{message_id} already belongs to email {holder}")
        prepared = attrs.evolve(
            self._activities[activity_id],
            message_id=message_id,
            subject=subject,
            tracking_token=tracking_token,
        )
        self._activities[activity_id] = prepared
        self._by_key[key] = activity_id
        self._after("prepare_send")
        return attrs.evolve(claim, activity=prepared)

    async def allocate_tracking_numbers(self, user: RecordRef) -> TrackingNumbers:
        self._before("allocate_tracking_numbers")
        number = self._user_numbers.setdefault(user, len(self._user_numbers) + 1)
        self._tracking_counter += 1
        self._after("allocate_tracking_numbers")
        return TrackingNumbers(user_number=number, counter=self._tracking_counter)

    async def list_expired_claims(
        self, mailbox_id: MailboxId, *, now: datetime
    ) -> Sequence[SendClaim]:
        self._before("list_expired_claims")
        expired = []
        for activity_id, claim in self._claims.items():
            activity = self._activities[activity_id]
            if (
                activity.sender_mailbox_id == mailbox_id
                and activity.status is EmailStatus.SENDING
                and claim.expires_at < now
            ):
                expired.append(
                    SendClaim(
                        activity=activity,
                        token=claim.token,
                        owner=claim.owner,
                        expires_at=claim.expires_at,
                    )
                )
        return expired

    async def count_pending_send(self, mailbox_id: MailboxId) -> int:
        self._before("count_pending_send")
        return sum(
            1
            for a in self._activities.values()
            if a.status is EmailStatus.PENDING_SEND and a.sender_mailbox_id == mailbox_id
        )

    async def record_send_outcome(self, claim: SendClaim, outcome: SendOutcome) -> EmailActivity:
        self._before("record_send_outcome")
        activity_id = claim.activity.id
        self._require_claim(claim)
        activity = self._activities[activity_id]
        updated = apply_send_outcome(activity, outcome)
        self._activities[activity_id] = updated
        if updated.message_id is not None and updated.message_id != activity.message_id:
            self._by_key[DedupeKey(message_id=updated.message_id, direction=updated.direction)] = (
                activity_id
            )
        del self._claims[activity_id]
        self._after("record_send_outcome")
        return updated

    # -- tracking folders and leases ------------------------------------------------------------

    async def list_tracking_folders(self, mailbox_id: MailboxId) -> Sequence[MailboxTrackingFolder]:
        self._before("list_tracking_folders")
        return list(self._tracking_folders.get(mailbox_id, ()))

    async def link_to_tracking_folder(
        self, activity_id: ActivityId, rule: MailboxTrackingFolder
    ) -> None:
        self._before("link_to_tracking_folder")
        activity = self._activities[activity_id]
        self._activities[activity_id] = attrs.evolve(
            activity,
            tracking_folder_id=rule.id,
            regarding=rule.regarding if rule.regarding is not None else activity.regarding,
        )
        self._after("link_to_tracking_folder")

    async def enforce_tracking_folder_regarding(self, rule: MailboxTrackingFolder) -> int:
        self._before("enforce_tracking_folder_regarding")
        if rule.regarding is None:
            return 0
        changed = 0
        for activity_id, activity in list(self._activities.items()):
            if activity.tracking_folder_id == rule.id and activity.regarding != rule.regarding:
                self._activities[activity_id] = attrs.evolve(activity, regarding=rule.regarding)
                changed += 1
        self._after("enforce_tracking_folder_regarding")
        return changed

    async def try_acquire_lease(
        self, key: str, *, owner: str, now: datetime, until: datetime
    ) -> bool:
        self._before("try_acquire_lease")
        lease = self._leases.get(key)
        if lease is not None and lease.owner != owner and lease.until > now:
            return False
        self._leases[key] = _Lease(owner=owner, until=until)
        self._after("try_acquire_lease")
        return True

    async def release_lease(self, key: str, *, owner: str) -> None:
        self._before("release_lease")
        lease = self._leases.get(key)
        if lease is not None and lease.owner == owner:
            del self._leases[key]

    # -- a workload run's bookkeeping in fewer calls (WorkloadRunRepository) ------------------

    async def list_workload_states(self) -> Mapping[tuple[MailboxId, Workload], WorkloadState]:
        self._before("list_workload_states")
        return dict(self._states)

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
        # The separate calls, which await nothing: as atomic, and with their fault points.
        if not await self.try_acquire_lease(key, owner=owner, now=now, until=until):
            return False, None
        return True, self._states.get((mailbox_id, workload))

    async def release_leases(self, leases: Sequence[tuple[str, str]]) -> None:
        for key, owner in leases:
            await self.release_lease(key, owner=owner)

    async def load_incoming_run(
        self, mailbox_id: MailboxId, *, now: datetime, quarantine_limit: int
    ) -> IncomingRunStart:
        # The separate calls, which await nothing: as atomic, and with their fault points.
        rules = await self.list_tracking_folders(mailbox_id)
        due = await self.due_quarantine(mailbox_id, now=now, limit=quarantine_limit)
        self._before("load_checkpoint")
        cursors = {f: c for (m, f), c in self._checkpoints.items() if m == mailbox_id}
        return IncomingRunStart(
            tracking_folders=tuple(rules), due_quarantine=tuple(due), checkpoints=cursors
        )

    async def finish_workload_run(
        self,
        mailbox_id: MailboxId,
        workload: Workload,
        state: WorkloadState,
        leases: Sequence[tuple[str, str]],
    ) -> None:
        # The separate calls, which await nothing: as atomic, and with their fault points.
        await self.save_workload_state(mailbox_id, workload, state)
        await self.release_leases(leases)

    async def claim_pending_send_unless_expired(
        self,
        mailbox_id: MailboxId,
        *,
        owner: str,
        now: datetime,
        until: datetime,
        limit: int,
    ) -> tuple[Sequence[SendClaim], Sequence[SendClaim]]:
        expired = await self.list_expired_claims(mailbox_id, now=now)
        if expired:
            return expired, []
        claimed = await self.claim_pending_send(
            mailbox_id, owner=owner, now=now, until=until, limit=limit
        )
        return [], claimed

    async def get_lease_holder(self, key: str, *, now: datetime) -> str | None:
        self._before("get_lease_holder")
        lease = self._leases.get(key)
        return lease.owner if lease is not None and lease.until > now else None

    # -- quarantine -----------------------------------------------------------------------------

    async def quarantine(self, message: QuarantinedMessage) -> None:
        self._before("quarantine")
        self._quarantine[(message.mailbox_id, message.folder, message.remote_id)] = message
        self._after("quarantine")

    async def get_quarantined(
        self, mailbox_id: MailboxId, folder: str, remote_id: str
    ) -> QuarantinedMessage | None:
        self._before("get_quarantined")
        return self._quarantine.get((mailbox_id, folder, remote_id))

    async def list_quarantine(
        self, mailbox_id: MailboxId | None = None
    ) -> Sequence[QuarantinedMessage]:
        self._before("list_quarantine")
        return sorted(
            (q for q in self._quarantine.values() if mailbox_id in (None, q.mailbox_id)),
            key=lambda q: (q.mailbox_id, q.first_failed_at, q.folder, q.remote_id),
        )

    async def due_quarantine(
        self, mailbox_id: MailboxId, *, now: datetime, limit: int
    ) -> Sequence[QuarantinedMessage]:
        self._before("due_quarantine")
        due = [q for q in self._quarantine.values() if q.mailbox_id == mailbox_id and q.is_due(now)]
        due.sort(key=lambda q: (q.next_attempt_at or now, q.folder, q.remote_id))
        return due[:limit]

    async def release_quarantine(self, mailbox_id: MailboxId, folder: str, remote_id: str) -> bool:
        self._before("release_quarantine")
        released = self._quarantine.pop((mailbox_id, folder, remote_id), None) is not None
        self._after("release_quarantine")
        return released

    async def count_quarantine(self, mailbox_id: MailboxId) -> QuarantineCount:
        self._before("count_quarantine")
        return QuarantineCount.of(
            q for q in self._quarantine.values() if q.mailbox_id == mailbox_id
        )


def _newest_first(activity: EmailActivity) -> float:
    stamp = activity.last_activity_on
    return -stamp.timestamp() if stamp is not None else 0.0


@final
@documented_by(RecordDirectory, RecordCreator)
class InMemoryDirectory:
    """A :class:`~serversync.ports.RecordDirectory` over a list of records."""

    def __init__(self, records: Iterable[CrmRecord] = ()) -> None:
        self._records: list[CrmRecord] = []
        self._by_address: dict[str, list[CrmRecord]] = {}
        self._by_ref: dict[RecordRef, CrmRecord] = {}
        for record in records:
            self.add(record)

    def add(self, record: CrmRecord) -> None:
        """Add a record; its address resolves to it from now on."""
        self._records.append(record)
        self._by_address.setdefault(record.email_address, []).append(record)
        self._by_ref[record.ref] = record

    async def find_by_addresses(
        self, addresses: Collection[str]
    ) -> Mapping[str, Sequence[CrmRecord]]:
        result: dict[str, Sequence[CrmRecord]] = {}
        for address in addresses:
            key = normalize_address(address)
            if key in self._by_address:
                result[key] = tuple(self._by_address[key])
        return result

    async def get_record(self, ref: RecordRef) -> CrmRecord | None:
        return self._by_ref.get(ref)

    async def create_sender_record(self, request: SenderRecordRequest) -> CrmRecord:
        existing = self._by_address.get(request.email_address)
        if existing:
            return existing[0]
        record = sender_record(request)
        self.add(record)
        return record
