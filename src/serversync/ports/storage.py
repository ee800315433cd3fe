"""Repository ports: the host's storage, as narrow idempotent methods.

Exactly-once rests on two promises every implementation keeps:

* ``add_incoming`` is atomic and keyed organisation-wide by (Message-ID, direction): a
  second call with the same key writes nothing and answers :class:`AlreadyExists`;
* ``claim_pending_send`` never hands one email to two owners while a claim is live, and
  ``record_send_outcome`` only accepts the current claim's token.

``serversync.testing.contracts.check_repositories`` proves both on any implementation.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from serversync.errors import SyncError
from serversync.model import (
    ActivityId,
    AddResult,
    Checkpoint,
    CorrelationQuery,
    CrmRecord,
    EmailActivity,
    EmailApprovalStatus,
    EmailServerProfile,
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
    RecordRef,
    SendClaim,
    SendOutcome,
    TestStatus,
    TrackingNumbers,
    Workload,
    WorkloadState,
)

__all__ = [
    "BatchIncomingRepository",
    "CheckpointRepository",
    "CorrelationKeyLookup",
    "EmailActivityRepository",
    "EmailServerProfileRepository",
    "FolderTrackingRepository",
    "IncomingRunRepository",
    "LeaseRepository",
    "MailboxAdministration",
    "MailboxRepository",
    "QuarantineRepository",
    "RecordDirectory",
    "Repositories",
    "TrackingFolderRepository",
    "WorkloadRunEndRepository",
    "WorkloadRunRepository",
    "WorkloadStateRepository",
]


class EmailServerProfileRepository(Protocol):
    """Reads email server profiles."""

    async def get_profile(self, profile_id: ProfileId) -> EmailServerProfile | None:
        """The profile, or ``None`` if it does not exist."""
        ...


class MailboxRepository(Protocol):
    """Reads mailboxes, and disables a workload of one when it fails for good."""

    async def list_mailboxes(self) -> Sequence[Mailbox]:
        """Every mailbox, active or not (the engine decides which to process)."""
        ...

    async def get_mailbox(self, mailbox_id: MailboxId) -> Mailbox | None:
        """One mailbox, or ``None``."""
        ...

    async def disable_workload(
        self, mailbox_id: MailboxId, workload: Workload, *, error: ErrorRecord, at: datetime
    ) -> bool:
        """Disable one workload of the mailbox after a permanent failure, as Dynamics does:
        ``enabled_for_<workload>`` becomes ``False`` and ``<workload>_status`` Failure; the
        other workloads and fields are left alone.

        Return ``True`` if this call disabled it, ``False`` if it was already disabled or
        the mailbox does not exist (so a repeated call changes nothing). ``error`` and ``at``
        are the reason and time, for hosts that keep them on the mailbox row (Dynamics'
        ``lastsyncerror`` columns); the engine also saves them in the workload state.
        """
        ...

    async def record_mailbox_test(
        self, mailbox_id: MailboxId, results: Mapping[Workload, TestStatus], *, at: datetime
    ) -> None:
        """Store a Test & Enable run: each tested workload's ``<workload>_status``, the time in
        ``test_completed_on``, and ``enabled_for_<workload>`` set to whether it succeeded.
        Workloads not in ``results`` are left alone; an unknown mailbox is ignored."""
        ...


class MailboxAdministration(Protocol):
    """Adds mailboxes and changes what an administrator changes: the address and its approval.

    Each method changes one mailbox atomically, so that it cannot undo a concurrent change
    of other fields (a workload the engine disables meanwhile).
    """

    async def create_mailbox(self, mailbox: Mailbox) -> Mailbox | None:
        """Store ``mailbox`` unless a mailbox with its id, or one of the same owner (user or
        queue; forward mailboxes have none), exists; then write nothing and return that
        mailbox. ``None`` means it was stored. Two concurrent calls for one owner store one."""
        ...

    async def change_mailbox_address(self, mailbox_id: MailboxId, address: str) -> Mailbox | None:
        """Set the mailbox's email address as :meth:`Mailbox.with_email_address` does (the
        approval goes back to Empty when the address really changes); return the mailbox as
        saved, or ``None`` when it does not exist."""
        ...

    async def set_mailbox_approval(
        self, mailbox_id: MailboxId, approval: EmailApprovalStatus
    ) -> Mailbox | None:
        """Set the mailbox's email address status; return the mailbox as saved, or ``None``
        when it does not exist."""
        ...


class WorkloadStateRepository(Protocol):
    """The engine's scheduling and error state per mailbox workload."""

    async def get_workload_state(
        self, mailbox_id: MailboxId, workload: Workload
    ) -> WorkloadState | None:
        """The saved state, or ``None`` for a workload never run."""
        ...

    async def save_workload_state(
        self, mailbox_id: MailboxId, workload: Workload, state: WorkloadState
    ) -> None:
        """Replace the saved state."""
        ...


