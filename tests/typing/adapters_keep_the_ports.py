"""Checked by mypy, never run: every shipped adapter implements its port in full.

The adapters do not inherit from the Protocols (inheriting would hand them the Protocols'
empty method bodies, so a missing method would go unnoticed); these functions make mypy
compare each one with its port structurally instead.
"""

from __future__ import annotations

from serversync import MappingCredentials, ReferencedCredentials
from serversync.adapters.transports import ImapTransport
from serversync.adapters.transports.graph import (
    GraphIncomingTransport,
    GraphPushIncomingTransport,
)
from serversync.ports import (
    ActRecordRepository,
    CredentialProvider,
    ExchangeItemsTransport,
    ExchangeSyncIdMappingRepository,
    IncomingMailTransport,
    PushHintSource,
    RecordCreator,
    RecordDirectory,
    Repositories,
)
from serversync.sql import SqlActRecords, SqlCredentials, SqlDirectory, SqlStorage
from serversync.testing import (
    InMemoryDirectory,
    InMemoryExchangeItemsTransport,
    InMemoryIncomingTransport,
    InMemoryStorage,
)


def in_memory_storage(adapter: InMemoryStorage) -> Repositories:
    return adapter


def sql_storage(adapter: SqlStorage) -> Repositories:
    return adapter


def in_memory_directory(adapter: InMemoryDirectory) -> RecordDirectory:
    return adapter


def sql_directory(adapter: SqlDirectory) -> RecordDirectory:
    return adapter


def in_memory_record_creator(adapter: InMemoryDirectory) -> RecordCreator:
    return adapter


def sql_record_creator(adapter: SqlDirectory) -> RecordCreator:
    return adapter


def mapping_credentials(adapter: MappingCredentials) -> CredentialProvider:
    return adapter


def referenced_credentials(adapter: ReferencedCredentials) -> CredentialProvider:
    return adapter


def sql_credentials(adapter: SqlCredentials) -> CredentialProvider:
    return adapter


def imap_push(adapter: ImapTransport) -> PushHintSource:
    return adapter


def graph_push(adapter: GraphPushIncomingTransport) -> PushHintSource:
    return adapter


def graph_incoming(
    adapter: GraphIncomingTransport | GraphPushIncomingTransport,
) -> IncomingMailTransport:
    return adapter


def in_memory_push(adapter: InMemoryIncomingTransport) -> PushHintSource:
    return adapter


def in_memory_act_records(adapter: InMemoryStorage) -> ActRecordRepository:
    return adapter


def in_memory_exchange_mappings(adapter: InMemoryStorage) -> ExchangeSyncIdMappingRepository:
    return adapter


def in_memory_exchange_items(adapter: InMemoryExchangeItemsTransport) -> ExchangeItemsTransport:
    return adapter


def sql_act_records(adapter: SqlActRecords) -> ActRecordRepository:
    return adapter


def sql_exchange_mappings(adapter: SqlStorage) -> ExchangeSyncIdMappingRepository:
    return adapter
