"""The ACT contract checks on the in-memory adapters, and proof that the checks can fail."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from serversync.model import (
    ActRecord,
    Credentials,
    ExchangeSyncIdMapping,
    Secret,
)
from serversync.ports import ExchangeItemsSession
from serversync.testing import (
    InMemoryExchange,
    InMemoryExchangeItemsTransport,
    InMemoryStorage,
    a_mailbox,
    a_profile,
    check_act_record_repository,
    check_exchange_items_session,
    check_exchange_sync_id_mapping_repository,
)
from serversync.testing.act_contracts import _CONTRACT_USER


async def _storage() -> InMemoryStorage:
    return InMemoryStorage()


async def test_memory_act_records_keep_the_contract() -> None:
    await check_act_record_repository(_storage)


async def test_memory_exchange_mappings_keep_the_contract() -> None:
    await check_exchange_sync_id_mapping_repository(_storage)


@asynccontextmanager
async def _memory_session() -> AsyncIterator[ExchangeItemsSession]:
    exchange = InMemoryExchange()
    exchange.add_mailbox("alice@contoso.example", "pw")
    mailbox = a_mailbox("alice@contoso.example")
    credentials = Credentials(username="alice@contoso.example", secret=Secret("pw"))
    transport = InMemoryExchangeItemsTransport(exchange)
    async with transport.open(mailbox, a_profile(), credentials) as session:
        yield session


async def test_memory_exchange_items_session_keeps_the_contract() -> None:
    await check_exchange_items_session(_memory_session)


async def test_the_record_check_catches_an_update_that_ignores_the_version() -> None:
    storage = InMemoryStorage()
    original = storage.update_act_record

    async def careless(ref: object, changes: object, *, expected_version: str) -> ActRecord:
        record = storage.act_record(ref)  # type: ignore[arg-type]
        assert record is not None
        return await original(ref, changes, expected_version=record.version)  # type: ignore[arg-type]

    storage.update_act_record = careless  # type: ignore[method-assign]

    async def factory() -> InMemoryStorage:
        return storage

    with pytest.raises(AssertionError, match="old version"):
        await check_act_record_repository(factory, owner=_CONTRACT_USER)


async def test_the_mapping_check_catches_duplicate_links() -> None:
    storage = InMemoryStorage()

    async def unchecked(mapping: ExchangeSyncIdMapping) -> None:
        storage._mappings[mapping.id] = mapping

    storage.save_mapping = unchecked  # type: ignore[method-assign]

    async def factory() -> InMemoryStorage:
        return storage

    with pytest.raises(AssertionError, match="second linked mapping"):
        await check_exchange_sync_id_mapping_repository(factory)
