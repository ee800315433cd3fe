"""The appointment, contact and task (ACT) workload of one mailbox.

Per entity: load the sync state, read the Exchange changes (page by page), the CRM records
modified since the last cycle and the records of every mapping, let
:func:`serversync.act.plan_act_sync` decide, apply its steps one by one, and save the state
only after all of them were applied. A step that fails alone (an item-level error, a write
that raced with another writer) is recorded on its mapping and tried again on later cycles,
at most ``ActSettings.max_item_attempts`` times; the other steps go on. Anything else (the
connection, the login, the store) fails the workload, and the error policy decides.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TypeVar

import attrs

from serversync.act import (
    ActStep,
    CreateInCrm,
    CreateInExchange,
    DeleteInCrm,
    DeleteInExchange,
    Echo,
    MarkDeletedInExchange,
    Skip,
    Unlink,
    UpdateLinked,
    decision_of,
    enabled_filters,
    items_to_read,
    plan_act_sync,
)
from serversync.errors import (
    ConfigurationError,
    ErrorScope,
    PermanentError,
    StorageConflictError,
    SyncError,
)
from serversync.model import (
    ActAction,
    ActEntity,
    ActOutcome,
    ActRecord,
    ActSyncState,
    EmailServerProfile,
    EntityName,
    ErrorRecord,
    ExchangeItem,
    ExchangeItemKey,
    ExchangeSyncIdMapping,
    FieldValues,
    Mailbox,
    MappingId,
    RecordRef,
    SyncFilter,
    Workload,
)
from serversync.ports import (
    ActRecordRepository,
    ExchangeItemsSession,
    ExchangeSyncIdMappingRepository,
)

from ._context import EngineContext, deadline, logger
from ._sessions import session_of

__all__ = ["ActPipeline"]

T = TypeVar("T")

_MAX_ERROR_LENGTH = 2048  # lastsyncerror is String(2048)


def _chunks(values: Sequence[T], size: int) -> list[Sequence[T]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def _fails_alone(exc: Exception) -> bool:
    """Whether ``exc`` concerns one record or item only (the others can go on)."""
    if isinstance(exc, StorageConflictError):
        return True  # a concurrent edit on either side: read again next cycle
    return isinstance(exc, SyncError) and exc.scope is ErrorScope.ITEM


def _error_code(exc: Exception) -> int | None:
    code = getattr(exc, "server_code", None)
    return int(code) if isinstance(code, str) and code.isdigit() else None


def _subject(values: FieldValues) -> str | None:
    subject = values.get("subject")
    if isinstance(subject, str):
        return subject[:2048]
    return None


class ActPipeline:
    """Runs the ACT workload of one mailbox."""

    def __init__(
        self,
        ctx: EngineContext,
        mailbox: Mailbox,
        profile: EmailServerProfile,
        *,
        check: Callable[[], None],
    ) -> None:
        self._ctx = ctx
        self._mailbox = mailbox
        self._profile = profile
        self._check = check
        self.outcomes: list[ActOutcome] = []

    def _repositories(self) -> tuple[ActRecordRepository, ExchangeSyncIdMappingRepository]:
        ctx = self._ctx
        if ctx.act_records is None or ctx.act_mappings is None:
            raise ConfigurationError(
                "appointment, contact and task sync needs the engine's act_records and "
                "act_mappings repositories",
                mailbox_id=self._mailbox.id,
            )
        return ctx.act_records, ctx.act_mappings

    def _user(self) -> RecordRef:
        owner = self._mailbox.owner
        if owner is None or owner.entity != EntityName.SYSTEMUSER:
            raise ConfigurationError(
                "appointments, contacts and tasks sync only for a user's mailbox",
                mailbox_id=self._mailbox.id,
            )
        return owner

    async def run(self) -> list[ActOutcome]:
        """Check the preconditions, purge expired failed mappings, then sync each entity."""
        ctx = self._ctx
        records, mappings = self._repositories()
        user = self._user()
        transport = ctx.transports.act_for(self._profile)  # Exchange server types only
        settings = ctx.settings.act
        purged = await ctx.storage(
            mappings.purge_failed_mappings(older_than=ctx.clock.now() - settings.mapping_retention),
            "purging failed mappings",
        )
        if purged:
            logger.info("mailbox %s: purged %d failed mappings", self._mailbox.id, purged)
        credentials = await ctx.credentials.resolve(self._mailbox, self._profile, Workload.ACT)
        opener = transport.open(self._mailbox, self._profile, credentials)
        async with session_of(opener, ctx.settings.timeouts, "Exchange") as session:
            for entity in ActEntity:
                self._check()
                await _EntitySync(self, session, records, mappings, user, entity).run()
        return self.outcomes


class _EntitySync:
    """One entity's part of an ACT cycle."""

    def __init__(
        self,
        pipeline: ActPipeline,
        session: ExchangeItemsSession,
        records: ActRecordRepository,
        mappings: ExchangeSyncIdMappingRepository,
        user: RecordRef,
        entity: ActEntity,
    ) -> None:
        self._pipeline = pipeline
        self._ctx = pipeline._ctx
        self._mailbox = pipeline._mailbox
        self._session = session
        self._records = records
        self._mappings = mappings
        self._user = user
        self._entity = entity
        # Record ↔ item links known so far, so that a series' exceptions find their master.
        self._item_of: dict[RecordRef, str] = {}
        self._record_of: dict[str, RecordRef] = {}
        # Items created in Exchange this cycle, after the sync state was read.
        self._created: list[str] = []

    async def run(self) -> None:
        ctx = self._ctx
        settings = ctx.settings.act
        entity = self._entity
        state = await ctx.storage(
            self._mappings.load_act_state(self._mailbox.id, entity), "loading the ACT state"
        ) or ActSyncState(mailbox_id=self._mailbox.id, entity=entity)
        filters = enabled_filters(
            await ctx.storage(
                self._records.list_sync_filters(self._user, entity), "loading sync filters"
            ),
            entity,
        )
        changed, deleted, exchange_state, more = await self._exchange_changes(state.exchange_state)
        candidates, crm_after = await self._candidates(filters, state.crm_modified_after)
        mappings = await ctx.storage(
            self._mappings.list_mappings(self._user, entity), "loading the Exchange mappings"
        )
        for mapping in mappings:
            if mapping.is_linked:
                self._item_of[mapping.record] = mapping.exchange_entry_id
                self._record_of[mapping.exchange_entry_id] = mapping.record
        mapped_records = await self._mapped_records(mappings)
        wanted = items_to_read(
            entity,
            user=self._user,
            mappings=mappings,
            mapped_records=mapped_records,
            filters=filters,
            changed=changed,
            settings=settings,
        )
        # Created by the last cycle and not listed as changed since: a sync state that never
        # listed an item reports no delete for it, so it is read to learn whether it exists.
        unseen = [i for i in state.unconfirmed if i not in changed and i not in deleted]
        wanted = (*wanted, *(i for i in unseen if i not in wanted))
        current: dict[str, ExchangeItem] = {}
        for chunk in _chunks(wanted, settings.page_size):
            items = await self._command(self._session.get_items(entity, chunk), "reading items")
            current.update((item.key.item_id, item) for item in items)
        deleted += [i for i in unseen if i not in current]
        plan = plan_act_sync(
            entity,
            user=self._user,
            mailbox_address=self._mailbox.email_address,
            mappings=mappings,
            candidates=candidates,
            mapped_records=mapped_records,
            filters=filters,
            exchange_changed=tuple(changed.values()),
            exchange_deleted=tuple(deleted),
            current_items=current,
            settings=settings,
            now=ctx.clock.now(),
            held_fields=self._session.held_fields(entity),
        )
        for step in plan.steps:
            self._pipeline._check()
            await self._apply(step)
        # Only now: a crash before this point reads the same changes again, and the
        # fingerprints on the mappings turn them into no-ops.
        await ctx.storage(
            self._mappings.save_act_state(
                ActSyncState(
                    mailbox_id=self._mailbox.id,
                    entity=entity,
                    exchange_state=exchange_state,
                    crm_modified_after=crm_after,
                    # Items still unlisted wait for a later page; the rest were listed.
                    unconfirmed=(
                        *(i for i in unseen if more and i in current),
                        *self._created,
                    ),
                )
            ),
            "saving the ACT state",
        )

    async def _command(self, awaitable: Awaitable[T], what: str) -> T:
        return await deadline(self._ctx.settings.timeouts.command, awaitable, what)

    async def _exchange_changes(
        self, state: str | None
    ) -> tuple[dict[str, ExchangeItem], list[str], str | None, bool]:
        settings = self._ctx.settings.act
        changed: dict[str, ExchangeItem] = {}
        deleted: dict[str, None] = {}
        more = False
        for _ in range(settings.max_pages_per_cycle):
            page = await deadline(
                self._ctx.settings.timeouts.command,
                self._session.sync_items(self._entity, state, limit=settings.page_size),
                "reading Exchange changes",
            )
            if page.reset:
                logger.info(
                    "mailbox %s %s: Exchange forgot the sync state; reading every item",
                    self._mailbox.id,
                    self._entity.value,
                )
            for item in page.changed:
                changed[item.key.item_id] = item
                deleted.pop(item.key.item_id, None)
            for item_id in page.deleted:
                deleted[item_id] = None
                changed.pop(item_id, None)
            state = page.state
            more = page.more
            if not more:
                break
        return changed, list(deleted), state, more

    async def _candidates(
        self, filters: Sequence[SyncFilter], cursor: datetime | None
    ) -> tuple[list[ActRecord], datetime | None]:
        """CRM records modified after the cursor, page by page, and the next cursor.

        A full page ends mid-way through some instant; the next query starts just before
        it, so records sharing it are read twice, never lost. A full page all at one
        instant is read again with a larger limit. The next cursor stays
        ``crm_cursor_overlap`` behind the clock, so a row committed late with an earlier
        ``modified_on`` is still read.
        """
        if not filters:
            return [], cursor  # no enabled filter: nothing of this entity goes to Exchange
        ctx = self._ctx
        settings = ctx.settings.act
        after = cursor
        limit = settings.page_size
        most = settings.page_size * settings.max_pages_per_cycle
        found: dict[RecordRef, ActRecord] = {}
        for _ in range(settings.max_pages_per_cycle):
            page = await ctx.storage(
                self._records.find_sync_candidates(
                    self._entity, filters, modified_after=after, limit=limit
                ),
                "finding records to sync",
            )
            found.update((record.ref, record) for record in page)
            if len(page) < limit:
                break
            last = max(record.modified_on for record in page)
            earlier = [r.modified_on for r in page if r.modified_on < last]
            if earlier:
                after = max(earlier)
            elif limit < most:
                limit = min(limit * 2, most)
            else:
                logger.warning(
                    "mailbox %s %s: more than %d records modified at %s; the rest waits",
                    self._mailbox.id,
                    self._entity.value,
                    most,
                    last.isoformat(),
                )
                after = last
        latest = max((r.modified_on for r in found.values()), default=None)
        if latest is None:
            return [], cursor
        latest = min(latest, ctx.clock.now() - settings.crm_cursor_overlap)
        if cursor is not None and latest < cursor:
            latest = cursor
        return list(found.values()), latest

    async def _mapped_records(
        self, mappings: Sequence[ExchangeSyncIdMapping]
    ) -> dict[RecordRef, ActRecord]:
        """The current records of linked mappings and of failed creations (to retry)."""
        ctx = self._ctx
        refs = list(
            dict.fromkeys(
                m.record
                for m in mappings
                if m.record.id and (m.is_linked or not m.exchange_entry_id)
            )
        )
        found: dict[RecordRef, ActRecord] = {}
        for chunk in _chunks(refs, ctx.settings.act.page_size):
            records = await ctx.storage(
                self._records.get_act_records(chunk), "reading linked records"
            )
            found.update((record.ref, record) for record in records)
        return found

    # -- applying steps ---------------------------------------------------------------------

    def _outcome(
        self,
        action: ActAction,
        *,
        record: RecordRef | None = None,
        item_id: str | None = None,
        explanation: str = "",
        error: ErrorRecord | None = None,
    ) -> None:
        self._pipeline.outcomes.append(
            ActOutcome(
                entity=self._entity,
                action=action,
                record=record,
                item_id=item_id,
                explanation=explanation,
                error=error,
            )
        )

    async def _save(self, mapping: ExchangeSyncIdMapping) -> None:
        await self._ctx.storage(self._mappings.save_mapping(mapping), "saving a mapping")

    def _succeeded(self, mapping: ExchangeSyncIdMapping) -> ExchangeSyncIdMapping:
        return attrs.evolve(
            mapping,
            retries=0,
            last_sync_error=None,
            last_sync_error_code=None,
            last_sync_error_occurred_on=None,
            last_synced_on=self._ctx.clock.now(),
        )

    async def _apply(self, step: ActStep) -> None:
        try:
            await self._perform(step)
        except Exception as exc:
            if not _fails_alone(exc):
                raise
            await self._failed(step, exc)

    async def _perform(self, step: ActStep) -> None:
        session, entity = self._session, self._entity
        if isinstance(step, CreateInExchange):
            await self._create_in_exchange(step)
        elif isinstance(step, CreateInCrm):
            await self._create_in_crm(step)
        elif isinstance(step, UpdateLinked):
            await self._update(step)
        elif isinstance(step, DeleteInCrm):
            await self._ctx.storage(
                self._records.delete_act_record(step.mapping.record), "deleting a record"
            )
            await self._save(
                self._succeeded(attrs.evolve(step.mapping, is_deleted_in_exchange=True))
            )
            self._outcome(
                ActAction.DELETED_IN_CRM,
                record=step.mapping.record,
                item_id=step.mapping.exchange_entry_id,
                explanation=step.reason,
            )
        elif isinstance(step, MarkDeletedInExchange):
            await self._save(
                self._succeeded(attrs.evolve(step.mapping, is_deleted_in_exchange=True))
            )
            self._outcome(
                ActAction.MARKED_DELETED_IN_EXCHANGE,
                record=step.mapping.record,
                item_id=step.mapping.exchange_entry_id,
                explanation=step.reason,
            )
        elif isinstance(step, DeleteInExchange):
            await self._command(
                session.delete_item(
                    entity,
                    step.mapping.exchange_entry_id,
                    send_cancellations=step.send_cancellations,
                ),
                "deleting an Exchange item",
            )
            await self._save(
                self._succeeded(attrs.evolve(step.mapping, is_deleted_in_exchange=True))
            )
            self._outcome(
                ActAction.DELETED_IN_EXCHANGE,
                record=step.mapping.record,
                item_id=step.mapping.exchange_entry_id,
                explanation=step.reason,
            )
        elif isinstance(step, Unlink):
            await self._save(self._succeeded(attrs.evolve(step.mapping, is_unlinked_in_crm=True)))
            self._outcome(
                ActAction.UNLINKED,
                record=step.mapping.record,
                item_id=step.mapping.exchange_entry_id,
                explanation=step.reason,
            )
        elif isinstance(step, Echo):
            self._outcome(
                ActAction.ECHO,
                record=step.mapping.record,
                item_id=step.mapping.exchange_entry_id,
                explanation=step.reason,
            )
        elif isinstance(step, Skip):
            self._outcome(
                ActAction.SKIPPED, record=step.record, item_id=step.item_id, explanation=step.reason
            )

    async def _create_in_exchange(self, step: CreateInExchange) -> None:
        record = step.record
        series_id = None
        if record.series is not None:
            series_id = self._item_of.get(record.series)
            if series_id is None:
                raise PermanentError(
                    f"the series master {record.series} is not in Exchange yet",
                    scope=ErrorScope.ITEM,
                )
        key: ExchangeItemKey = await self._command(
            self._session.create_item(
                self._entity,
                step.fields,
                series_id=series_id,
                original_start=record.original_start,
                record=record.ref,
            ),
            "creating an Exchange item",
        )
        # Saved at once: a crash after this point must not create the item twice.
        await self._link(step, record, key, ActAction.CREATED_IN_EXCHANGE, in_sync_filters=True)
        self._created.append(key.item_id)

    async def _create_in_crm(self, step: CreateInCrm) -> None:
        item = step.item
        linked = self._record_of.get(item.key.item_id)
        if linked is not None:
            # A create of this cycle was answered with this item, made by an earlier attempt
            # whose answer was lost (Graph's transactionId): it is that record's, not new.
            self._outcome(
                ActAction.SKIPPED,
                record=linked,
                item_id=item.key.item_id,
                explanation="the item a create of this cycle returned; linked already",
            )
            return
        series = None
        if item.series_id is not None:
            series = self._record_of.get(item.series_id)
            if series is None:
                raise PermanentError(
                    f"the series master {item.series_id} is not in the CRM yet",
                    scope=ErrorScope.ITEM,
                )
        record = await self._ctx.storage(
            self._records.create_act_record(
                self._entity,
                step.owner,
                step.fields,
                series=series,
                original_start=item.original_start,
            ),
            "creating a CRM record",
        )
        # Not in the filters until the next cycle reads the record back and checks it.
        await self._link(step, record, item.key, ActAction.CREATED_IN_CRM, in_sync_filters=False)

    async def _link(
        self,
        step: CreateInExchange | CreateInCrm,
        record: ActRecord,
        key: ExchangeItemKey,
        action: ActAction,
        *,
        in_sync_filters: bool,
    ) -> None:
        """Save the mapping that links a record and an item one of which was just created
        (reusing the id of a failed attempt's mapping), and index the pair for this cycle."""
        mapping = ExchangeSyncIdMapping(
            id=step.mapping.id if step.mapping else _new_mapping_id(),
            owner=self._user,
            record=record.ref,
            exchange_entry_id=key.item_id,
            change_key=key.change_key,
            record_version=record.version,
            record_owner=record.owner,
            synced_values=dict(step.synced),
            item_subject=_subject(step.fields),
            in_sync_filters=in_sync_filters,
        )
        await self._save(self._succeeded(mapping))  # a success: no retries left to count
        self._item_of[record.ref] = key.item_id
        self._record_of[key.item_id] = record.ref
        self._outcome(action, record=record.ref, item_id=key.item_id, explanation=step.reason)

    async def _update(self, step: UpdateLinked) -> None:
        mapping = step.mapping
        if step.item is not None:
            key = step.item.key  # the version read: a newer edit makes the write conflict
        else:
            key = ExchangeItemKey(
                item_id=mapping.exchange_entry_id, change_key=mapping.change_key or ""
            )
        if step.to_exchange:
            key = await self._command(
                self._session.update_item(self._entity, key, step.to_exchange),
                "updating an Exchange item",
            )
        record = step.record
        if step.to_crm:
            record = await self._ctx.storage(
                self._records.update_act_record(
                    record.ref, step.to_crm, expected_version=record.version
                ),
                "updating a CRM record",
            )
        decision = decision_of(step.conflicts)
        values = dict(record.fields)
        updated = attrs.evolve(
            mapping,
            change_key=key.change_key,
            record_version=record.version,
            record_owner=record.owner,
            synced_values=dict(step.synced),
            item_subject=_subject(values) or mapping.item_subject,
            in_sync_filters=step.in_sync_filters,
            user_decision=int(decision) if decision is not None else mapping.user_decision,
        )
        await self._save(self._succeeded(updated))
        self._outcome(
            ActAction.UPDATED,
            record=record.ref,
            item_id=mapping.exchange_entry_id,
            explanation=step.reason,
        )

    async def _failed(self, step: ActStep, exc: Exception) -> None:
        """Record a failure on the step's mapping (creating one for a first attempt)."""
        now = self._ctx.clock.now()
        error = ErrorRecord.from_exception(exc)
        record: RecordRef | None = None
        item_id: str | None = None
        action = ActAction.SKIPPED
        mapping: ExchangeSyncIdMapping | None
        if isinstance(step, CreateInExchange):
            action, record = ActAction.CREATED_IN_EXCHANGE, step.record.ref
            mapping = step.mapping or ExchangeSyncIdMapping(
                id=_new_mapping_id(),
                owner=self._user,
                record=step.record.ref,
                exchange_entry_id="",
                record_owner=step.record.owner,
                item_subject=_subject(step.fields),
            )
        elif isinstance(step, CreateInCrm):
            action, item_id = ActAction.CREATED_IN_CRM, step.item.key.item_id
            mapping = step.mapping or ExchangeSyncIdMapping(
                id=_new_mapping_id(),
                owner=self._user,
                record=RecordRef(self._entity.value, ""),
                exchange_entry_id=step.item.key.item_id,
                change_key=step.item.key.change_key,
                item_subject=_subject(step.fields),
            )
        elif isinstance(step, Skip):
            mapping = None
        else:
            mapping = step.mapping
            record, item_id = mapping.record, mapping.exchange_entry_id
            action = {
                UpdateLinked: ActAction.UPDATED,
                DeleteInCrm: ActAction.DELETED_IN_CRM,
                DeleteInExchange: ActAction.DELETED_IN_EXCHANGE,
                MarkDeletedInExchange: ActAction.MARKED_DELETED_IN_EXCHANGE,
                Unlink: ActAction.UNLINKED,
                Echo: ActAction.ECHO,
            }[type(step)]
        logger.warning(
            "mailbox %s %s: %s failed: %s",
            self._mailbox.id,
            self._entity.value,
            action.value,
            error.message,
        )
        self._outcome(action, record=record, item_id=item_id, explanation=str(exc), error=error)
        if mapping is None:
            return
        failed = attrs.evolve(
            mapping,
            retries=mapping.retries + 1,
            last_sync_error=str(exc)[:_MAX_ERROR_LENGTH],
            last_sync_error_code=_error_code(exc),
            last_sync_error_occurred_on=now,
        )
        try:
            await self._save(failed)
        except StorageConflictError as conflict:
            # The mapping changed meanwhile; the next cycle reads it again.
            logger.warning("mailbox %s: cannot record the failure: %s", self._mailbox.id, conflict)


def _new_mapping_id() -> MappingId:
    return MappingId(str(uuid.uuid4()))
