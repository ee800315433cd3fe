"""Host-style appointment, contact and task storage written only against serversync's public
API; checked with ``mypy --strict``. The CRM records live in the host's own dicts; the
mappings in the in-memory storage; Exchange is the in-memory one."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime

import attrs

import serversync
from serversync import (
    ActDeliveryMethod,
    ActEntity,
    ActRecord,
    ActRecordRepository,
    ExchangeSyncIdMappingRepository,
    FieldValues,
    MailboxRunReport,
    RecordRef,
    ServerType,
    StorageConflictError,
    SyncEngine,
    SyncFilter,
    TestStatus,
    Workload,
)
from serversync.act import in_sync_scope
from serversync.testing import (
    FakeClock,
    InMemoryDirectory,
    InMemoryExchange,
    InMemoryExchangeItemsTransport,
    InMemoryIncomingTransport,
    InMemoryMailServer,
    InMemoryOutgoingTransport,
    InMemoryStorage,
    a_mailbox,
    a_profile,
    a_sync_filter,
    a_user,
)

__all__ = ["ALICE", "DictCrmRecords", "sync_contacts"]

ALICE = "alice@contoso.example"


class DictCrmRecords:
    """The host's CRM appointments, contacts and tasks over dicts, with row versions."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.records: dict[RecordRef, ActRecord] = {}
        self.filters: list[SyncFilter] = []
        self._numbers = itertools.count(1)

    async def list_sync_filters(self, user: RecordRef, entity: ActEntity) -> Sequence[SyncFilter]:
        return [f for f in self.filters if f.owner == user and f.entity is entity]

    async def find_sync_candidates(
        self,
        entity: ActEntity,
        filters: Sequence[SyncFilter],
        *,
        modified_after: datetime | None,
        limit: int,
    ) -> Sequence[ActRecord]:
        found = sorted(
            (
                r
                for r in self.records.values()
                if r.entity is entity
                and (modified_after is None or r.modified_on > modified_after)
                and in_sync_scope(r, filters, filters[0].owner)
            ),
            key=lambda r: r.modified_on,
        )
        return found[:limit]

    async def get_act_records(self, refs: Sequence[RecordRef]) -> Sequence[ActRecord]:
        return [self.records[ref] for ref in refs if ref in self.records]

    async def create_act_record(
        self,
        entity: ActEntity,
        owner: RecordRef,
        fields: FieldValues,
        *,
        series: RecordRef | None = None,
        original_start: datetime | None = None,
    ) -> ActRecord:
        number = next(self._numbers)
        record = ActRecord(
            ref=RecordRef(entity.value, f"host-{number}"),
            owner=owner,
            fields=dict(fields),
            version=str(number),
            modified_on=self.clock.now(),
            series=series,
            original_start=original_start,
        )
        self.records[record.ref] = record
        return record

    async def update_act_record(
        self, ref: RecordRef, changes: FieldValues, *, expected_version: str
    ) -> ActRecord:
        record = self.records.get(ref)
        if record is None or record.version != expected_version:
            raise StorageConflictError(f"{ref} changed meanwhile")
        updated = attrs.evolve(
            record,
            fields={**record.fields, **changes},
            version=str(next(self._numbers)),
            modified_on=self.clock.now(),
        )
        self.records[ref] = updated
        return updated

    async def delete_act_record(self, ref: RecordRef) -> bool:
        return self.records.pop(ref, None) is not None


async def sync_contacts() -> tuple[MailboxRunReport, InMemoryExchange]:
    """One contact of the host's CRM synced to Alice's in-memory Exchange mailbox."""
    clock = FakeClock()
    crm = DictCrmRecords(clock)
    records: ActRecordRepository = crm
    storage = InMemoryStorage(clock=clock)
    mappings: ExchangeSyncIdMappingRepository = storage
    exchange = InMemoryExchange(clock=clock)
    exchange.add_mailbox(ALICE, "alice-password")
    server = InMemoryMailServer(clock=clock)

    user = a_user(ALICE)
    profile = a_profile(server_type=ServerType.EXCHANGE_SERVER)
    storage.add_profile(profile)
    mailbox = a_mailbox(
        ALICE,
        owner=user.ref,
        profile_id=profile.id,
        act_delivery_method=ActDeliveryMethod.SERVER_SIDE_SYNC,
        act_status=TestStatus.SUCCESS,
    )
    storage.add_mailbox(mailbox)
    crm.filters.append(a_sync_filter(user.ref, ActEntity.CONTACT))
    await records.create_act_record(ActEntity.CONTACT, user.ref, {"last_name": "Lovelace"})

    engine = SyncEngine(
        repositories=storage,
        directory=InMemoryDirectory([user]),
        transports=serversync.Transports.for_all(
            incoming=InMemoryIncomingTransport(server),
            outgoing=InMemoryOutgoingTransport(server),
            act=InMemoryExchangeItemsTransport(exchange),
        ),
        credentials=serversync.MappingCredentials(
            by_mailbox={
                mailbox.id: serversync.Credentials(
                    username=ALICE, secret=serversync.Secret("alice-password")
                )
            }
        ),
        clock=clock,
        act_records=records,
        act_mappings=mappings,
    )
    async with engine:
        (report,) = await engine.sync_mailbox(mailbox.id, workloads=[Workload.ACT])
    return report, exchange
