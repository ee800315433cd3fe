"""Host-style code written only against serversync's public API; checked with ``mypy --strict``.

It plays the part of a CRM backend embedding serversync: its own relevance rule, its own
repositories over dicts, its own credential provider and observer, wired into a
:class:`serversync.SyncEngine` with the in-memory transports. The variables annotated with
the Protocol types make mypy prove that each class conforms to its port.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

import attrs

import serversync
from serversync import (
    ActivityId,
    AddResult,
    Alert,
    AlreadyExists,
    Checkpoint,
    ClaimToken,
    ConfigurationError,
    CorrelationQuery,
    Created,
    CredentialProvider,
    Credentials,
    DecisionReason,
    EmailActivity,
    EmailApprovalStatus,
    EmailServerProfile,
    EmailStatus,
    ErrorRecord,
    ItemOutcome,
    LeaseLostError,
    Mailbox,
    MailboxId,
    MailboxRunReport,
    MailboxTrackingFolder,
    MessageId,
    ParsedHeaders,
    ProfileId,
    QuarantineCount,
    QuarantinedMessage,
    RecordDirectory,
    RecordRef,
    Reject,
    RelevanceFacts,
    RelevanceRule,
    Repositories,
    RunReport,
    Secret,
    SendClaim,
    SendFailed,
    SendOutcome,
    SendReleased,
    SendResult,
    SendRetry,
    SendSucceeded,
    SendUncertain,
    SyncEngine,
    SyncObserver,
    SyncSettings,
    TestStatus,
    TrackingNumbers,
    Verdict,
    Workload,
    WorkloadState,
)
from serversync.testing import (
    FakeClock,
    InMemoryDirectory,
    InMemoryIncomingTransport,
    InMemoryMailServer,
    InMemoryOutgoingTransport,
    a_contact,
    a_mailbox,
    a_pending_email,
    a_profile,
    a_user,
    an_email,
)

__all__ = [
    "ALICE",
    "AUTO_REPLY_SUBJECT",
    "CUSTOMER",
    "PENDING_SUBJECT",
    "REPLY_SUBJECT",
    "CountingObserver",
    "DictCredentials",
    "DictRepositories",
    "RejectAutoSubmitted",
    "wire_engine",
]

ALICE = "alice@contoso.example"
CUSTOMER = "jane@fabrikam.example"
REPLY_SUBJECT = "RE: Quote"
AUTO_REPLY_SUBJECT = "Automatic reply: Quote"
PENDING_SUBJECT = "Order confirmation"


@attrs.frozen
class RejectAutoSubmitted:
    """Reject automatic replies (``Auto-Submitted`` other than ``no``, RFC 3834)."""

    name: str = "reject-auto-submitted"

    def evaluate(self, message: ParsedHeaders, facts: RelevanceFacts) -> Verdict | None:
        """Reject auto-submitted mail; no opinion on anything else."""
        value = message.auto_submitted
        if value is None or value.strip().lower() == "no":
            return None
        return Reject(
            reason=DecisionReason.UNKNOWN,
            rule=self.name,
            explanation=f"Auto-Submitted: {value} (mailbox {facts.mailbox.email_address})",
        )


@attrs.define
class _Claim:
    token: ClaimToken
    owner: str
    expires_at: datetime


@attrs.define
class _Lease:
    owner: str
    until: datetime


class DictRepositories:
    """Every repository port over plain dicts, as a host would write it over its database."""

    def __init__(self) -> None:
        self.profiles: dict[ProfileId, EmailServerProfile] = {}
        self.mailboxes: dict[MailboxId, Mailbox] = {}
        self.states: dict[tuple[MailboxId, Workload], WorkloadState] = {}
        self.checkpoints: dict[tuple[MailboxId, str], Checkpoint] = {}
        self.activities: dict[ActivityId, EmailActivity] = {}
        self.queue_items: set[tuple[RecordRef, ActivityId]] = set()
        self.claims: dict[ActivityId, _Claim] = {}
        self.leases: dict[str, _Lease] = {}
        self.disabled_reasons: dict[tuple[MailboxId, Workload], tuple[ErrorRecord, datetime]] = {}
        self.tracking_folders: dict[MailboxId, list[MailboxTrackingFolder]] = {}
        self.user_numbers: dict[RecordRef, int] = {}
        self.tracking_counter = 0
        self.quarantined: dict[tuple[MailboxId, str, str], QuarantinedMessage] = {}

    def _holder(self, activity: EmailActivity) -> ActivityId | None:
        key = activity.dedupe_key
        if key is None:
            return None
        for stored in self.activities.values():
            if stored.dedupe_key == key:
                return stored.id
        return None

    # EmailServerProfileRepository
    async def get_profile(self, profile_id: ProfileId) -> EmailServerProfile | None:
        return self.profiles.get(profile_id)

    # MailboxRepository
    async def list_mailboxes(self) -> Sequence[Mailbox]:
        return list(self.mailboxes.values())

    async def get_mailbox(self, mailbox_id: MailboxId) -> Mailbox | None:
        return self.mailboxes.get(mailbox_id)

    async def disable_workload(
        self, mailbox_id: MailboxId, workload: Workload, *, error: ErrorRecord, at: datetime
    ) -> bool:
        mailbox = self.mailboxes.get(mailbox_id)
        if mailbox is None or not mailbox.enabled_for(workload):
            return False
        if workload is Workload.INCOMING:
            changed = attrs.evolve(
                mailbox, enabled_for_incoming=False, incoming_status=TestStatus.FAILURE
            )
        elif workload is Workload.OUTGOING:
            changed = attrs.evolve(
                mailbox, enabled_for_outgoing=False, outgoing_status=TestStatus.FAILURE
            )
        else:
            changed = attrs.evolve(mailbox, enabled_for_act=False, act_status=TestStatus.FAILURE)
        self.mailboxes[mailbox_id] = changed
        # A CRM would also keep the reason on the mailbox row (Dynamics' lastsyncerror).
        self.disabled_reasons[(mailbox_id, workload)] = (error, at)
        return True

    # WorkloadStateRepository
    async def get_workload_state(
        self, mailbox_id: MailboxId, workload: Workload
    ) -> WorkloadState | None:
        return self.states.get((mailbox_id, workload))

    async def save_workload_state(
        self, mailbox_id: MailboxId, workload: Workload, state: WorkloadState
    ) -> None:
        self.states[(mailbox_id, workload)] = state

    # CheckpointRepository
    async def load_checkpoint(self, mailbox_id: MailboxId, folder: str) -> Checkpoint | None:
        return self.checkpoints.get((mailbox_id, folder))

    async def save_checkpoint(
        self, mailbox_id: MailboxId, folder: str, checkpoint: Checkpoint
    ) -> None:
        self.checkpoints[(mailbox_id, folder)] = checkpoint

    async def clear_checkpoints(self, mailbox_id: MailboxId) -> None:
        for key in [k for k in self.checkpoints if k[0] == mailbox_id]:
            del self.checkpoints[key]

    async def record_mailbox_test(
        self, mailbox_id: MailboxId, results: Mapping[Workload, TestStatus], *, at: datetime
    ) -> None:
        mailbox = self.mailboxes.get(mailbox_id)
        if mailbox is not None:
            self.mailboxes[mailbox_id] = mailbox.with_test_results(results, at=at)

    # MailboxAdministration
    async def create_mailbox(self, mailbox: Mailbox) -> Mailbox | None:
        for other in self.mailboxes.values():
            if other.id == mailbox.id or (mailbox.owner and other.owner == mailbox.owner):
                return other
        self.mailboxes[mailbox.id] = mailbox
        return None

    async def change_mailbox_address(self, mailbox_id: MailboxId, address: str) -> Mailbox | None:
        mailbox = self.mailboxes.get(mailbox_id)
        if mailbox is None:
            return None
        self.mailboxes[mailbox_id] = changed = mailbox.with_email_address(address)
        return changed

    async def set_mailbox_approval(
        self, mailbox_id: MailboxId, approval: EmailApprovalStatus
    ) -> Mailbox | None:
        mailbox = self.mailboxes.get(mailbox_id)
        if mailbox is None:
            return None
        self.mailboxes[mailbox_id] = changed = attrs.evolve(mailbox, approval=approval)
        return changed

    # EmailActivityRepository
    async def add_incoming(
        self, activity: EmailActivity, *, queues: Collection[RecordRef] = ()
    ) -> AddResult:
        holder = self._holder(activity)
        if holder is not None:
            return AlreadyExists(activity_id=holder)
        self.activities[activity.id] = activity
        for queue in queues:
            self.queue_items.add((queue, activity.id))
        return Created(activity_id=activity.id)

    async def ensure_queue_item(self, queue: RecordRef, activity_id: ActivityId) -> bool:
        if (queue, activity_id) in self.queue_items:
            return False
        self.queue_items.add((queue, activity_id))
        return True

    async def get_activity(self, activity_id: ActivityId) -> EmailActivity | None:
        return self.activities.get(activity_id)

    async def find_by_message_ids(
        self, message_ids: Collection[MessageId]
    ) -> Sequence[EmailActivity]:
        wanted = set(message_ids)
        return [a for a in self.activities.values() if a.message_id in wanted]

    async def count_recent_from(self, sender: str, *, since: datetime) -> int:
        return sum(
            1
            for a in self.activities.values()
            if a.sender == sender and a.received_on is not None and a.received_on >= since
        )

    async def find_correlation_candidates(self, query: CorrelationQuery) -> Sequence[EmailActivity]:
        # A host database would use indexes; a scan keeps this example short.
        ids, tokens = set(query.message_ids), set(query.tracking_tokens)
        return [
            a
            for a in self.activities.values()
            if a.message_id in ids
            or a.tracking_token in tokens
            or (
                query.conversation_index_hash is not None
                and a.base_conversation_index_hash == query.conversation_index_hash
            )
        ]

    async def prepare_send(
        self,
        claim: SendClaim,
        *,
        message_id: MessageId,
        subject: str,
        tracking_token: str | None,
    ) -> SendClaim:
        current = self.claims.get(claim.activity.id)
        if current is None or current.token != claim.token:
            raise LeaseLostError(f"the send claim on email {claim.activity.id} is no longer held")
        prepared = attrs.evolve(
            self.activities[claim.activity.id],
            message_id=message_id,
            subject=subject,
            tracking_token=tracking_token,
        )
        self.activities[prepared.id] = prepared
        return attrs.evolve(claim, activity=prepared)

    async def allocate_tracking_numbers(self, user: RecordRef) -> TrackingNumbers:
        number = self.user_numbers.setdefault(user, len(self.user_numbers) + 1)
        self.tracking_counter += 1
        return TrackingNumbers(user_number=number, counter=self.tracking_counter)

    async def link_to_tracking_folder(
        self, activity_id: ActivityId, rule: MailboxTrackingFolder
    ) -> None:
        activity = self.activities[activity_id]
        self.activities[activity_id] = attrs.evolve(
            activity,
            tracking_folder_id=rule.id,
            regarding=rule.regarding or activity.regarding,
        )

    async def enforce_tracking_folder_regarding(self, rule: MailboxTrackingFolder) -> int:
        stale = [
            a
            for a in self.activities.values()
            if a.tracking_folder_id == rule.id and rule.regarding not in (None, a.regarding)
        ]
        for activity in stale:
            self.activities[activity.id] = attrs.evolve(activity, regarding=rule.regarding)
        return len(stale)

    async def claim_pending_send(
        self,
        mailbox_id: MailboxId,
        *,
        owner: str,
        now: datetime,
        until: datetime,
        limit: int,
    ) -> Sequence[SendClaim]:
        due = [
            a
            for a in self.activities.values()
            if a.status is EmailStatus.PENDING_SEND
            and a.sender_mailbox_id == mailbox_id
            and (a.postpone_sending_until is None or a.postpone_sending_until <= now)
        ][:limit]
        claims: list[SendClaim] = []
        for activity in due:
            claimed = attrs.evolve(activity, status=EmailStatus.SENDING)
            token = ClaimToken(uuid.uuid4().hex)
            self.activities[activity.id] = claimed
            self.claims[activity.id] = _Claim(token=token, owner=owner, expires_at=until)
            claims.append(SendClaim(activity=claimed, token=token, owner=owner, expires_at=until))
        return claims

    async def list_expired_claims(
        self, mailbox_id: MailboxId, *, now: datetime
    ) -> Sequence[SendClaim]:
        expired: list[SendClaim] = []
        for activity_id, claim in self.claims.items():
            activity = self.activities[activity_id]
            if activity.sender_mailbox_id == mailbox_id and claim.expires_at < now:
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
        return sum(
            1
            for a in self.activities.values()
            if a.status is EmailStatus.PENDING_SEND and a.sender_mailbox_id == mailbox_id
        )

    async def record_send_outcome(self, claim: SendClaim, outcome: SendOutcome) -> EmailActivity:
        activity_id = claim.activity.id
        current = self.claims.get(activity_id)
        if current is None or current.token != claim.token:
            raise LeaseLostError(f"the send claim on email {activity_id} is no longer held")
        activity = self.activities[activity_id]
        attempts = activity.delivery_attempts + 1
        updated: EmailActivity
        if isinstance(outcome, SendSucceeded):
            updated = attrs.evolve(
                activity,
                status=EmailStatus.SENT,
                message_id=outcome.message_id,
                sent_on=outcome.sent_on,
                server_reply=outcome.server_reply,
                delivery_attempts=attempts,
                postpone_sending_until=None,
                last_send_error=None,
            )
        elif isinstance(outcome, SendRetry):
            updated = attrs.evolve(
                activity,
                status=EmailStatus.PENDING_SEND,
                delivery_attempts=attempts,
                postpone_sending_until=outcome.not_before,
                last_send_error=outcome.error,
            )
        elif isinstance(outcome, SendFailed | SendUncertain):
            updated = attrs.evolve(
                activity,
                status=EmailStatus.FAILED,
                delivery_attempts=attempts,
                delivery_uncertain=isinstance(outcome, SendUncertain),
                last_send_error=outcome.error,
            )
        elif isinstance(outcome, SendReleased):
            updated = attrs.evolve(
                activity,
                status=EmailStatus.PENDING_SEND,
                postpone_sending_until=outcome.not_before,
                last_send_error=outcome.error,
            )
        else:  # pragma: no cover - exhaustive over SendOutcome
            raise TypeError(f"unknown send outcome {outcome!r}")
        self.activities[activity_id] = updated
        del self.claims[activity_id]
        return updated

    # TrackingFolderRepository
    async def list_tracking_folders(self, mailbox_id: MailboxId) -> Sequence[MailboxTrackingFolder]:
        return list(self.tracking_folders.get(mailbox_id, ()))

    # LeaseRepository
    async def try_acquire_lease(
        self, key: str, *, owner: str, now: datetime, until: datetime
    ) -> bool:
        lease = self.leases.get(key)
        if lease is not None and lease.owner != owner and lease.until > now:
            return False
        self.leases[key] = _Lease(owner=owner, until=until)
        return True

    async def release_lease(self, key: str, *, owner: str) -> None:
        lease = self.leases.get(key)
        if lease is not None and lease.owner == owner:
            del self.leases[key]

    async def get_lease_holder(self, key: str, *, now: datetime) -> str | None:
        lease = self.leases.get(key)
        return lease.owner if lease is not None and lease.until > now else None

    # QuarantineRepository
    async def quarantine(self, message: QuarantinedMessage) -> None:
        self.quarantined[(message.mailbox_id, message.folder, message.remote_id)] = message

    async def get_quarantined(
        self, mailbox_id: MailboxId, folder: str, remote_id: str
    ) -> QuarantinedMessage | None:
        return self.quarantined.get((mailbox_id, folder, remote_id))

    async def list_quarantine(
        self, mailbox_id: MailboxId | None = None
    ) -> Sequence[QuarantinedMessage]:
        return sorted(
            (q for q in self.quarantined.values() if mailbox_id in (None, q.mailbox_id)),
            key=lambda q: (q.mailbox_id, q.first_failed_at, q.folder, q.remote_id),
        )

    async def due_quarantine(
        self, mailbox_id: MailboxId, *, now: datetime, limit: int
    ) -> Sequence[QuarantinedMessage]:
        due = [q for q in self.quarantined.values() if q.mailbox_id == mailbox_id and q.is_due(now)]
        return sorted(due, key=lambda q: (q.next_attempt_at or now, q.folder, q.remote_id))[:limit]

    async def release_quarantine(self, mailbox_id: MailboxId, folder: str, remote_id: str) -> bool:
        return self.quarantined.pop((mailbox_id, folder, remote_id), None) is not None

    async def count_quarantine(self, mailbox_id: MailboxId) -> QuarantineCount:
        return QuarantineCount.of(
            q for q in self.quarantined.values() if q.mailbox_id == mailbox_id
        )


class DictCredentials:
    """Passwords by mailbox address; the mailbox address is also the user name."""

    def __init__(self, passwords: Mapping[str, str]) -> None:
        self._passwords = dict(passwords)

    async def resolve(
        self, mailbox: Mailbox, profile: EmailServerProfile, workload: Workload
    ) -> Credentials | None:
        """The mailbox's password, or a :class:`ConfigurationError` when there is none."""
        password = self._passwords.get(mailbox.email_address)
        if password is None:
            raise ConfigurationError(
                f"no password for {mailbox.email_address} ({workload})", mailbox_id=mailbox.id
            )
        return Credentials(username=mailbox.email_address, secret=Secret(password))


