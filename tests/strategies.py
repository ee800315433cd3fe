"""Hypothesis strategies for the serversync model, shared by the property tests.

Every strategy is typed and builds valid values only (attrs validators hold). Datetimes are
timezone-aware (UTC or a fixed offset) and durations stay within ±100 years, the range the
converter writes exactly as float seconds.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone
from typing import TypeVar

from hypothesis import strategies as st

from serversync.model import (
    ActEntity,
    ActivityId,
    ActivityParty,
    ActRecord,
    ActSyncState,
    AddResult,
    AlreadyExists,
    AttachmentInfo,
    Attendee,
    AuthenticationProtocol,
    Checkpoint,
    ClaimToken,
    ConditionOperator,
    CorrelationMatch,
    CorrelationMethod,
    Created,
    CredentialSource,
    CrmRecord,
    DecisionReason,
    DedupeKey,
    EmailActivity,
    EmailAddress,
    EmailApprovalStatus,
    EmailDirection,
    EmailServerProfile,
    EmailStatus,
    ErrorRecord,
    EwsCheckpoint,
    ExchangeSyncIdMapping,
    FieldCondition,
    FieldValue,
    FilterGroup,
    ImapCheckpoint,
    IncomingBatch,
    IncomingDeliveryMethod,
    IncomingFilteringMethod,
    ItemOutcome,
    Mailbox,
    MailboxId,
    MailboxRunReport,
    MailboxTrackingFolder,
    MappingId,
    MessageId,
    OutcomeKind,
    OutgoingDeliveryMethod,
    ParticipationType,
    Pop3Checkpoint,
    ProfileId,
    QueueItem,
    QueueItemId,
    RecordRef,
    RecordState,
    Recurrence,
    RecurrenceKind,
    RemoteMessageRef,
    RuleDecision,
    RuleStep,
    RunReport,
    RunStatus,
    SendClaim,
    SendFailed,
    SendOutcome,
    SendReceipt,
    SendReleased,
    SendResult,
    SendRetry,
    SendSucceeded,
    SendUncertain,
    ServerEndpoint,
    ServerType,
    SkipReason,
    SyncFilter,
    TestStatus,
    TlsMode,
    TrackingFolderId,
    Workload,
    WorkloadState,
)
from serversync.model.options import ActDeliveryMethod

__all__ = [
    "act_records",
    "act_sync_states",
    "activity_parties",
    "add_results",
    "attachment_infos",
    "aware_datetimes",
    "checkpoints",
    "correlation_matches",
    "crm_records",
    "dedupe_keys",
    "durations",
    "email_activities",
    "email_address_strings",
    "email_addresses",
    "email_server_profiles",
    "error_records",
    "ews_checkpoints",
    "exchange_sync_id_mappings",
    "field_values",
    "folding_whitespace",
    "imap_checkpoints",
    "incoming_batches",
    "item_outcomes",
    "mailbox_run_reports",
    "mailbox_tracking_folders",
    "mailboxes",
    "message_ids",
    "optional",
    "pop3_checkpoints",
    "queue_items",
    "record_refs",
    "recurrences",
    "remote_message_refs",
    "rule_steps",
    "run_reports",
    "send_claims",
    "send_failed",
    "send_outcomes",
    "send_receipts",
    "send_released",
    "send_results",
    "send_retries",
    "send_succeeded",
    "send_uncertain",
    "server_endpoints",
    "sync_filters",
    "workload_states",
]

T = TypeVar("T")


def optional(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    """``None`` or a value of ``strategy``."""
    return st.none() | strategy


# --- scalars -------------------------------------------------------------------------------

_text = st.text(max_size=30)
_small_ints = st.integers(min_value=0, max_value=1_000)

_fixed_offsets: st.SearchStrategy[timezone] = st.builds(
    timezone,
    st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
        lambda minutes: timedelta(minutes=minutes)
    ),
)
# Whole seconds only: CPython 3.11 reads an offset like "+00:00:00.000001" back as UTC, and
# no real zone has sub-second offsets.
_odd_offsets: st.SearchStrategy[timezone] = st.builds(
    timezone,
    st.integers(min_value=-(24 * 3600 - 1), max_value=24 * 3600 - 1).map(
        lambda seconds: timedelta(seconds=seconds)
    ),
)


def aware_datetimes() -> st.SearchStrategy[datetime]:
    """Timezone-aware datetimes: UTC, whole-minute offsets and (rarely) second offsets."""
    zones: st.SearchStrategy[timezone] = st.one_of(st.just(UTC), _fixed_offsets, _odd_offsets)
    return st.datetimes(timezones=zones)


def durations() -> st.SearchStrategy[timedelta]:
    """Durations within ±100 years."""
    century = timedelta(days=36_525)
    return st.timedeltas(min_value=-century, max_value=century)


# --- message ids and addresses ------------------------------------------------------------

_ATEXT = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~"
# RFC 5322 dtext is %d33-90 / %d94-126, which includes "<" and ">".
_DTEXT = "".join(chr(c) for c in range(33, 127) if chr(c) not in "[]\\")
_DTEXT_WITHOUT_ANGLES = "".join(c for c in _DTEXT if c not in "<>")

_atoms = st.text(alphabet=_ATEXT, min_size=1, max_size=12)
_dot_atom = st.lists(_atoms, min_size=1, max_size=4).map(".".join)


def _domain_literals(alphabet: str) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=1, max_size=15).map(lambda t: f"[{t}]")


def message_ids(
    *, domain_literals: bool = True, angles_in_literals: bool = True
) -> st.SearchStrategy[MessageId]:
    """RFC 5322 msg-ids with their brackets: ``<dot-atom@dot-atom>`` or ``<dot-atom@[...]>``.

    ``angles_in_literals`` lets domain literals hold ``<`` and ``>`` (valid dtext, though no
    mail system is known to write them); pass ``False`` for ids other parsers must accept.
    """
    right = _dot_atom
    if domain_literals:
        right = right | _domain_literals(_DTEXT if angles_in_literals else _DTEXT_WITHOUT_ANGLES)
    return st.builds(lambda left, r: MessageId(f"<{left}@{r}>"), _dot_atom, right)


_LOCAL = string.ascii_letters + string.digits + "._+-"
_labels = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=10)


def email_address_strings() -> st.SearchStrategy[str]:
    """Plain ``local@domain`` addresses in mixed case (what CRM records and parties hold)."""
    local = st.text(alphabet=_LOCAL, min_size=1, max_size=16).filter(
        lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s
    )
    domain = st.lists(_labels, min_size=2, max_size=4).map(".".join)
    return st.builds(lambda lo, do: f"{lo}@{do}", local, domain)


def folding_whitespace() -> st.SearchStrategy[str]:
    """What sits between msg-ids in a header: spaces, tabs and CRLF/LF continuations."""
    return st.lists(
        st.sampled_from([" ", "\t", "\r\n ", "\r\n\t", "\n ", "  "]), min_size=1, max_size=3
    ).map("".join)


def email_addresses() -> st.SearchStrategy[EmailAddress]:
    """:class:`EmailAddress` from arbitrary text (the converter normalizes it)."""
    return st.builds(EmailAddress, address=email_address_strings() | _text, name=_text)


def record_refs() -> st.SearchStrategy[RecordRef]:
    """:class:`RecordRef` with a known table name or arbitrary text."""
    entity = st.sampled_from(["systemuser", "queue", "contact", "account", "lead"]) | _text
    return st.builds(RecordRef, entity=entity, id=_text)


# --- outcomes -------------------------------------------------------------------------------


def error_records() -> st.SearchStrategy[ErrorRecord]:
    """:class:`ErrorRecord` with any class name, message and retry-after duration."""
    return st.builds(
        ErrorRecord,
        error_type=_text,
        message=st.text(max_size=80),
        transient=st.booleans(),
        scope=st.sampled_from(["item", "mailbox", "engine"]) | _text,
        server_code=optional(_text),
        retry_after=optional(durations()),
    )


def workload_states() -> st.SearchStrategy[WorkloadState]:
    """:class:`WorkloadState`."""
    return st.builds(
        WorkloadState,
        next_run_at=optional(aware_datetimes()),
        consecutive_failures=_small_ints,
        last_error=optional(error_records()),
        last_error_at=optional(aware_datetimes()),
        last_sync_started_on=optional(aware_datetimes()),
        last_successful_sync_completed_on=optional(aware_datetimes()),
        items_processed_for_last_sync=_small_ints,
        items_failed_for_last_sync=_small_ints,
    )


# --- checkpoints -------------------------------------------------------------------------


def imap_checkpoints() -> st.SearchStrategy[ImapCheckpoint]:
    """:class:`ImapCheckpoint` (UIDs and MODSEQs are unsigned 32/63-bit on real servers)."""
    return st.builds(
        ImapCheckpoint,
        uidvalidity=st.integers(min_value=0, max_value=2**32 - 1),
        last_uid=st.integers(min_value=0, max_value=2**32 - 1),
        highest_modseq=optional(st.integers(min_value=0, max_value=2**63 - 1)),
    )


def pop3_checkpoints() -> st.SearchStrategy[Pop3Checkpoint]:
    """:class:`Pop3Checkpoint` with a set of UIDLs."""
    return st.builds(Pop3Checkpoint, seen_uidls=st.frozensets(_text, max_size=8))


def ews_checkpoints() -> st.SearchStrategy[EwsCheckpoint]:
    """:class:`EwsCheckpoint` with an opaque sync state."""
    return st.builds(EwsCheckpoint, sync_state=st.text(max_size=200))


def checkpoints() -> st.SearchStrategy[Checkpoint]:
    """Any :data:`Checkpoint` variant."""
    return st.one_of(imap_checkpoints(), pop3_checkpoints(), ews_checkpoints())


def remote_message_refs() -> st.SearchStrategy[RemoteMessageRef]:
    """:class:`RemoteMessageRef`."""
    return st.builds(
        RemoteMessageRef,
        folder=_text,
        remote_id=_text,
        received_at=optional(aware_datetimes()),
        size=optional(st.integers(min_value=0, max_value=2**40)),
    )


@st.composite
def incoming_batches(draw: st.DrawFn) -> IncomingBatch:
    """:class:`IncomingBatch` with one checkpoint per reference."""
    refs = draw(st.lists(remote_message_refs(), max_size=4))
    cursors = draw(st.lists(checkpoints(), min_size=len(refs), max_size=len(refs)))
    return IncomingBatch(
        folder=draw(_text),
        refs=tuple(refs),
        checkpoints=tuple(cursors),
        end=draw(optional(checkpoints())),
        reset=draw(st.booleans()),
        more=draw(st.booleans()),
    )


# --- activities ----------------------------------------------------------------------------

_activity_ids = _text.map(ActivityId)
_mailbox_ids = _text.map(MailboxId)


def activity_parties() -> st.SearchStrategy[ActivityParty]:
    """:class:`ActivityParty` in any role, resolved or not."""
    return st.builds(
        ActivityParty,
        participation=st.sampled_from(ParticipationType),
        address=email_address_strings() | _text,
        record=optional(record_refs()),
        name=_text,
    )


def attachment_infos() -> st.SearchStrategy[AttachmentInfo]:
    """:class:`AttachmentInfo`."""
    return st.builds(
        AttachmentInfo,
        filename=optional(_text),
        content_type=st.sampled_from(["text/plain", "application/pdf", "image/png"]) | _text,
        size=st.integers(min_value=0, max_value=2**40),
    )


def email_activities() -> st.SearchStrategy[EmailActivity]:
    """:class:`EmailActivity`, incoming or outgoing, with parties and sync columns."""
    return st.builds(
        EmailActivity,
        id=_activity_ids,
        direction=st.sampled_from(EmailDirection),
        status=st.sampled_from(EmailStatus),
        subject=_text,
        description=st.text(max_size=100),
        message_id=optional(message_ids()),
        in_reply_to=optional(message_ids()),
        conversation_index=optional(_text),
        tracking_token=optional(_text),
        parties=st.lists(activity_parties(), max_size=5).map(tuple),
        sender=optional(email_address_strings()),
        to_recipients=optional(_text),
        regarding=optional(record_refs()),
        owner=optional(record_refs()),
        correlation_method=st.sampled_from(CorrelationMethod),
        correlated_activity_id=optional(_activity_ids),
        parent_activity_id=optional(_activity_ids),
        accepting_entity=optional(record_refs()),
        receiving_mailbox_id=optional(_mailbox_ids),
        sender_mailbox_id=optional(_mailbox_ids),
        received_on=optional(aware_datetimes()),
        sent_on=optional(aware_datetimes()),
        delivery_attempts=_small_ints,
        postpone_sending_until=optional(aware_datetimes()),
        last_send_error=optional(error_records()),
        delivery_uncertain=st.booleans(),
        attachments=st.lists(attachment_infos(), max_size=3).map(tuple),
        internet_message_headers=st.lists(st.tuples(_text, _text), max_size=4).map(tuple),
        notifications=_small_ints,
        server_reply=optional(_text),
    )


def dedupe_keys() -> st.SearchStrategy[DedupeKey]:
    """:class:`DedupeKey`."""
    return st.builds(DedupeKey, message_id=message_ids(), direction=st.sampled_from(EmailDirection))


def queue_items() -> st.SearchStrategy[QueueItem]:
    """:class:`QueueItem`."""
    return st.builds(
        QueueItem,
        id=_text.map(QueueItemId),
        queue=record_refs(),
        activity_id=_activity_ids,
        created_on=optional(aware_datetimes()),
    )


def add_results() -> st.SearchStrategy[AddResult]:
    """Any :data:`AddResult` variant."""
    return st.one_of(
        st.builds(Created, activity_id=_activity_ids),
        st.builds(AlreadyExists, activity_id=_activity_ids),
    )


def send_claims() -> st.SearchStrategy[SendClaim]:
    """:class:`SendClaim` around any activity."""
    return st.builds(
        SendClaim,
        activity=email_activities(),
        token=_text.map(ClaimToken),
        owner=_text,
        expires_at=aware_datetimes(),
    )


def send_succeeded() -> st.SearchStrategy[SendSucceeded]:
    """:class:`SendSucceeded`."""
    return st.builds(
        SendSucceeded,
        message_id=message_ids(),
        sent_on=aware_datetimes(),
        server_reply=optional(_text),
    )


def send_retries() -> st.SearchStrategy[SendRetry]:
    """:class:`SendRetry`."""
    return st.builds(SendRetry, not_before=aware_datetimes(), error=error_records())


def send_failed() -> st.SearchStrategy[SendFailed]:
    """:class:`SendFailed`."""
    return st.builds(SendFailed, error=error_records())


def send_uncertain() -> st.SearchStrategy[SendUncertain]:
    """:class:`SendUncertain`."""
    return st.builds(SendUncertain, error=error_records())


def send_released() -> st.SearchStrategy[SendReleased]:
    """:class:`SendReleased`."""
    return st.builds(SendReleased, not_before=aware_datetimes(), error=optional(error_records()))


def send_outcomes() -> st.SearchStrategy[SendOutcome]:
    """Any :data:`SendOutcome` variant."""
    return st.one_of(
        send_succeeded(), send_retries(), send_failed(), send_uncertain(), send_released()
    )


def send_receipts() -> st.SearchStrategy[SendReceipt]:
    """:class:`SendReceipt` with refused recipients."""
    return st.builds(
        SendReceipt,
        message_id=message_ids(),
        accepted_at=aware_datetimes(),
        server_reply=optional(_text),
        refused=st.lists(st.tuples(email_address_strings(), _text), max_size=3).map(tuple),
        remote_id=optional(_text),
    )


def send_results() -> st.SearchStrategy[SendResult]:
    """:class:`SendResult`."""
    return st.builds(
        SendResult,
        activity_id=_activity_ids,
        status=st.sampled_from(EmailStatus),
        message_id=optional(message_ids()),
        subject=_text,
        recipients=st.lists(email_address_strings(), max_size=3).map(tuple),
        attempt=_small_ints,
        next_attempt_at=optional(aware_datetimes()),
        server_reply=optional(_text),
        error=optional(error_records()),
    )


def rule_steps() -> st.SearchStrategy[RuleStep]:
    """:class:`RuleStep`: one line of a decision trace."""
    return st.builds(
        RuleStep,
        rule=st.sampled_from(["invalid-sender", "filtering-method", "dedupe"]) | _text,
        decision=st.sampled_from(RuleDecision),
        reason=optional(st.sampled_from(DecisionReason)),
        explanation=_text,
    )


def item_outcomes() -> st.SearchStrategy[ItemOutcome]:
    """:class:`ItemOutcome` of any kind and reason."""
    return st.builds(
        ItemOutcome,
        mailbox_id=_mailbox_ids,
        folder=_text,
        remote_id=_text,
        kind=st.sampled_from(OutcomeKind),
        reason=optional(st.sampled_from(DecisionReason)),
        rule=optional(_text),
        explanation=_text,
        message_id=optional(message_ids()),
        subject=optional(_text),
        sender=optional(email_address_strings()),
        activity_id=optional(_activity_ids),
        error=optional(error_records()),
        trace=st.lists(rule_steps(), max_size=3).map(tuple),
    )


def mailbox_run_reports() -> st.SearchStrategy[MailboxRunReport]:
    """:class:`MailboxRunReport` with items, sends and an error."""
    return st.builds(
        MailboxRunReport,
        mailbox_id=_mailbox_ids,
        workload=st.sampled_from(Workload),
        status=st.sampled_from(RunStatus),
        started_at=aware_datetimes(),
        finished_at=aware_datetimes(),
        skip_reason=optional(st.sampled_from(SkipReason)),
        items=st.lists(item_outcomes(), max_size=3).map(tuple),
        sends=st.lists(send_results(), max_size=3).map(tuple),
        error=optional(error_records()),
    )


def run_reports() -> st.SearchStrategy[RunReport]:
    """:class:`RunReport`."""
    return st.builds(
        RunReport,
        started_at=aware_datetimes(),
        finished_at=aware_datetimes(),
        mailboxes=st.lists(mailbox_run_reports(), max_size=2).map(tuple),
    )


# --- configuration ----------------------------------------------------------------------


def server_endpoints() -> st.SearchStrategy[ServerEndpoint]:
    """:class:`ServerEndpoint`."""
    return st.builds(
        ServerEndpoint,
        host=_text,
        port=optional(st.integers(min_value=1, max_value=65_535)),
        tls=st.sampled_from(TlsMode),
        verify_certificate=st.booleans(),
        ca_file=optional(_text),
    )


def email_server_profiles() -> st.SearchStrategy[EmailServerProfile]:
    """:class:`EmailServerProfile` within its validators (1..300 connections)."""
    return st.builds(
        EmailServerProfile,
        id=_text.map(ProfileId),
        name=_text,
        server_type=st.sampled_from(ServerType),
        incoming=optional(server_endpoints()),
        outgoing=optional(server_endpoints()),
        use_same_settings_for_outgoing=st.booleans(),
        incoming_authentication=st.sampled_from(AuthenticationProtocol),
        outgoing_authentication=st.sampled_from(AuthenticationProtocol),
        incoming_credential_source=st.sampled_from(CredentialSource),
        outgoing_credential_source=st.sampled_from(CredentialSource),
        incoming_use_impersonation=st.booleans(),
        outgoing_use_impersonation=st.booleans(),
        process_emails_received_after=optional(aware_datetimes()),
        min_polling_interval=optional(durations()),
        max_concurrent_connections=st.integers(min_value=1, max_value=300),
        timeout_mailbox_connection=st.booleans(),
        timeout_mailbox_connection_after=optional(durations()),
        move_undelivered_emails=st.booleans(),
        send_email_alert=st.booleans(),
        owner_email_address=optional(email_address_strings()),
        state=st.sampled_from(RecordState),
    )


def mailboxes() -> st.SearchStrategy[Mailbox]:
    """:class:`Mailbox` of a user, a queue or a forward mailbox."""
    return st.builds(
        Mailbox,
        id=_mailbox_ids,
        name=_text,
        email_address=email_address_strings(),
        owner=optional(record_refs()),
        profile_id=optional(_text.map(ProfileId)),
        state=st.sampled_from(RecordState),
        is_forward_mailbox=st.booleans(),
        incoming_delivery_method=st.sampled_from(IncomingDeliveryMethod),
        outgoing_delivery_method=st.sampled_from(OutgoingDeliveryMethod),
        act_delivery_method=st.sampled_from(ActDeliveryMethod),
        process_email_received_after=optional(aware_datetimes()),
        process_and_delete_emails=st.booleans(),
        allow_email_connector_to_use_credentials=st.booleans(),
        username=optional(_text),
        approval=st.sampled_from(EmailApprovalStatus),
        enabled_for_incoming=st.booleans(),
        enabled_for_outgoing=st.booleans(),
        enabled_for_act=st.booleans(),
        incoming_status=st.sampled_from(TestStatus),
        outgoing_status=st.sampled_from(TestStatus),
        act_status=st.sampled_from(TestStatus),
        test_completed_on=optional(aware_datetimes()),
        undeliverable_folder=optional(_text),
    )


def crm_records() -> st.SearchStrategy[CrmRecord]:
    """:class:`CrmRecord` (users and queues with a filtering method, others without)."""
    return st.builds(
        CrmRecord,
        ref=record_refs(),
        email_address=email_address_strings() | _text,
        name=_text,
        is_active=st.booleans(),
        owner=optional(record_refs()),
        created_on=optional(aware_datetimes()),
        incoming_filtering_method=optional(st.sampled_from(IncomingFilteringMethod)),
        mailbox_id=optional(_mailbox_ids),
        approval=st.sampled_from(EmailApprovalStatus),
    )


def mailbox_tracking_folders() -> st.SearchStrategy[MailboxTrackingFolder]:
    """:class:`MailboxTrackingFolder`."""
    return st.builds(
        MailboxTrackingFolder,
        id=_text.map(TrackingFolderId),
        mailbox_id=_mailbox_ids,
        exchange_folder_id=_text,
        exchange_folder_name=optional(_text),
        regarding=optional(record_refs()),
        folder_onboarding_status=st.integers(min_value=0, max_value=3),
    )


def correlation_matches() -> st.SearchStrategy[CorrelationMatch]:
    """:class:`CorrelationMatch`."""
    return st.builds(
        CorrelationMatch,
        method=st.sampled_from(CorrelationMethod),
        correlated_activity_id=_activity_ids,
        parent_activity_id=optional(_activity_ids),
        regarding=optional(record_refs()),
        owner=optional(record_refs()),
    )


def exchange_sync_id_mappings() -> st.SearchStrategy[ExchangeSyncIdMapping]:
    """:class:`ExchangeSyncIdMapping`."""
    small = st.integers(min_value=-(2**31), max_value=2**31 - 1)
    return st.builds(
        ExchangeSyncIdMapping,
        id=_text.map(MappingId),
        owner=record_refs(),
        record=record_refs(),
        exchange_entry_id=_text,
        change_key=optional(_text),
        from_crm_change_type=optional(small),
        to_crm_change_type=optional(small),
        is_deleted_in_exchange=st.booleans(),
        is_unlinked_in_crm=st.booleans(),
        retries=_small_ints,
        last_sync_error=optional(_text),
        last_sync_error_code=optional(small),
        last_sync_error_occurred_on=optional(aware_datetimes()),
        item_subject=optional(_text),
        version_number=optional(small),
    )


# --- appointments, contacts and tasks --------------------------------------------------------


def recurrences() -> st.SearchStrategy[Recurrence]:
    """:class:`Recurrence`."""
    return st.builds(
        Recurrence,
        kind=st.sampled_from(RecurrenceKind),
        interval=st.integers(min_value=1, max_value=12),
        weekdays=st.lists(st.integers(min_value=1, max_value=7), max_size=7).map(tuple),
        day_of_month=optional(st.integers(min_value=1, max_value=31)),
        month=optional(st.integers(min_value=1, max_value=12)),
        start_date=st.dates(),
        end_date=optional(st.dates()),
        count=optional(_small_ints),
        time_zone=_text,
    )


def field_values() -> st.SearchStrategy[FieldValue]:
    """One ACT field value of any of its types."""
    attendees = st.lists(
        st.builds(Attendee, address=_text, optional=st.booleans()), max_size=3
    ).map(tuple)
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        _text,
        aware_datetimes(),
        st.dates(),
        recurrences(),
        attendees,
    )


def act_records() -> st.SearchStrategy[ActRecord]:
    """:class:`ActRecord` with fields of every value type."""
    return st.builds(
        ActRecord,
        ref=record_refs(),
        owner=record_refs(),
        fields=st.dictionaries(_text, field_values(), max_size=6),
        version=_text,
        modified_on=aware_datetimes(),
        organizer=optional(_text),
        series=optional(record_refs()),
        original_start=optional(aware_datetimes()),
    )


def sync_filters() -> st.SearchStrategy[SyncFilter]:
    """:class:`SyncFilter` with nested groups and conditions on single values and lists."""
    values = field_values() | st.lists(field_values(), max_size=3).map(tuple)
    conditions = st.builds(
        FieldCondition, field=_text, operator=st.sampled_from(ConditionOperator), value=values
    )
    groups = st.recursive(
        st.builds(FilterGroup, any_of=st.booleans(), conditions=st.lists(conditions).map(tuple)),
        lambda inner: st.builds(
            FilterGroup,
            any_of=st.booleans(),
            conditions=st.lists(conditions, max_size=3).map(tuple),
            groups=st.lists(inner, max_size=2).map(tuple),
        ),
        max_leaves=4,
    )
    return st.builds(
        SyncFilter,
        id=_text,
        name=_text,
        owner=record_refs(),
        entity=st.sampled_from(ActEntity),
        criteria=groups,
        enabled=st.booleans(),
    )


def act_sync_states() -> st.SearchStrategy[ActSyncState]:
    """:class:`ActSyncState`."""
    return st.builds(
        ActSyncState,
        mailbox_id=_mailbox_ids,
        entity=st.sampled_from(ActEntity),
        exchange_state=optional(_text),
        crm_modified_after=optional(aware_datetimes()),
    )
