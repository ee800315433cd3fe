"""plan_act_sync: the steps of one cycle, decided from values alone."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from serversync.act import (
    CreateInCrm,
    CreateInExchange,
    Echo,
    MarkDeletedInExchange,
    Skip,
    UpdateLinked,
    fingerprints,
    items_to_read,
    plan_act_sync,
)
from serversync.act.plan import ActStep
from serversync.model import (
    ActEntity,
    ActRecord,
    ExchangeItem,
    ExchangeItemKey,
    ExchangeSyncIdMapping,
    FieldValues,
    MappingId,
    RecordRef,
)
from serversync.settings import ActSettings
from serversync.testing import a_sync_filter

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
ALICE = RecordRef("systemuser", "alice")
FILTERS = [a_sync_filter(ALICE, ActEntity.CONTACT)]


def _record(n: int, fields: FieldValues, *, at: datetime = NOW, **extra: Any) -> ActRecord:
    return ActRecord(
        ref=RecordRef("contact", f"c{n}"),
        owner=ALICE,
        fields=fields,
        version=f"v{n}",
        modified_on=at,
        **extra,
    )


def _item(
    n: int, fields: FieldValues, *, key: str = "k1", at: datetime = NOW, **extra: Any
) -> ExchangeItem:
    return ExchangeItem(
        entity=ActEntity.CONTACT,
        key=ExchangeItemKey(item_id=f"i{n}", change_key=key),
        fields=fields,
        last_modified=at,
        **extra,
    )


def _mapping(
    record: ActRecord, item_id: str, synced: FieldValues, **extra: Any
) -> ExchangeSyncIdMapping:
    return ExchangeSyncIdMapping(
        id=MappingId(f"m-{record.ref.id}"),
        owner=ALICE,
        record=record.ref,
        exchange_entry_id=item_id,
        change_key="k1",
        record_version=record.version,
        record_owner=ALICE,
        synced_values=fingerprints(synced, synced),
        **extra,
    )


def _plan(
    *,
    mappings: Sequence[ExchangeSyncIdMapping] = (),
    candidates: Sequence[ActRecord] = (),
    mapped: Sequence[ActRecord] = (),
    changed: Sequence[ExchangeItem] = (),
    deleted: Sequence[str] = (),
    current: Sequence[ExchangeItem] = (),
    settings: ActSettings | None = None,
    held: frozenset[str] | None = None,
) -> tuple[ActStep, ...]:
    return plan_act_sync(
        ActEntity.CONTACT,
        user=ALICE,
        mailbox_address="alice@x.example",
        mappings=mappings,
        candidates=candidates,
        mapped_records={r.ref: r for r in mapped},
        filters=FILTERS,
        exchange_changed=changed,
        exchange_deleted=deleted,
        current_items={i.key.item_id: i for i in current},
        settings=settings or ActSettings(),
        now=NOW,
        held_fields=held,
    ).steps


def test_a_new_record_is_created_in_exchange_with_its_synchronized_fields() -> None:
    record = _record(1, {"last_name": "Lovelace", "not_a_field": "x"})
    (step,) = _plan(candidates=[record])
    assert isinstance(step, CreateInExchange)
    assert step.fields == {"last_name": "Lovelace"}
    assert step.synced == fingerprints(step.fields, step.fields)


def test_a_change_key_equal_to_the_mapping_is_an_echo() -> None:
    record = _record(1, {"last_name": "Lovelace"})
    mapping = _mapping(record, "i1", {"last_name": "Lovelace"})
    (step,) = _plan(mappings=[mapping], mapped=[record], changed=[_item(1, {"last_name": "X"})])
    assert isinstance(step, Echo), "the change key says it is our own write"


def test_an_unchanged_pair_yields_no_step() -> None:
    record = _record(1, {"last_name": "Lovelace"})
    mapping = _mapping(record, "i1", {"last_name": "Lovelace"})
    assert _plan(mappings=[mapping], mapped=[record], candidates=[record]) == ()


def test_changes_on_both_sides_to_different_fields_both_flow() -> None:
    record = _record(1, {"last_name": "Lovelace", "job_title": "Countess"})
    mapping = _mapping(record, "i1", {"last_name": "Lovelace", "job_title": "Analyst"})
    item = _item(1, {"last_name": "King", "job_title": "Analyst"}, key="k2")
    (step,) = _plan(mappings=[mapping], mapped=[record], changed=[item])
    assert isinstance(step, UpdateLinked)
    assert step.to_exchange == {"job_title": "Countess"}
    assert step.to_crm == {"last_name": "King"}
    assert step.conflicts == ()
    assert step.item == item


def test_the_same_change_on_both_sides_is_no_conflict() -> None:
    record = _record(1, {"last_name": "King"})
    mapping = _mapping(record, "i1", {"last_name": "Lovelace"})
    item = _item(1, {"last_name": "King"}, key="k2")
    (step,) = _plan(mappings=[mapping], mapped=[record], changed=[item])
    assert isinstance(step, UpdateLinked)
    assert step.to_exchange == {}
    assert step.to_crm == {}
    assert step.conflicts == ()
    assert step.synced == fingerprints({"last_name": "King"}, ["last_name"])


def test_an_exchange_delete_comes_first_and_follows_the_entity_rule() -> None:
    record = _record(1, {"last_name": "Lovelace"})
    mapping = _mapping(record, "i1", {"last_name": "Lovelace"})
    steps = _plan(
        mappings=[mapping],
        mapped=[record],
        deleted=["i1"],
        candidates=[_record(2, {"last_name": "New"})],
    )
    first, second = steps
    assert isinstance(first, MarkDeletedInExchange), "a contact deleted in Exchange is kept"
    assert first.mapping == mapping
    assert isinstance(second, CreateInExchange)


def test_a_record_that_failed_too_often_waits_for_a_new_change() -> None:
    settings = ActSettings(max_item_attempts=2)
    record = _record(1, {"last_name": "Poison"})
    failed = attrs.evolve(
        _mapping(record, "", {}),
        retries=2,
        last_sync_error="refused",
        last_sync_error_occurred_on=NOW,
    )
    (step,) = _plan(mappings=[failed], candidates=[record], mapped=[record], settings=settings)
    assert isinstance(step, Skip)
    changed = attrs.evolve(record, modified_on=NOW + timedelta(minutes=1))
    (retry,) = _plan(mappings=[failed], candidates=[changed], mapped=[changed], settings=settings)
    assert isinstance(retry, CreateInExchange)
    assert retry.mapping == failed, "the retry keeps the failed mapping and its count"


def test_exceptions_are_created_after_their_master() -> None:
    master = _record(1, {"subject": "Weekly"}, at=NOW)
    exception = _record(2, {"subject": "Moved"}, at=NOW - timedelta(hours=1), series=master.ref)
    steps = _plan(candidates=[exception, master])
    assert [s.record.ref for s in steps if isinstance(s, CreateInExchange)] == [
        master.ref,
        exception.ref,
    ]
    new_master = _item(1, {"subject": "Weekly"}, at=NOW)
    new_exception = _item(2, {"subject": "Moved"}, at=NOW - timedelta(hours=1), series_id="i1")
    imports = _plan(changed=[new_exception, new_master])
    assert [s.item.key.item_id for s in imports if isinstance(s, CreateInCrm)] == ["i1", "i2"]


def test_items_to_read_are_those_the_delete_rules_and_retries_need() -> None:
    kept = _record(1, {"last_name": "Kept"})
    gone = _record(2, {"last_name": "Gone"})
    retry = _record(3, {"last_name": "Retry"})
    mappings = [
        _mapping(kept, "i1", {"last_name": "Kept"}),
        _mapping(gone, "i2", {"last_name": "Gone"}),
        attrs.evolve(_mapping(retry, "i3", {"last_name": "Retry"}), last_sync_error="x", retries=1),
    ]
    wanted = items_to_read(
        ActEntity.CONTACT,
        user=ALICE,
        mappings=mappings,
        mapped_records={kept.ref: kept, retry.ref: retry},
        filters=FILTERS,
        changed=["i3"],
        settings=ActSettings(),
    )
    assert wanted == ("i2",), "the changed one is already read"


def test_a_retried_pair_whose_item_is_gone_follows_the_exchange_delete_rule() -> None:
    record = _record(1, {"last_name": "Lovelace"})
    failed = attrs.evolve(
        _mapping(record, "i1", {"last_name": "Old"}),
        retries=1,
        last_sync_error="conflict",
        last_sync_error_occurred_on=NOW,
    )
    (step,) = _plan(mappings=[failed], mapped=[record], current=[])
    assert isinstance(step, MarkDeletedInExchange), "read for the retry and not found"


def test_behaviour_14_a_crm_change_to_an_exchange_to_crm_field_is_not_written_to_exchange() -> None:
    from serversync.model import SyncDirection

    settings = ActSettings(field_directions={ActEntity.CONTACT: {"body": SyncDirection.TO_CRM}})
    record = _record(1, {"last_name": "Lovelace", "body": "CRM notes"})
    mapping = _mapping(record, "i1", {"last_name": "Lovelace", "body": "old"})
    steps = _plan(mappings=[mapping], mapped=[record], candidates=[record], settings=settings)
    assert steps == (), "a CRM change of an Exchange → CRM field stays in the CRM"
    item = _item(1, {"last_name": "Lovelace", "body": "Outlook notes"}, key="k2")
    (back,) = _plan(mappings=[mapping], mapped=[record], changed=[item], settings=settings)
    assert isinstance(back, UpdateLinked)
    assert back.to_crm == {"body": "Outlook notes"}
    assert back.conflicts == (), "a one-way field takes its direction, never a conflict"


HELD = frozenset({"first_name", "last_name", "job_title"})


def test_a_field_exchange_does_not_hold_is_never_sent() -> None:
    record = _record(1, {"last_name": "Lovelace", "salutation": "Dr."})
    (step,) = _plan(candidates=[record], held=HELD)
    assert isinstance(step, CreateInExchange)
    assert step.fields == {"last_name": "Lovelace"}

    mapping = _mapping(record, "i1", {"last_name": "Lovelace"})
    edited = attrs.evolve(
        _record(1, {"last_name": "Lovelace", "salutation": "Prof."}), version="v2"
    )
    (update,) = _plan(mappings=[mapping], mapped=[edited], held=HELD)
    assert isinstance(update, UpdateLinked)
    assert (update.to_exchange, update.to_crm) == ({}, {}), (
        "a change to a field Exchange does not hold is nothing to write"
    )
    assert "salutation" not in update.synced


def test_a_field_absent_from_the_exchange_item_is_not_a_change_to_empty() -> None:
    record = _record(1, {"last_name": "Lovelace", "salutation": "Dr.", "job_title": "Analyst"})
    mapping = _mapping(record, "i1", {"last_name": "Lovelace", "job_title": "Analyst"})
    item = _item(1, {"last_name": "Lovelace", "job_title": "Countess"}, key="k2")
    (step,) = _plan(mappings=[mapping], mapped=[record], changed=[item], held=HELD)
    assert isinstance(step, UpdateLinked)
    assert step.to_crm == {"job_title": "Countess"}, "salutation is absent, not emptied"
    assert step.to_exchange == {}
