"""Planning one entity's ACT cycle: what to write where, decided in pure code.

:func:`plan_act_sync` takes what the engine read (the mappings, the CRM records, the
Exchange changes) and returns an :class:`ActPlan`: an ordered list of steps the engine
applies one by one. Nothing here does I/O, so every decision can be tested and explained.

The order is: Exchange deletes, then each linked record (CRM deletes, unlinks, updates),
then new CRM records to create in Exchange, then new Exchange items to create in the CRM.
Within the creations a recurring series' master comes before its exceptions.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime

import attrs

from serversync.act.changes import (
    changed_fields,
    fingerprint,
    fingerprints,
    item_values,
    record_values,
)
from serversync.act.conflicts import FieldConflict, Side, resolve_conflict
from serversync.act.deletes import (
    DeleteDecision,
    DeleteOutcome,
    is_cancelled,
    on_cancellation,
    on_crm_delete,
    on_exchange_delete,
    on_left_filters,
)
from serversync.act.fields import field_directions
from serversync.act.filters import enabled_filters, in_sync_scope
from serversync.model.act import (
    ActEntity,
    ActRecord,
    ExchangeItem,
    FieldValue,
    FieldValues,
    SyncDirection,
    SyncFilter,
)
from serversync.model.exchange import ExchangeSyncIdMapping
from serversync.model.ids import RecordRef
from serversync.settings import ActSettings

__all__ = [
    "ActPlan",
    "ActStep",
    "CreateInCrm",
    "CreateInExchange",
    "DeleteInCrm",
    "DeleteInExchange",
    "Echo",
    "MarkDeletedInExchange",
    "Skip",
    "Unlink",
    "UpdateLinked",
    "directions_for",
    "items_to_read",
    "plan_act_sync",
]

_TO_EXCHANGE = frozenset({SyncDirection.TWO_WAY, SyncDirection.TO_EXCHANGE})
_TO_CRM = frozenset({SyncDirection.TWO_WAY, SyncDirection.TO_CRM})


@attrs.frozen(kw_only=True)
class CreateInExchange:
    """Create an Exchange item for a CRM record that matches the user's filters.

    ``mapping`` is the mapping of an earlier attempt that failed, reused for its retry count.
    """

    record: ActRecord
    fields: FieldValues
    synced: Mapping[str, str]
    mapping: ExchangeSyncIdMapping | None = None
    reason: str


@attrs.frozen(kw_only=True)
class CreateInCrm:
    """Create a CRM record, owned by the syncing user, for a new Exchange item."""

    item: ExchangeItem
    owner: RecordRef
    fields: FieldValues
    synced: Mapping[str, str]
    mapping: ExchangeSyncIdMapping | None = None
    reason: str


@attrs.frozen(kw_only=True)
class UpdateLinked:
    """Bring a linked pair in line: write ``to_exchange`` to the item and ``to_crm`` to the
    record (either may be empty), then store ``synced`` on the mapping.

    ``item`` is the Exchange item when it changed (its change key is the one to write
    against), ``None`` when only the CRM side changed.
    """

    mapping: ExchangeSyncIdMapping
    record: ActRecord
    item: ExchangeItem | None
    to_exchange: FieldValues
    to_crm: FieldValues
    synced: Mapping[str, str]
    conflicts: tuple[FieldConflict, ...] = ()
    in_sync_filters: bool = True
    reason: str


@attrs.frozen(kw_only=True)
class DeleteInCrm:
    """The item was deleted in Exchange: delete the CRM record and mark the mapping."""

    mapping: ExchangeSyncIdMapping
    reason: str


@attrs.frozen(kw_only=True)
class MarkDeletedInExchange:
    """The item is gone from Exchange and the CRM record stays: mark the mapping."""

    mapping: ExchangeSyncIdMapping
    reason: str


@attrs.frozen(kw_only=True)
class DeleteInExchange:
    """Delete the Exchange item (sending cancellations for a cancelled meeting)."""

    mapping: ExchangeSyncIdMapping
    send_cancellations: bool = False
    reason: str


@attrs.frozen(kw_only=True)
class Unlink:
    """End the link and leave the Exchange item alone (``isunlinkedincrm``)."""

    mapping: ExchangeSyncIdMapping
    reason: str


@attrs.frozen(kw_only=True)
class Echo:
    """An Exchange change that is serversync's own write (its change key is the mapping's)."""

    mapping: ExchangeSyncIdMapping
    reason: str


@attrs.frozen(kw_only=True)
class Skip:
    """Nothing is done now, and why (an item that failed too often waits for a new change)."""

    record: RecordRef | None = None
    item_id: str | None = None
    reason: str


ActStep = (
    CreateInExchange
    | CreateInCrm
    | UpdateLinked
    | DeleteInCrm
    | MarkDeletedInExchange
    | DeleteInExchange
    | Unlink
    | Echo
    | Skip
)
"""One step of an :class:`ActPlan`."""


@attrs.frozen(kw_only=True)
class ActPlan:
    """The ordered steps of one entity's cycle for one user."""

    entity: ActEntity
    steps: tuple[ActStep, ...] = ()