@runtime_checkable
class WorkloadRunRepository(Protocol):
    """Optional: a workload run's bookkeeping in fewer calls.

    Each call would otherwise be several (one a mailbox workload for the states, the lease
    and the state read, each lease released): a store whose calls cost a round trip or a
    thread hop implements this to cut them. The engine uses it when the repositories are an
    instance of it and falls back to the separate calls otherwise.
    """

    async def list_workload_states(self) -> Mapping[tuple[MailboxId, Workload], WorkloadState]:
        """Every saved workload state, by mailbox and workload (what the engine needs to
        tell which workloads are due)."""
        ...

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
        """``try_acquire_lease(key, ...)`` and, in the same transaction, the workload's saved
        state: (whether the lease is ``owner``'s now, the state read under it)."""
        ...

    async def release_leases(self, leases: Sequence[tuple[str, str]]) -> None:
        """``release_lease(key, owner=owner)`` of every (key, owner), in one transaction."""
        ...

    async def claim_pending_send_unless_expired(
        self,
        mailbox_id: MailboxId,
        *,
        owner: str,
        now: datetime,
        until: datetime,
        limit: int,
    ) -> tuple[Sequence[SendClaim], Sequence[SendClaim]]:
        """``list_expired_claims(mailbox_id, now=now)`` and, in the same transaction when it
        finds none, ``claim_pending_send(...)``: (the expired claims, the new claims). The
        engine settles expired claims before it claims again, so with expired claims found
        nothing is claimed."""
        ...


@runtime_checkable
class IncomingRunRepository(Protocol):
    """Optional: what an incoming run reads before it lists mail, in one call.

    Without it the engine asks ``list_tracking_folders``, ``due_quarantine`` and, for each
    folder it reads, ``load_checkpoint``. The engine uses it when the repositories offer it.
    """

    async def load_incoming_run(
        self, mailbox_id: MailboxId, *, now: datetime, quarantine_limit: int
    ) -> IncomingRunStart:
        """``list_tracking_folders(mailbox_id)``, ``due_quarantine(mailbox_id, now=now,
        limit=quarantine_limit)`` and every saved cursor of the mailbox by folder (what
        ``load_checkpoint`` answers for each), in one transaction."""
        ...


@runtime_checkable
class WorkloadRunEndRepository(Protocol):
    """Optional: the end of a workload run in one call: its new state saved and its leases
    (the connection slot and the mailbox lease) given back.

    Without it the engine saves the state and releases the leases in two calls. The engine
    uses it when the repositories offer it.
    """

    async def finish_workload_run(
        self,
        mailbox_id: MailboxId,
        workload: Workload,
        state: WorkloadState,
        leases: Sequence[tuple[str, str]],
    ) -> None:
        """``save_workload_state(mailbox_id, workload, state)`` and then
        ``release_lease(key, owner=owner)`` of every (key, owner) in ``leases``, in one
        transaction (both or neither)."""
        ...


class CheckpointRepository(Protocol):
    """Incoming cursors per mailbox folder."""

    async def load_checkpoint(self, mailbox_id: MailboxId, folder: str) -> Checkpoint | None:
        """The saved cursor, or ``None`` before the first run."""
        ...

    async def save_checkpoint(
        self, mailbox_id: MailboxId, folder: str, checkpoint: Checkpoint
    ) -> None:
        """Replace the cursor (called only after the messages before it were stored)."""
        ...

    async def clear_checkpoints(self, mailbox_id: MailboxId) -> None:
        """Forget every cursor of the mailbox, so its folders are read again from Process
        Email From (Test & Enable does this; dedupe keeps the re-read free of duplicates)."""
        ...


