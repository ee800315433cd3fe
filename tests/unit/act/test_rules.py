"""The pure ACT decisions: field directions, filters, fingerprints, conflicts and deletes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from serversync.act import (
    FIELDS,
    FIXED_TWO_WAY,
    ConflictDecision,
    DeleteOutcome,
    FieldConflict,
    Side,
    changed_fields,
    decision_of,
    field_directions,
    fingerprint,
    fingerprints,
    in_sync_scope,
    matches,
    on_cancellation,
    on_crm_delete,
    on_exchange_delete,
    on_left_filters,
    resolve_conflict,
)
from serversync.errors import ConfigurationError
from serversync.model import (
    ActEntity,
    ActRecord,
    Attendee,
    ConditionOperator,
    ConflictWinner,
    ExchangeItem,
    ExchangeItemKey,
    FieldCondition,
    FieldValues,
    FilterGroup,
    RecordRef,
    SyncDirection,
)
from serversync.settings import ConflictPolicy
from serversync.testing import a_sync_filter

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
ALICE = RecordRef("systemuser", "alice")
BOB = RecordRef("systemuser", "bob")


def _record(
    entity: ActEntity = ActEntity.CONTACT, owner: RecordRef = ALICE, **fields: object
) -> ActRecord:
    return ActRecord(
        ref=RecordRef(entity.value, "r1"),
        owner=owner,
        fields=fields,  # type: ignore[arg-type]
        version="1",
        modified_on=NOW,
    )


def _item(
    entity: ActEntity = ActEntity.APPOINTMENT, organizer: str | None = None, **fields: object
) -> ExchangeItem:
    return ExchangeItem(
        entity=entity,
        key=ExchangeItemKey(item_id="i1", change_key="c1"),
        fields=fields,  # type: ignore[arg-type]
        last_modified=NOW,
        organizer=organizer,
    )


# -- fields --------------------------------------------------------------------------------


def test_appointment_time_attendees_organizer_and_regarding_are_fixed_two_way() -> None:
    fixed = {
        n for n, spec in FIELDS[ActEntity.APPOINTMENT].items() if spec.allowed == FIXED_TWO_WAY
    }
    assert {
        "start",
        "end",
        "importance",
        "attendees",
        "organizer",
        "regarding",
        "show_time_as",
    } <= fixed
    assert {"subject", "body", "location"}.isdisjoint(fixed)


def test_defaults_are_two_way_and_one_mailing_address() -> None:
    directions = field_directions(ActEntity.CONTACT)
    assert directions["email1"] is SyncDirection.TWO_WAY
    assert directions["business_address_city"] is SyncDirection.TWO_WAY
    assert directions["home_address_city"] is SyncDirection.NONE
    every = field_directions(ActEntity.CONTACT, all_contact_addresses=True)
    assert every["home_address_city"] is SyncDirection.TWO_WAY


def test_overrides_apply_within_what_a_field_allows() -> None:
    directions = field_directions(
        ActEntity.APPOINTMENT, {ActEntity.APPOINTMENT: {"body": SyncDirection.TO_CRM}}
    )
    assert directions["body"] is SyncDirection.TO_CRM
    with pytest.raises(ConfigurationError, match="cannot sync"):
        field_directions(
            ActEntity.APPOINTMENT, {ActEntity.APPOINTMENT: {"end": SyncDirection.NONE}}
        )
    with pytest.raises(ConfigurationError, match="no synchronized field"):
        field_directions(ActEntity.TASK, {ActEntity.TASK: {"colour": SyncDirection.NONE}})


# -- filters -------------------------------------------------------------------------------


def _group(*conditions: FieldCondition, any_of: bool = False) -> FilterGroup:
    return FilterGroup(conditions=conditions, any_of=any_of)


def test_conditions_follow_fetchxml() -> None:
    record = _record(last_name="Lovelace", state="active", rating=3, email1=None)
    assert matches(
        _group(FieldCondition(field="owner", operator=ConditionOperator.EQ_USERID)), record, ALICE
    )
    assert not matches(
        _group(FieldCondition(field="owner", operator=ConditionOperator.EQ_USERID)), record, BOB
    )
    assert matches(
        _group(FieldCondition(field="last_name", operator=ConditionOperator.EQ, value="LOVELACE")),
        record,
        ALICE,
    )
    assert matches(
        _group(FieldCondition(field="last_name", operator=ConditionOperator.LIKE, value="love%")),
        record,
        ALICE,
    )
    assert matches(
        _group(FieldCondition(field="state", operator=ConditionOperator.IN, value=("active", "x"))),
        record,
        ALICE,
    )
    assert matches(
        _group(FieldCondition(field="email1", operator=ConditionOperator.NULL)), record, ALICE
    )
    assert not matches(
        _group(FieldCondition(field="email1", operator=ConditionOperator.NE, value="a")),
        record,
        ALICE,
    ), "a comparison with null is false"
    assert matches(
        _group(FieldCondition(field="rating", operator=ConditionOperator.GE, value=3)),
        record,
        ALICE,
    )
    assert not matches(
        _group(FieldCondition(field="rating", operator=ConditionOperator.LE, value="x")),
        record,
        ALICE,
    )
    either = _group(
        FieldCondition(field="state", operator=ConditionOperator.EQ, value="gone"),
        FieldCondition(field="rating", operator=ConditionOperator.EQ, value=3),
        any_of=True,
    )
    assert matches(either, record, ALICE)


values = st.one_of(st.none(), st.text(max_size=5), st.integers(-3, 3), st.booleans())
operators = st.sampled_from([o for o in ConditionOperator if o is not ConditionOperator.EQ_USERID])
conditions = st.builds(
    FieldCondition,
    field=st.sampled_from(["a", "b", "owner"]),
    operator=operators,
    value=st.one_of(values, st.tuples(values, values)),
)
groups = st.recursive(
    st.builds(
        FilterGroup, any_of=st.booleans(), conditions=st.lists(conditions, max_size=3).map(tuple)
    ),
    lambda children: st.builds(
        FilterGroup,
        any_of=st.booleans(),
        conditions=st.lists(conditions, max_size=2).map(tuple),
        groups=st.lists(children, max_size=2).map(tuple),
    ),
    max_leaves=6,
)
records = st.builds(
    lambda a, b, owner: _record(owner=owner, a=a, b=b),
    values,
    values,
    st.sampled_from([ALICE, BOB]),
)


@given(record=records, criteria=st.lists(groups, max_size=3), extra=groups)
def test_filters_are_a_union_and_adding_one_never_narrows(
    record: ActRecord, criteria: list[FilterGroup], extra: FilterGroup
) -> None:
    filters = [a_sync_filter(ALICE, ActEntity.CONTACT, criteria=c) for c in criteria]
    union = in_sync_scope(record, filters, ALICE)
    assert union == any(matches(c, record, ALICE) for c in criteria)
    more = [*filters, a_sync_filter(ALICE, ActEntity.CONTACT, criteria=extra)]
    assert in_sync_scope(record, more, ALICE) >= union, "adding a filter never narrows"


@given(record=records, criteria=st.lists(groups, max_size=3))
def test_behaviour_13_no_enabled_filter_means_nothing_syncs(
    record: ActRecord, criteria: list[FilterGroup]
) -> None:
    disabled = [
        a_sync_filter(ALICE, ActEntity.CONTACT, criteria=c, enabled=False) for c in criteria
    ]
    other_entity = [a_sync_filter(ALICE, ActEntity.TASK, criteria=FilterGroup())]
    assert not in_sync_scope(record, [*disabled, *other_entity], ALICE)


# -- fingerprints --------------------------------------------------------------------------


def test_fingerprints_compare_instants_and_normalise_text() -> None:
    utc = datetime(2030, 3, 31, 1, 30, tzinfo=UTC)
    berlin = utc.astimezone(timezone(timedelta(hours=2)))
    assert fingerprint(utc) == fingerprint(berlin), "the same instant in two zones"
    assert fingerprint("a\r\nb") == fingerprint("a\nb")
    assert fingerprint("") == fingerprint(None) == fingerprint(())
    assert fingerprint(2) == fingerprint(2.0)
    assert fingerprint(True) != fingerprint(1)
    assert fingerprint(date(2030, 1, 1)) != fingerprint(datetime(2030, 1, 1, tzinfo=UTC))
    one = (Attendee(address="A@x.example"), Attendee(address="b@x.example", optional=True))
    assert fingerprint(one) == fingerprint(tuple(reversed(one))), "attendees are a set"
    assert fingerprint(one) != fingerprint(one[:1])


@given(
    st.one_of(
        st.text(),
        st.integers(),
        st.floats(allow_nan=False),
        st.booleans(),
        st.none(),
        st.datetimes(timezones=st.just(UTC)),
    )
)
@example("é")
def test_a_fingerprint_is_a_stable_sha256(value: object) -> None:
    print_ = fingerprint(value)  # type: ignore[arg-type]
    assert len(print_) == 64
    assert print_ == fingerprint(value)  # type: ignore[arg-type]


def test_changed_fields_compares_with_the_synced_fingerprints() -> None:
    synced = fingerprints({"a": "x", "b": 1}, ["a", "b"])
    values: FieldValues = {"a": "x", "b": 2, "c": "new", "d": None}
    assert changed_fields(values, synced, ["a", "b", "c", "d", "e"]) == {"b", "c"}


# -- conflicts -----------------------------------------------------------------------------


def test_the_default_policy_is_latest_wins_with_ties_to_the_crm() -> None:
    policy = ConflictPolicy()
    later = NOW + timedelta(seconds=1)
    assert (
        resolve_conflict(
            ActEntity.CONTACT, "a", policy, crm_modified_on=NOW, exchange_modified_on=later
        ).winner
        is Side.EXCHANGE
    )
    assert (
        resolve_conflict(
            ActEntity.CONTACT, "a", policy, crm_modified_on=later, exchange_modified_on=NOW
        ).winner
        is Side.CRM
    )
    tie = resolve_conflict(
        ActEntity.CONTACT, "a", policy, crm_modified_on=NOW, exchange_modified_on=NOW
    )
    assert tie.winner is Side.CRM


def test_field_rules_beat_entity_rules_beat_the_default() -> None:
    policy = ConflictPolicy(
        default=ConflictWinner.EXCHANGE,
        entities={ActEntity.TASK: ConflictWinner.CRM},
        fields={(ActEntity.TASK, "status"): ConflictWinner.LATEST},
    )
    assert policy.winner_for(ActEntity.CONTACT, "a") is ConflictWinner.EXCHANGE
    assert policy.winner_for(ActEntity.TASK, "subject") is ConflictWinner.CRM
    assert policy.winner_for(ActEntity.TASK, "status") is ConflictWinner.LATEST


def test_the_decision_recorded_on_the_mapping() -> None:
    crm = FieldConflict(field="a", rule=ConflictWinner.CRM, winner=Side.CRM)
    exchange = FieldConflict(field="b", rule=ConflictWinner.EXCHANGE, winner=Side.EXCHANGE)
    assert decision_of(()) is None
    assert decision_of((crm,)) is ConflictDecision.CRM_WON
    assert decision_of((crm, exchange)) is ConflictDecision.EXCHANGE_WON


# -- deletes -------------------------------------------------------------------------------


def test_exchange_deletes_delete_appointments_and_tasks_but_keep_contacts() -> None:
    assert on_exchange_delete(ActEntity.APPOINTMENT).outcome is DeleteOutcome.DELETE_CRM_RECORD
    assert on_exchange_delete(ActEntity.TASK).outcome is DeleteOutcome.DELETE_CRM_RECORD
    assert on_exchange_delete(ActEntity.CONTACT).outcome is DeleteOutcome.KEEP_CRM_RECORD


@pytest.mark.parametrize(
    ("owner", "organizer", "start", "outcome"),
    [
        (ALICE, None, NOW + timedelta(hours=1), DeleteOutcome.DELETE_EXCHANGE_ITEM),
        (BOB, "alice@x.example", NOW + timedelta(hours=1), DeleteOutcome.DELETE_EXCHANGE_ITEM),
        (BOB, "carol@x.example", NOW + timedelta(hours=1), DeleteOutcome.KEEP_EXCHANGE_ITEM),
        (ALICE, None, NOW - timedelta(days=1), DeleteOutcome.KEEP_EXCHANGE_ITEM),
        (ALICE, None, NOW - timedelta(minutes=30), DeleteOutcome.DELETE_EXCHANGE_ITEM),
    ],
)
def test_crm_appointment_deletes(
    owner: RecordRef, organizer: str | None, start: datetime, outcome: DeleteOutcome
) -> None:
    item = _item(organizer=organizer, start=start, end=start + timedelta(hours=1))
    decision = on_crm_delete(
        ActEntity.APPOINTMENT,
        user=ALICE,
        mailbox_address="Alice@x.example",
        record_owner=owner,
        item=item,
        now=NOW,
    )
    assert decision.outcome is outcome


def _crm_delete(entity: ActEntity, owner: RecordRef, item: ExchangeItem) -> DeleteOutcome:
    return on_crm_delete(
        entity,
        user=ALICE,
        mailbox_address="alice@x.example",
        record_owner=owner,
        item=item,
        now=NOW,
    ).outcome


def test_crm_contact_and_task_deletes() -> None:
    contact = _item(ActEntity.CONTACT)
    assert _crm_delete(ActEntity.CONTACT, ALICE, contact) is DeleteOutcome.KEEP_EXCHANGE_ITEM
    assert _crm_delete(ActEntity.CONTACT, BOB, contact) is DeleteOutcome.DELETE_EXCHANGE_ITEM
    open_task = _item(ActEntity.TASK, status="in_progress")
    done_task = _item(ActEntity.TASK, percent_complete=100)
    assert _crm_delete(ActEntity.TASK, ALICE, open_task) is DeleteOutcome.DELETE_EXCHANGE_ITEM
    assert _crm_delete(ActEntity.TASK, ALICE, done_task) is DeleteOutcome.KEEP_EXCHANGE_ITEM


@pytest.mark.parametrize(
    ("distinct", "outcome"),
    [(True, DeleteOutcome.UNLINK), (False, DeleteOutcome.DELETE_EXCHANGE_ITEM)],
)
def test_leaving_the_filters_unlinks_only_with_distinct_logical_deletes(
    distinct: bool, outcome: DeleteOutcome
) -> None:
    decision = on_left_filters(
        ActEntity.TASK,
        distinct_physical_and_logical_deletes=distinct,
        user=ALICE,
        mailbox_address="alice@x.example",
        record_owner=ALICE,
        item=_item(ActEntity.TASK, status="in_progress"),
        now=NOW,
    )
    assert decision.outcome is outcome


def test_cancellations_need_the_switch_the_organizer_and_a_future_meeting() -> None:
    cancelled = _record(ActEntity.APPOINTMENT, state="canceled")
    future = _item(organizer="alice@x.example", start=NOW + timedelta(days=1))
    past = _item(organizer="alice@x.example", start=NOW - timedelta(days=1))
    decision = on_cancellation(
        cancelled, propagate=True, mailbox_address="alice@x.example", item=future, now=NOW
    )
    assert decision is not None
    assert decision.send_cancellations
    assert (
        on_cancellation(
            cancelled, propagate=False, mailbox_address="alice@x.example", item=future, now=NOW
        )
        is None
    )
    assert (
        on_cancellation(
            cancelled, propagate=True, mailbox_address="bob@x.example", item=future, now=NOW
        )
        is None
    )
    assert (
        on_cancellation(
            cancelled, propagate=True, mailbox_address="alice@x.example", item=past, now=NOW
        )
        is None
    )