def directions_for(
    entity: ActEntity, settings: ActSettings, held: Collection[str] | None = None
) -> Mapping[str, SyncDirection]:
    """Every field of ``entity`` with its direction under ``settings``; a field Exchange does
    not hold (outside ``held``, when given) does not sync."""
    directions = field_directions(
        entity,
        settings.field_directions,
        all_contact_addresses=settings.sync_all_contact_addresses,
    )
    if held is None:
        return directions
    return {f: d if f in held else SyncDirection.NONE for f, d in directions.items()}


def _given_up(mapping: ExchangeSyncIdMapping, settings: ActSettings) -> bool:
    return mapping.retries >= settings.max_item_attempts


def _changed_since_failure(mapping: ExchangeSyncIdMapping, *times: datetime | None) -> bool:
    """Whether either side changed after the mapping's last failure: an item that failed
    too often is tried again only then."""
    failed_on = mapping.last_sync_error_occurred_on
    return failed_on is None or any(t is not None and t > failed_on for t in times)


def _waits(mapping: ExchangeSyncIdMapping, settings: ActSettings, *times: datetime | None) -> bool:
    return _given_up(mapping, settings) and not _changed_since_failure(mapping, *times)


def _left_filters(
    mapping: ExchangeSyncIdMapping,
    record: ActRecord,
    filters: Sequence[SyncFilter],
    user: RecordRef,
) -> bool:
    # Only a record that matched at the last sync can leave: one imported from Exchange that
    # never matched stays linked.
    return mapping.in_sync_filters and not in_sync_scope(record, filters, user)


def _needs_delete_rule(
    mapping: ExchangeSyncIdMapping,
    record: ActRecord | None,
    filters: Sequence[SyncFilter],
    user: RecordRef,
    settings: ActSettings,
) -> bool:
    return (
        record is None
        or _left_filters(mapping, record, filters, user)
        or (settings.propagate_appointment_cancellations and is_cancelled(record))
    )


def items_to_read(
    entity: ActEntity,
    *,
    user: RecordRef,
    mappings: Iterable[ExchangeSyncIdMapping],
    mapped_records: Mapping[RecordRef, ActRecord],
    filters: Sequence[SyncFilter],
    changed: Iterable[str],
    settings: ActSettings,
) -> tuple[str, ...]:
    """Exchange items the plan needs besides the changes: those of linked records that were
    deleted, left the filters or were cancelled (their time and organizer decide the delete
    rule), and those of mappings whose last attempt failed (their change was read before).
    An id asked for and not found is taken as deleted in Exchange."""
    seen = set(changed)
    wanted: list[str] = []
    for mapping in mappings:
        item_id = mapping.exchange_entry_id
        if not item_id or item_id in seen:
            continue
        retry = mapping.last_sync_error is not None and not _given_up(mapping, settings)
        if mapping.is_linked:
            record = mapped_records.get(mapping.record)
            if retry or _needs_delete_rule(mapping, record, filters, user, settings):
                wanted.append(item_id)
                seen.add(item_id)
        elif not mapping.record.id and retry:
            wanted.append(item_id)  # an Exchange item whose CRM record failed to be created
            seen.add(item_id)
    return tuple(wanted)


def _series_order(record_series: object) -> int:
    return 0 if record_series is None else 1


def _describe(changes: Iterable[str]) -> str:
    return ", ".join(sorted(changes))