class EmailActivityRepository(Protocol):
    """Email activities: idempotent incoming inserts, lookups and the outgoing claim cycle."""

    async def add_incoming(
        self, activity: EmailActivity, *, queues: Collection[RecordRef] = ()
    ) -> AddResult:
        """Store ``activity`` and one queue item per queue in ``queues``, atomically.

        If an activity with the same (Message-ID, direction) exists anywhere in the
        organisation, write nothing and return ``AlreadyExists`` with its id.
        """
        ...

    async def ensure_queue_item(self, queue: RecordRef, activity_id: ActivityId) -> bool:
        """Add a queue item unless the queue already has one for the activity; ``True`` if added."""
        ...

    async def get_activity(self, activity_id: ActivityId) -> EmailActivity | None:
        """One activity, or ``None``."""
        ...

    async def find_by_message_ids(
        self, message_ids: Collection[MessageId]
    ) -> Sequence[EmailActivity]:
        """Every activity, of either direction, whose Message-ID is in ``message_ids``."""
        ...

    async def count_recent_from(self, sender: str, *, since: datetime) -> int:
        """How many incoming emails from ``sender`` (compared without case) were received
        since ``since`` (for the loop guard)."""
        ...

    async def find_correlation_candidates(self, query: CorrelationQuery) -> Sequence[EmailActivity]:
        """Every stored email the query describes (see :class:`CorrelationQuery`)."""
        ...

    async def claim_pending_send(
        self,
        mailbox_id: MailboxId,
        *,
        owner: str,
        now: datetime,
        until: datetime,
        limit: int,
    ) -> Sequence[SendClaim]:
        """Atomically move up to ``limit`` due Pending Send emails of the sender mailbox to
        Sending, claimed by ``owner`` until ``until`` (the attempt is counted when its outcome
        is recorded).

        Due means ``postpone_sending_until`` is unset or not after ``now``. Oldest first.
        """
        ...

    async def prepare_send(
        self,
        claim: SendClaim,
        *,
        message_id: MessageId,
        subject: str,
        tracking_token: str | None,
    ) -> SendClaim:
        """Store the Message-ID, the final subject and the tracking token on the claimed email
        before its first attempt, so every retry sends the same; return the updated claim.

        Raises :class:`~serversync.errors.LeaseLostError` if ``claim`` is no longer current.
        """
        ...

    async def allocate_tracking_numbers(self, user: RecordRef) -> TrackingNumbers:
        """The next tracking token numbers for an email sent by ``user``, atomically.

        The user number is stable per user (assigned on first use, counting from 1); the
        counter is organisation-wide and grows by one per call (formatting wraps it).
        """
        ...

    async def list_expired_claims(
        self, mailbox_id: MailboxId, *, now: datetime
    ) -> Sequence[SendClaim]:
        """Emails of the sender mailbox still Sending whose claim expired before ``now``."""
        ...

    async def count_pending_send(self, mailbox_id: MailboxId) -> int:
        """How many emails of the sender mailbox are Pending Send, due or postponed (the
        outgoing backlog that mailbox health reports)."""
        ...

    async def record_send_outcome(self, claim: SendClaim, outcome: SendOutcome) -> EmailActivity:
        """Apply ``outcome`` to the claimed email and release the claim; return the new email.

        Raises :class:`~serversync.errors.LeaseLostError` if ``claim`` is no longer the
        email's current claim (another owner took it over).
        """
        ...


@runtime_checkable
class BatchIncomingRepository(Protocol):
    """Optional: stores several incoming emails at once (one transaction, where a store
    has them). The engine stores a header batch's tracked emails with it when the
    repositories offer it, and calls ``add_incoming`` once an email otherwise."""

    async def add_incoming_batch(
        self, emails: Sequence[NewIncomingEmail]
    ) -> Sequence[AddResult | SyncError]:
        """Store each email as ``add_incoming`` would; answer one entry per email, in order.

        Each email and its queue items are stored atomically and keyed as ``add_incoming``
        keys them, an email earlier in ``emails`` included: a repeated key answers
        :class:`AlreadyExists`. An email the store refuses alone is not stored and its entry
        is the error (of scope ``item``), the others are stored. An error of wider scope
        (the database is down) is raised; the emails before it may or may not be stored,
        and a repeated call stores none of them twice.
        """
        ...


@runtime_checkable
class CorrelationKeyLookup(Protocol):
    """Optional: finds the emails that a whole header batch could correlate with by
    conversation index or tracking token, in one query. Without it the engine asks
    ``find_correlation_candidates`` once for each message carrying either."""

    async def find_by_correlation_keys(
        self,
        *,
        conversation_index_hashes: Collection[int] = (),
        tracking_tokens: Collection[str] = (),
    ) -> Sequence[EmailActivity]:
        """Every stored email, of either direction, whose ``base_conversation_index_hash`` is
        in ``conversation_index_hashes`` or whose tracking token is in ``tracking_tokens``."""
        ...