class CountingObserver(serversync.BaseSyncObserver):
    """Keeps every outcome, send, mailbox report and alert it is told about."""

    def __init__(self) -> None:
        self.items: list[ItemOutcome] = []
        self.sends: list[SendResult] = []
        self.runs: list[MailboxRunReport] = []
        self.alerts: list[Alert] = []

    def item_processed(self, outcome: ItemOutcome) -> None:
        self.items.append(outcome)

    def email_sent(self, result: SendResult) -> None:
        self.sends.append(result)

    def mailbox_run_finished(self, report: MailboxRunReport) -> None:
        self.runs.append(report)

    def alert_raised(self, alert: Alert) -> None:
        self.alerts.append(alert)


# Structural conformance, checked by mypy.
rule: RelevanceRule = RejectAutoSubmitted()
repos: Repositories = DictRepositories()
credentials: CredentialProvider = DictCredentials({})
observer: SyncObserver = CountingObserver()


async def wire_engine(observer: CountingObserver | None = None) -> RunReport:
    """Build a small world, run the engine once, and return its report.

    Alice (a user tracking all email) receives a customer's reply and an automatic reply;
    one CRM email is pending send from her mailbox.
    """
    clock = FakeClock()
    server = InMemoryMailServer(clock=clock)
    server.add_account(ALICE, password="alice-password")
    server.add_account(CUSTOMER, password="jane-password")

    alice_user = a_user(ALICE, filtering=serversync.IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    records: RecordDirectory = InMemoryDirectory([alice_user, a_contact(CUSTOMER)])

    store = DictRepositories()
    profile = a_profile()
    store.profiles[profile.id] = profile
    mailbox = a_mailbox(ALICE, owner=alice_user.ref, profile_id=profile.id)
    store.mailboxes[mailbox.id] = mailbox
    pending = a_pending_email(sender_mailbox=mailbox, to=[CUSTOMER], subject=PENDING_SUBJECT)
    store.activities[pending.id] = pending

    server.deliver(ALICE, an_email(sender=CUSTOMER, to=[ALICE], subject=REPLY_SUBJECT))
    server.deliver(
        ALICE,
        an_email(
            sender=CUSTOMER,
            to=[ALICE],
            subject=AUTO_REPLY_SUBJECT,
            headers=[("Auto-Submitted", "auto-replied")],
        ),
    )

    rules: list[RelevanceRule] = [RejectAutoSubmitted(), *serversync.default_rules()]
    transports = serversync.Transports.for_all(
        incoming=InMemoryIncomingTransport(server), outgoing=InMemoryOutgoingTransport(server)
    )
    engine = SyncEngine(
        repositories=store,
        directory=records,
        transports=transports,
        credentials=DictCredentials({ALICE: "alice-password"}),
        rules=rules,
        settings=SyncSettings(message_id_domain="crm.contoso.example"),
        clock=clock,
        observer=observer or CountingObserver(),
        engine_id="host-engine",
    )
    async with engine:
        return await engine.run_once()