@attrs.frozen
class _Context:
    entity: ActEntity
    user: RecordRef
    mailbox_address: str
    filters: Sequence[SyncFilter]
    settings: ActSettings
    now: datetime
    directions: Mapping[str, SyncDirection]

    @property
    def active(self) -> tuple[str, ...]:
        return tuple(f for f, d in self.directions.items() if d is not SyncDirection.NONE)


def _delete_step(
    ctx: _Context, mapping: ExchangeSyncIdMapping, decision: DeleteDecision
) -> ActStep:
    if decision.outcome is DeleteOutcome.DELETE_EXCHANGE_ITEM:
        return DeleteInExchange(
            mapping=mapping, send_cancellations=decision.send_cancellations, reason=decision.reason
        )
    return Unlink(mapping=mapping, reason=decision.reason)


def _exchange_delete_step(entity: ActEntity, mapping: ExchangeSyncIdMapping) -> ActStep:
    decision = on_exchange_delete(entity)
    if decision.outcome is DeleteOutcome.DELETE_CRM_RECORD:
        return DeleteInCrm(mapping=mapping, reason=decision.reason)
    return MarkDeletedInExchange(mapping=mapping, reason=decision.reason)


def _crm_side_gone(
    ctx: _Context,
    mapping: ExchangeSyncIdMapping,
    record: ActRecord | None,
    item: ExchangeItem | None,
) -> ActStep | None:
    """The step for a linked record that was deleted, left the filters or was cancelled;
    ``None`` when the record stays in sync."""
    if record is not None and not _left_filters(mapping, record, ctx.filters, ctx.user):
        if item is None:
            return MarkDeletedInExchange(mapping=mapping, reason="the Exchange item is gone")
        cancelled = on_cancellation(
            record,
            propagate=ctx.settings.propagate_appointment_cancellations,
            mailbox_address=ctx.mailbox_address,
            item=item,
            now=ctx.now,
        )
        return None if cancelled is None else _delete_step(ctx, mapping, cancelled)
    if item is None:
        return MarkDeletedInExchange(
            mapping=mapping, reason="the record and the Exchange item are both gone"
        )
    owner = record.owner if record is not None else mapping.record_owner
    if record is None:
        decision = on_crm_delete(
            ctx.entity,
            user=ctx.user,
            mailbox_address=ctx.mailbox_address,
            record_owner=owner,
            item=item,
            now=ctx.now,
        )
    else:
        decision = on_left_filters(
            ctx.entity,
            distinct_physical_and_logical_deletes=(
                ctx.settings.distinct_physical_and_logical_deletes
            ),
            user=ctx.user,
            mailbox_address=ctx.mailbox_address,
            record_owner=owner,
            item=item,
            now=ctx.now,
        )
    return _delete_step(ctx, mapping, decision)


def _reconcile(
    ctx: _Context,
    mapping: ExchangeSyncIdMapping,
    record: ActRecord,
    item: ExchangeItem | None,
) -> ActStep | None:
    """Field by field: what each side changed since the last sync, and who wins a conflict."""
    echo = item is not None and item.key.change_key == mapping.change_key
    exchange = None if echo else item
    crm_values = record_values(record)
    exchange_values = item_values(exchange) if exchange is not None else {}
    synced_before = mapping.synced_values
    active = ctx.active
    crm_changed = changed_fields(crm_values, synced_before, active)
    exchange_changed = changed_fields(exchange_values, synced_before, active)
    to_exchange: dict[str, FieldValue] = {}
    to_crm: dict[str, FieldValue] = {}
    synced = dict(synced_before)
    conflicts: list[FieldConflict] = []
    for name in active:
        direction = ctx.directions[name]
        crm = name in crm_changed and direction in _TO_EXCHANGE
        exch = name in exchange_changed and direction in _TO_CRM
        if crm and exch and exchange is not None:
            crm_print = fingerprint(crm_values[name])
            if crm_print == fingerprint(exchange_values[name]):
                synced[name] = crm_print  # the same change on both sides
                continue
            conflict = resolve_conflict(
                ctx.entity,
                name,
                ctx.settings.conflicts,
                crm_modified_on=record.modified_on,
                exchange_modified_on=exchange.last_modified,
            )
            conflicts.append(conflict)
            if conflict.winner is Side.CRM:
                to_exchange[name] = crm_values[name]
                synced[name] = crm_print
            else:
                to_crm[name] = exchange_values[name]
                synced[name] = fingerprint(exchange_values[name])
        elif crm:
            to_exchange[name] = crm_values[name]
            synced[name] = fingerprint(crm_values[name])
        elif exch:
            to_crm[name] = exchange_values[name]
            synced[name] = fingerprint(exchange_values[name])
    in_scope = in_sync_scope(record, ctx.filters, ctx.user)
    refresh = (
        synced != dict(synced_before)
        or in_scope != mapping.in_sync_filters
        or (exchange is not None and exchange.key.change_key != mapping.change_key)
        or record.version != mapping.record_version
        or record.owner != mapping.record_owner
        or mapping.last_sync_error is not None
    )
    if not (to_exchange or to_crm or refresh):
        if echo:
            return Echo(mapping=mapping, reason="the Exchange change is serversync's own write")
        return None
    parts = []
    if to_exchange:
        parts.append(f"to Exchange: {_describe(to_exchange)}")
    if to_crm:
        parts.append(f"to the CRM: {_describe(to_crm)}")
    parts.extend(c.explain() for c in conflicts)
    return UpdateLinked(
        mapping=mapping,
        record=record,
        item=exchange,
        to_exchange=to_exchange,
        to_crm=to_crm,
        synced=synced,
        conflicts=tuple(conflicts),
        in_sync_filters=in_scope,
        reason="; ".join(parts) or "nothing to write; the mapping is brought up to date",
    )