class TrackingFolderRepository(Protocol):
    """Folder-level tracking rules."""

    async def list_tracking_folders(self, mailbox_id: MailboxId) -> Sequence[MailboxTrackingFolder]:
        """The rules of one mailbox."""
        ...


class FolderTrackingRepository(Protocol):
    """Keeps emails tracked through a folder-level tracking rule linked to its record."""

    async def link_to_tracking_folder(
        self, activity_id: ActivityId, rule: MailboxTrackingFolder
    ) -> None:
        """Mark the email as tracked by ``rule`` and, when the rule has one, set its Regarding
        to the rule's record (an email moved into the rule's folder is re-linked)."""
        ...

    async def enforce_tracking_folder_regarding(self, rule: MailboxTrackingFolder) -> int:
        """Set the Regarding of every email tracked by ``rule`` back to the rule's record
        (overriding manual changes, as Dynamics does); return how many changed."""
        ...


class LeaseRepository(Protocol):
    """Leases so that one mailbox workload is processed by one engine at a time."""

    async def try_acquire_lease(
        self, key: str, *, owner: str, now: datetime, until: datetime
    ) -> bool:
        """Take or renew the lease on ``key`` if it is free, expired, or already ``owner``'s."""
        ...

    async def release_lease(self, key: str, *, owner: str) -> None:
        """Give the lease up if ``owner`` holds it; otherwise do nothing."""
        ...

    async def get_lease_holder(self, key: str, *, now: datetime) -> str | None:
        """The owner of the lease on ``key`` if it is held and has not expired at ``now``
        (a lease expiring exactly at ``now`` is free), else ``None``."""
        ...


class QuarantineRepository(Protocol):
    """Poison messages: incoming messages that failed alone, kept until they succeed or an
    operator discards them. Each is keyed by (mailbox, folder, remote id)."""

    async def quarantine(self, message: QuarantinedMessage) -> None:
        """Store ``message``, replacing the entry with the same (``mailbox_id``, ``folder``,
        ``remote_id``) if there is one (so a repeated call changes nothing)."""
        ...

    async def get_quarantined(
        self, mailbox_id: MailboxId, folder: str, remote_id: str
    ) -> QuarantinedMessage | None:
        """The entry for one message, or ``None``."""
        ...

    async def list_quarantine(
        self, mailbox_id: MailboxId | None = None
    ) -> Sequence[QuarantinedMessage]:
        """Every entry of one mailbox, or of every mailbox when ``mailbox_id`` is ``None``,
        given up ones included; ordered by mailbox id, then first failure, folder and remote
        id."""
        ...

    async def due_quarantine(
        self, mailbox_id: MailboxId, *, now: datetime, limit: int
    ) -> Sequence[QuarantinedMessage]:
        """Up to ``limit`` entries of the mailbox to try again at ``now``: not given up, with
        a ``next_attempt_at`` not after ``now``; the earliest ``next_attempt_at`` first."""
        ...

    async def release_quarantine(self, mailbox_id: MailboxId, folder: str, remote_id: str) -> bool:
        """Forget the entry (the message succeeded, vanished, or was discarded); ``True`` if
        there was one."""
        ...

    async def count_quarantine(self, mailbox_id: MailboxId) -> QuarantineCount:
        """How many entries the mailbox has, waiting and given up, and the earliest
        ``next_attempt_at`` among those waiting (for mailbox health)."""
        ...


class RecordDirectory(Protocol):
    """Resolves email addresses to CRM records (users, queues, contacts, accounts, leads...)."""

    async def find_by_addresses(
        self, addresses: Collection[str]
    ) -> Mapping[str, Sequence[CrmRecord]]:
        """For each lower-cased address, every record with that address in an email column.

        Addresses that match nothing may be missing from the answer.
        """
        ...

    async def get_record(self, ref: RecordRef) -> CrmRecord | None:
        """One record by reference (the owning user or queue of a mailbox)."""
        ...


class Repositories(
    EmailServerProfileRepository,
    MailboxRepository,
    MailboxAdministration,
    WorkloadStateRepository,
    CheckpointRepository,
    EmailActivityRepository,
    TrackingFolderRepository,
    FolderTrackingRepository,
    LeaseRepository,
    QuarantineRepository,
    Protocol,
):
    """Every repository port in one object: what :class:`~serversync.SyncEngine` takes.

    Hosts usually implement it on one class over their own database, as
    :class:`serversync.testing.InMemoryStorage` does.
    """
