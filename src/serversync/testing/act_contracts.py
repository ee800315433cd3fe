"""Contract checks for appointment, contact and task (ACT) sync: plain async functions that
raise ``AssertionError``, runnable from any test runner.

Hosts prove their repositories with :func:`check_act_record_repository` and
:func:`check_exchange_sync_id_mapping_repository`; Exchange adapters prove their sessions
with :func:`check_exchange_items_session`::

    async def test_my_act_storage_keeps_the_contract() -> None:
        await check_act_record_repository(MyCrm.fresh, owner=RecordRef("systemuser", "u1"))
        await check_exchange_sync_id_mapping_repository(MyCrm.fresh)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import attrs

from serversync.act.fields import FIELDS
from serversync.errors import StorageConflictError
from serversync.model import (
    ActEntity,
    ActSyncState,
    ConditionOperator,
    ExchangeItem,
    ExchangeSyncIdMapping,
    FieldCondition,
    FilterGroup,
    MailboxId,
    MappingId,
    RecordRef,
    Recurrence,
    RecurrenceKind,
    SyncFilter,
)
from serversync.ports import (
    ActRecordRepository,
    ExchangeItemsSession,
    ExchangeSyncIdMappingRepository,
)

__all__ = [
    "check_act_record_repository",
    "check_exchange_items_session",
    "check_exchange_sync_id_mapping_repository",
]


_CONTRACT_USER = RecordRef("systemuser", "contract-user")


def _owned_by(owner: RecordRef, entity: ActEntity) -> SyncFilter:
    return SyncFilter(
        id=f"contract-{entity.value}",
        name="Records I own",
        owner=owner,
        entity=entity,
        criteria=FilterGroup(
            conditions=(FieldCondition(field="owner", operator=ConditionOperator.EQ_USERID),)
        ),
    )


async def _conflicts(awaitable: Awaitable[object], what: str) -> None:
    try:
        await awaitable
    except StorageConflictError:
        return
    raise AssertionError(f"{what} must raise StorageConflictError")


async def check_act_record_repository(
    factory: Callable[[], Awaitable[ActRecordRepository]],
    *,
    owner: RecordRef = _CONTRACT_USER,
) -> None:
    """Check an :class:`~serversync.ports.ActRecordRepository`: records are created, read,
    updated under their version, found as sync candidates oldest first, and deleted.
    ``factory`` returns a repository with no records of ``owner``."""
    repo = await factory()
    first = await repo.create_act_record(
        ActEntity.CONTACT,
        owner,
        {"first_name": "Ada", "last_name": "Lovelace", "email1": "ada@contract.example"},
    )
    assert first.ref.entity == ActEntity.CONTACT.value, first.ref
    assert first.ref.id, "a created record has an id"
    assert first.owner == owner
    assert first.fields.get("last_name") == "Lovelace"
    assert first.version, "a record has a version"
    assert first.modified_on.tzinfo is not None, "modified_on is timezone-aware"

    read = await repo.get_act_records([first.ref, RecordRef("contact", "contract-missing")])
    assert [r.ref for r in read] == [first.ref], "only records that exist are returned"

    updated = await repo.update_act_record(
        first.ref, {"job_title": "Analyst"}, expected_version=first.version
    )
    assert updated.version != first.version, "an update gives a new version"
    assert updated.fields.get("job_title") == "Analyst"
    assert updated.fields.get("last_name") == "Lovelace", "other fields are kept"
    assert updated.modified_on >= first.modified_on
    await _conflicts(
        repo.update_act_record(first.ref, {"job_title": "Stale"}, expected_version=first.version),
        "an update with an old version",
    )
    (again,) = await repo.get_act_records([first.ref])
    assert again.fields.get("job_title") == "Analyst", "a refused update changes nothing"

    second = await repo.create_act_record(ActEntity.CONTACT, owner, {"last_name": "Hopper"})
    mine = _owned_by(owner, ActEntity.CONTACT)
    found = await repo.find_sync_candidates(
        ActEntity.CONTACT, [mine], modified_after=None, limit=50
    )
    refs = [r.ref for r in found]
    assert first.ref in refs, "records matching a filter are found"
    assert second.ref in refs, "records matching a filter are found"
    times = [r.modified_on for r in found]
    assert times == sorted(times), "candidates come oldest modified_on first"
    assert (
        len(
            await repo.find_sync_candidates(ActEntity.CONTACT, [mine], modified_after=None, limit=1)
        )
        == 1
    )
    latest = max(times)
    later = await repo.find_sync_candidates(
        ActEntity.CONTACT, [mine], modified_after=latest, limit=50
    )
    assert all(r.modified_on > latest for r in later), "modified_after is exclusive"

    start = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)
    master = await repo.create_act_record(
        ActEntity.APPOINTMENT,
        owner,
        {"subject": "Weekly", "start": start, "end": start + timedelta(hours=1)},
    )
    exception = await repo.create_act_record(
        ActEntity.APPOINTMENT,
        owner,
        {"subject": "Weekly (moved)", "start": start + timedelta(days=7, hours=2)},
        series=master.ref,
        original_start=start + timedelta(days=7),
    )
    assert exception.series == master.ref, "an exception keeps its series"
    assert exception.original_start == start + timedelta(days=7)
    (master_read,) = await repo.get_act_records([master.ref])
    assert master_read.fields.get("start") == start, "datetimes keep their instant"

    for record in (first, second, master, exception):
        assert await repo.delete_act_record(record.ref) is True
    assert await repo.get_act_records([first.ref]) == []
    assert await repo.delete_act_record(first.ref) is False, "a second delete finds nothing"


def _mapping(n: int, owner: RecordRef, **changes: Any) -> ExchangeSyncIdMapping:
    mapping = ExchangeSyncIdMapping(
        id=MappingId(f"contract-mapping-{n}"),
        owner=owner,
        record=RecordRef("contact", f"contract-contact-{n}"),
        exchange_entry_id=f"contract-item-{n}",
        change_key="ck-1",
        record_version="1",
        synced_values={"last_name": "0" * 64},
        record_owner=owner,
    )
    return attrs.evolve(mapping, **changes)


async def check_exchange_sync_id_mapping_repository(
    factory: Callable[[], Awaitable[ExchangeSyncIdMappingRepository]],
) -> None:
    """Check an :class:`~serversync.ports.ExchangeSyncIdMappingRepository`: mappings are
    stored whole and replaced by id, at most one linked mapping exists per record and per
    item for a user, failed ones are purged after retention, and ACT states round-trip.
    ``factory`` returns an empty repository."""
    repo = await factory()
    owner = RecordRef("systemuser", "contract-owner")
    other_owner = RecordRef("systemuser", "contract-other")
    assert list(await repo.list_mappings(owner, ActEntity.CONTACT)) == []

    linked = _mapping(1, owner)
    await repo.save_mapping(linked)
    assert list(await repo.list_mappings(owner, ActEntity.CONTACT)) == [linked], (
        "a mapping reads back whole"
    )
    assert list(await repo.list_mappings(owner, ActEntity.TASK)) == []
    assert list(await repo.list_mappings(other_owner, ActEntity.CONTACT)) == []

    changed = attrs.evolve(linked, change_key="ck-2", retries=1, user_decision=2)
    await repo.save_mapping(changed)
    assert list(await repo.list_mappings(owner, ActEntity.CONTACT)) == [changed], (
        "saving with the same id replaces"
    )

    await _conflicts(
        repo.save_mapping(_mapping(2, owner, record=linked.record)),
        "a second linked mapping of one record",
    )
    await _conflicts(
        repo.save_mapping(_mapping(3, owner, exchange_entry_id=linked.exchange_entry_id)),
        "a second linked mapping of one Exchange item",
    )
    ended = _mapping(4, owner, record=linked.record, is_unlinked_in_crm=True)
    await repo.save_mapping(ended)  # an ended link does not count
    theirs = _mapping(5, other_owner, record=linked.record)
    await repo.save_mapping(theirs)  # every user has their own mapping of a record

    failed_at = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    failed = _mapping(
        6,
        owner,
        exchange_entry_id="",
        retries=3,
        last_sync_error="refused",
        last_sync_error_occurred_on=failed_at,
    )
    linked_failure = _mapping(
        7, owner, last_sync_error="refused", last_sync_error_occurred_on=failed_at
    )
    await repo.save_mapping(failed)
    await repo.save_mapping(linked_failure)
    assert await repo.purge_failed_mappings(older_than=failed_at) == 0, "not older yet"
    purged = await repo.purge_failed_mappings(older_than=failed_at + timedelta(seconds=1))
    assert purged == 1, f"only the never-linked failure is purged, not {purged}"
    ids = {m.id for m in await repo.list_mappings(owner, ActEntity.CONTACT)}
    assert failed.id not in ids
    assert linked_failure.id in ids

    await repo.delete_mapping(ended.id)
    await repo.delete_mapping(ended.id)  # idempotent
    ids = {m.id for m in await repo.list_mappings(owner, ActEntity.CONTACT)}
    assert ended.id not in ids
    assert changed.id in ids

    mailbox = MailboxId("contract-mailbox")
    assert await repo.load_act_state(mailbox, ActEntity.CONTACT) is None
    state = ActSyncState(
        mailbox_id=mailbox,
        entity=ActEntity.CONTACT,
        exchange_state="state-1",
        crm_modified_after=failed_at,
        unconfirmed=("item-1", "item-2"),
    )
    await repo.save_act_state(state)
    assert await repo.load_act_state(mailbox, ActEntity.CONTACT) == state
    assert await repo.load_act_state(mailbox, ActEntity.TASK) is None
    newer = ActSyncState(mailbox_id=mailbox, entity=ActEntity.CONTACT, exchange_state="state-2")
    await repo.save_act_state(newer)
    assert await repo.load_act_state(mailbox, ActEntity.CONTACT) == newer


async def _sync_all(
    session: ExchangeItemsSession, entity: ActEntity, state: str | None, limit: int = 50
) -> tuple[dict[str, ExchangeItem], set[str], str, int]:
    """Every change since ``state`` over as many pages as it takes."""
    changed: dict[str, ExchangeItem] = {}
    deleted: set[str] = set()
    pages = 0
    while True:
        page = await session.sync_items(entity, state, limit=limit)
        pages += 1
        assert page.entity is entity
        assert page.state, "every page carries a sync state"
        for item in page.changed:
            changed[item.key.item_id] = item
            deleted.discard(item.key.item_id)
        for item_id in page.deleted:
            deleted.add(item_id)
            changed.pop(item_id, None)
        state = page.state
        if not page.more:
            return changed, deleted, state, pages
        assert pages < 100, "paging does not end"


async def check_exchange_items_session(
    open_session: Callable[[], AbstractAsyncContextManager[ExchangeItemsSession]],
) -> None:
    """Check an :class:`~serversync.ports.ExchangeItemsSession`: ids and change keys, sync
    states with paging, deletes reported, unknown states reset, stale change keys refused,
    and appointments with time zones and a recurring series with an exception.

    ``open_session`` opens a session on a mailbox whose calendar, contacts and tasks
    folders are empty.
    """
    async with open_session() as session:
        for entity in ActEntity:
            held = session.held_fields(entity)
            assert held <= set(FIELDS[entity]), f"held {entity} fields are serversync's names"
            assert {"subject", "last_name"} & held, f"the {entity} subject or name is held"
        changed, deleted, state, _ = await _sync_all(session, ActEntity.CONTACT, None)
        assert changed == {}, "the contacts folder starts empty"
        assert deleted == set()

        key = await session.create_item(
            ActEntity.CONTACT, {"first_name": "Ada", "last_name": "Lovelace"}
        )
        assert key.item_id
        assert key.change_key
        changed, _, state, _ = await _sync_all(session, ActEntity.CONTACT, state)
        assert list(changed) == [key.item_id], "a created item is reported"
        assert changed[key.item_id].key.change_key == key.change_key
        assert changed[key.item_id].fields.get("last_name") == "Lovelace"
        assert changed[key.item_id].entity is ActEntity.CONTACT

        newer = await session.update_item(ActEntity.CONTACT, key, {"job_title": "Analyst"})
        assert newer.item_id == key.item_id, "an item keeps its id"
        assert newer.change_key != key.change_key, "every write changes the change key"
        (read,) = await session.get_items(ActEntity.CONTACT, [key.item_id])
        assert read.fields.get("job_title") == "Analyst"
        assert read.fields.get("last_name") == "Lovelace", "an update keeps other fields"
        assert read.key == newer
        await _conflicts(
            session.update_item(ActEntity.CONTACT, key, {"job_title": "Stale"}),
            "an update with an old change key",
        )

        second = await session.create_item(ActEntity.CONTACT, {"last_name": "Hopper"})
        third = await session.create_item(ActEntity.CONTACT, {"last_name": "Lamarr"})
        changed, _, state, pages = await _sync_all(session, ActEntity.CONTACT, state, limit=1)
        assert set(changed) == {key.item_id, second.item_id, third.item_id}
        assert pages >= 3, "a limit of one item pages through the changes"

        await session.delete_item(ActEntity.CONTACT, second.item_id)
        await session.delete_item(ActEntity.CONTACT, second.item_id)  # already gone: no error
        changed, deleted, state, _ = await _sync_all(session, ActEntity.CONTACT, state)
        assert second.item_id in deleted, "a delete is reported"
        assert await session.get_items(ActEntity.CONTACT, [second.item_id]) == []

        first_page = await session.sync_items(ActEntity.CONTACT, "no-such-state", limit=50)
        assert first_page.reset, "an unknown sync state lists everything again"
        listed = {item.key.item_id for item in first_page.changed}
        assert {key.item_id, third.item_id} <= listed

        start = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)
        appointment = await session.create_item(
            ActEntity.APPOINTMENT,
            {
                "subject": "Planning",
                "start": start,
                "end": start + timedelta(hours=1),
                "location": "Room 1",
            },
        )
        (meeting,) = await session.get_items(ActEntity.APPOINTMENT, [appointment.item_id])
        when = meeting.fields.get("start")
        assert isinstance(when, datetime)
        assert when.tzinfo is not None
        assert when == start, "an appointment keeps its start instant"

        weekly = Recurrence(
            kind=RecurrenceKind.WEEKLY,
            weekdays=(1,),
            start_date=date(2030, 3, 4),
            count=4,
            time_zone="Europe/Berlin",
        )
        master = await session.create_item(
            ActEntity.APPOINTMENT,
            {
                "subject": "Weekly",
                "start": start,
                "end": start + timedelta(hours=1),
                "recurrence": weekly,
            },
        )
        moved = await session.create_item(
            ActEntity.APPOINTMENT,
            {
                "subject": "Weekly",
                "start": start + timedelta(days=7, hours=2),
                "end": start + timedelta(days=7, hours=3),
            },
            series_id=master.item_id,
            original_start=start + timedelta(days=7),
        )
        (exception,) = await session.get_items(ActEntity.APPOINTMENT, [moved.item_id])
        assert exception.series_id == master.item_id, "an exception names its master"
        assert exception.fields.get("start") == start + timedelta(days=7, hours=2)

        task = await session.create_item(ActEntity.TASK, {"subject": "Call back"})
        changed, _, _, _ = await _sync_all(session, ActEntity.TASK, None)
        assert task.item_id in changed

        for entity, item_id in (
            (ActEntity.CONTACT, key.item_id),
            (ActEntity.CONTACT, third.item_id),
            (ActEntity.APPOINTMENT, appointment.item_id),
            (ActEntity.APPOINTMENT, master.item_id),
            (ActEntity.TASK, task.item_id),
        ):
            await session.delete_item(entity, item_id)