def plan_act_sync(
    entity: ActEntity,
    *,
    user: RecordRef,
    mailbox_address: str,
    mappings: Sequence[ExchangeSyncIdMapping],
    candidates: Sequence[ActRecord],
    mapped_records: Mapping[RecordRef, ActRecord],
    filters: Sequence[SyncFilter],
    exchange_changed: Sequence[ExchangeItem],
    exchange_deleted: Sequence[str],
    current_items: Mapping[str, ExchangeItem],
    settings: ActSettings,
    now: datetime,
    held_fields: Collection[str] | None = None,
) -> ActPlan:
    """The steps that bring ``user``'s mailbox and the CRM in line for ``entity``.

    - ``mappings``: every mapping of the user for the entity;
    - ``candidates``: CRM records modified since the last cycle (a superset is fine: the
      user's ``filters`` are evaluated here);
    - ``mapped_records``: the current CRM record of every mapping (a missing one was
      deleted);
    - ``exchange_changed`` / ``exchange_deleted``: the Exchange changes since the last cycle;
    - ``current_items``: the items :func:`items_to_read` asked for (a missing one is gone);
    - ``held_fields``: the fields this Exchange holds (every field when ``None``); the others
      are neither sent nor compared, whatever their direction.
    """
    ctx = _Context(
        entity=entity,
        user=user,
        mailbox_address=mailbox_address,
        filters=enabled_filters(filters, entity),
        settings=settings,
        now=now,
        directions=directions_for(entity, settings, held_fields),
    )
    changed = {item.key.item_id: item for item in exchange_changed}
    deleted = set(exchange_deleted)
    linked = [m for m in mappings if m.is_linked]
    linked_by_item = {m.exchange_entry_id: m for m in linked}
    linked_records = {m.record for m in linked}
    ended = [m for m in mappings if m.exchange_entry_id and m.record.id and not m.is_linked]
    ended_items = {m.exchange_entry_id for m in ended}
    ended_deleted_records = {m.record for m in ended if m.is_deleted_in_exchange}
    failed_to_exchange = {m.record: m for m in mappings if not m.exchange_entry_id}
    failed_to_crm = {
        m.exchange_entry_id: m for m in mappings if m.exchange_entry_id and not m.record.id
    }

    steps: list[ActStep] = []

    # 1. Items deleted in Exchange.
    done: set[str] = set()
    for item_id in sorted(deleted):
        mapping = linked_by_item.get(item_id)
        if mapping is None:
            continue
        done.add(mapping.id)
        steps.append(_exchange_delete_step(entity, mapping))

    # 2. Linked records: deletes, unlinks, cancellations, updates.
    for mapping in sorted(linked, key=lambda m: (m.record.id, m.id)):
        if mapping.id in done:
            continue
        record = mapped_records.get(mapping.record)
        item_id = mapping.exchange_entry_id
        if _needs_delete_rule(mapping, record, ctx.filters, user, settings):
            # items_to_read asked for this item: not found means gone from Exchange.
            item = changed.get(item_id) or current_items.get(item_id)
            gone = _crm_side_gone(ctx, mapping, record, item)
            if gone is not None:
                steps.append(gone)
                continue
        if record is None:  # pragma: no cover - _crm_side_gone always answers for it
            continue
        retry = mapping.last_sync_error is not None and not _given_up(mapping, settings)
        if retry and item_id not in changed and item_id not in current_items:
            # Read again for the retry and not found: deleted in Exchange meanwhile.
            steps.append(_exchange_delete_step(entity, mapping))
            continue
        changed_item = changed.get(item_id)
        if _waits(
            mapping,
            settings,
            record.modified_on,
            changed_item.last_modified if changed_item is not None else None,
        ):
            steps.append(
                Skip(
                    record=record.ref,
                    item_id=item_id,
                    reason=f"failed {mapping.retries} times; waits for a new change",
                )
            )
            continue
        exchange_side = changed.get(item_id)
        if exchange_side is None and mapping.last_sync_error is not None:
            exchange_side = current_items.get(item_id)
        step = _reconcile(ctx, mapping, record, exchange_side)
        if step is not None:
            steps.append(step)

    # 3. New CRM records that match the filters.
    considered: dict[RecordRef, ActRecord] = {r.ref: r for r in candidates}
    for ref, failed in failed_to_exchange.items():
        record = mapped_records.get(ref)
        if (
            record is not None
            and ref not in considered
            and not _waits(failed, settings, record.modified_on)
        ):
            considered[ref] = record
    creations: list[CreateInExchange | Skip] = []
    to_exchange_fields = [f for f, d in ctx.directions.items() if d in _TO_EXCHANGE]
    for record in considered.values():
        if record.entity is not entity or record.ref in linked_records:
            continue
        if record.ref in ended_deleted_records:
            continue  # the user deleted the Exchange copy; it is not created again
        if not in_sync_scope(record, ctx.filters, user) or is_cancelled(record):
            continue
        earlier = failed_to_exchange.get(record.ref)
        if earlier is not None and _waits(earlier, settings, record.modified_on):
            creations.append(
                Skip(
                    record=record.ref, reason=f"failed {earlier.retries} times; waits for a change"
                )
            )
            continue
        values = record_values(record)
        fields = {f: values[f] for f in to_exchange_fields if f in values}
        creations.append(
            CreateInExchange(
                record=record,
                fields=fields,
                synced=fingerprints(fields, fields),
                mapping=earlier,
                reason="matches the user's sync filters",
            )
        )
    creations.sort(
        key=lambda s: (
            _series_order(s.record.series) if isinstance(s, CreateInExchange) else 0,
            s.record.modified_on if isinstance(s, CreateInExchange) else now,
        )
    )
    steps.extend(creations)

    # 4. New Exchange items.
    new_items: dict[str, ExchangeItem] = {}
    for item_id, item in changed.items():
        if item_id not in deleted and item_id not in linked_by_item and item_id not in ended_items:
            new_items[item_id] = item
    for item_id, failed in failed_to_crm.items():
        item = current_items.get(item_id)
        if item is not None and item_id not in new_items and not _given_up(failed, settings):
            new_items[item_id] = item
    to_crm_fields = [f for f, d in ctx.directions.items() if d in _TO_CRM]
    imports: list[CreateInCrm] = []
    waiting: list[Skip] = []
    for item_id, item in new_items.items():
        if item.entity is not entity:
            continue
        earlier_item = failed_to_crm.get(item_id)
        if earlier_item is not None and _waits(earlier_item, settings, item.last_modified):
            reason = f"failed {earlier_item.retries} times; waits for a change"
            waiting.append(Skip(item_id=item_id, reason=reason))
            continue
        values = item_values(item)
        fields = {f: values[f] for f in to_crm_fields if f in values}
        imports.append(
            CreateInCrm(
                item=item,
                owner=user,
                fields=fields,
                synced=fingerprints(fields, fields),
                mapping=failed_to_crm.get(item_id),
                reason="a new Exchange item",
            )
        )
    imports.sort(key=lambda s: (_series_order(s.item.series_id), s.item.last_modified))
    steps.extend(imports)
    steps.extend(waiting)
    return ActPlan(entity=entity, steps=tuple(steps))
