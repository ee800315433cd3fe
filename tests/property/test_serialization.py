"""``make_converter()`` round-trips every model type, also through JSON text."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import cattrs
import pytest
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serversync.model import (
    ActivityId,
    ActivityParty,
    ActRecord,
    ActSyncState,
    AddResult,
    AlreadyExists,
    AttachmentInfo,
    Checkpoint,
    CorrelationMatch,
    CredentialKind,
    Credentials,
    CrmRecord,
    DedupeKey,
    EmailActivity,
    EmailAddress,
    EmailServerProfile,
    ErrorRecord,
    EwsCheckpoint,
    ExchangeSyncIdMapping,
    ImapCheckpoint,
    IncomingBatch,
    ItemOutcome,
    Mailbox,
    MailboxRunReport,
    MailboxTrackingFolder,
    MessageId,
    Pop3Checkpoint,
    QueueItem,
    RecordRef,
    RemoteMessageRef,
    RuleStep,
    RunReport,
    Secret,
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
    SyncFilter,
    WorkloadState,
)
from serversync.serialization import make_converter
from tests import strategies as s

CONVERTER = make_converter()

# (type to unstructure and structure as, strategy of values of that type)
CASES: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (MessageId, s.message_ids()),
    (EmailAddress, s.email_addresses()),
    (RecordRef, s.record_refs()),
    (ErrorRecord, s.error_records()),
    (WorkloadState, s.workload_states()),
    (ImapCheckpoint, s.imap_checkpoints()),
    (Pop3Checkpoint, s.pop3_checkpoints()),
    (EwsCheckpoint, s.ews_checkpoints()),
    (Checkpoint, s.checkpoints()),
    (IncomingBatch, s.incoming_batches()),
    (RemoteMessageRef, s.remote_message_refs()),
    (ActivityParty, s.activity_parties()),
    (AttachmentInfo, s.attachment_infos()),
    (EmailActivity, s.email_activities()),
    (DedupeKey, s.dedupe_keys()),
    (QueueItem, s.queue_items()),
    (AddResult, s.add_results()),
    (SendClaim, s.send_claims()),
    (SendSucceeded, s.send_succeeded()),
    (SendRetry, s.send_retries()),
    (SendFailed, s.send_failed()),
    (SendUncertain, s.send_uncertain()),
    (SendReleased, s.send_released()),
    (SendOutcome, s.send_outcomes()),
    (SendReceipt, s.send_receipts()),
    (SendResult, s.send_results()),
    (RuleStep, s.rule_steps()),
    (ItemOutcome, s.item_outcomes()),
    (MailboxRunReport, s.mailbox_run_reports()),
    (RunReport, s.run_reports()),
    (ServerEndpoint, s.server_endpoints()),
    (EmailServerProfile, s.email_server_profiles()),
    (Mailbox, s.mailboxes()),
    (CrmRecord, s.crm_records()),
    (MailboxTrackingFolder, s.mailbox_tracking_folders()),
    (CorrelationMatch, s.correlation_matches()),
    (ExchangeSyncIdMapping, s.exchange_sync_id_mappings()),
    (ActRecord, s.act_records()),
    (SyncFilter, s.sync_filters()),
    (ActSyncState, s.act_sync_states()),
]

UNIONS: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (Checkpoint, s.checkpoints()),
    (SendOutcome, s.send_outcomes()),
    (AddResult, s.add_results()),
]


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)


_PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.parametrize(("tp", "strategy"), CASES, ids=[_name(tp) for tp, _ in CASES])
@_PROPERTY_SETTINGS
@given(data=st.data())
def test_round_trips(tp: Any, strategy: st.SearchStrategy[Any], data: st.DataObject) -> None:
    value = data.draw(strategy, label="value")
    primitive = CONVERTER.unstructure(value, tp)
    assert CONVERTER.structure(primitive, tp) == value


@pytest.mark.parametrize(("tp", "strategy"), CASES, ids=[_name(tp) for tp, _ in CASES])
@_PROPERTY_SETTINGS
@given(data=st.data())
def test_round_trips_through_json_text(
    tp: Any, strategy: st.SearchStrategy[Any], data: st.DataObject
) -> None:
    value = data.draw(strategy, label="value")
    text = json.dumps(CONVERTER.unstructure(value, tp), allow_nan=False)
    assert CONVERTER.structure(json.loads(text), tp) == value


@pytest.mark.parametrize(("union", "strategy"), UNIONS, ids=[_name(u) for u, _ in UNIONS])
@_PROPERTY_SETTINGS
@given(data=st.data())
def test_unions_are_tagged_with_the_class_name(
    union: Any, strategy: st.SearchStrategy[Any], data: st.DataObject
) -> None:
    value = data.draw(strategy, label="value")
    primitive = CONVERTER.unstructure(value, union)
    assert isinstance(primitive, dict)
    assert primitive["type"] == type(value).__name__
    back = CONVERTER.structure(json.loads(json.dumps(primitive)), union)
    assert type(back) is type(value)
    assert back == value


@given(st.lists(s.checkpoints(), max_size=5))
def test_a_sequence_of_checkpoints_keeps_each_variant(values: list[Checkpoint]) -> None:
    as_type = tuple[Checkpoint, ...]
    primitive = CONVERTER.unstructure(tuple(values), as_type)
    back = CONVERTER.structure(json.loads(json.dumps(primitive)), as_type)
    assert [type(v) for v in back] == [type(v) for v in values]
    assert back == tuple(values)


def test_values_become_json_primitives() -> None:
    """Datetimes are ISO strings, durations float seconds, enums their values, sets sorted."""
    when = datetime(2026, 1, 5, 8, 30, tzinfo=UTC)
    record = ErrorRecord(
        error_type="ServerBusyError",
        message="slow down",
        transient=True,
        scope="mailbox",
        retry_after=timedelta(minutes=2, microseconds=5),
    )
    assert CONVERTER.unstructure(record)["retry_after"] == 120.000005
    retry = CONVERTER.unstructure(SendRetry(not_before=when, error=record), SendOutcome)
    assert retry["not_before"] == "2026-01-05T08:30:00+00:00"
    assert retry["type"] == "SendRetry"
    pop3 = CONVERTER.unstructure(Pop3Checkpoint(seen_uidls=frozenset({"b", "a", "c"})))
    assert pop3 == {"seen_uidls": ["a", "b", "c"]}


def test_structure_forbids_extra_keys() -> None:
    primitive = CONVERTER.unstructure(RecordRef("contact", "1"))
    primitive["unexpected"] = "x"
    with pytest.raises(ClassValidationError) as excinfo:
        CONVERTER.structure(primitive, RecordRef)
    extras = [e for e in excinfo.value.exceptions if isinstance(e, ForbiddenExtraKeysError)]
    assert [e.extra_fields for e in extras] == [{"unexpected"}]


def test_unstructuring_a_secret_raises_type_error() -> None:
    with pytest.raises(TypeError) as excinfo:
        CONVERTER.unstructure(Secret("hunter2"))
    assert "hunter2" not in str(excinfo.value)


@pytest.mark.parametrize("kind", list(CredentialKind))
def test_unstructuring_credentials_raises_type_error(kind: CredentialKind) -> None:
    credentials = Credentials(username="alice", secret=Secret("hunter2"), kind=kind)
    with pytest.raises(TypeError) as excinfo:
        CONVERTER.unstructure(credentials)
    assert "hunter2" not in str(excinfo.value)
    with pytest.raises(TypeError):
        CONVERTER.unstructure(credentials, Credentials)


def test_converters_are_independent() -> None:
    first = make_converter()
    second = make_converter()
    assert first is not second
    first.register_unstructure_hook(RecordRef, lambda ref: "overridden")
    assert first.unstructure(RecordRef("contact", "1")) == "overridden"
    assert second.unstructure(RecordRef("contact", "1")) == {"entity": "contact", "id": "1"}
    assert make_converter().unstructure(RecordRef("contact", "1")) == {
        "entity": "contact",
        "id": "1",
    }


def test_the_global_cattrs_converter_is_unaffected() -> None:
    make_converter()
    when = datetime(2026, 1, 5, tzinfo=UTC)
    assert cattrs.unstructure(when) is when
    assert cattrs.unstructure(timedelta(seconds=3)) == timedelta(seconds=3)
    assert cattrs.global_converter.unstructure(Secret("x")) is not None  # no refusal hook
    tagged = cattrs.global_converter.unstructure(
        ImapCheckpoint(uidvalidity=1, last_uid=2), unstructure_as=Checkpoint
    )
    assert "type" not in tagged
    assert cattrs.unstructure(AlreadyExists(activity_id=ActivityId("a"))) == {"activity_id": "a"}
