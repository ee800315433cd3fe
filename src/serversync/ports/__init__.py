"""Ports: the typing.Protocols hosts implement (storage, credentials, rules) and adapters
provide (mail transports)."""

from serversync.ports.act import (
    ActRecordRepository,
    ExchangeItemsSession,
    ExchangeItemsTransport,
    ExchangeSyncIdMappingRepository,
)
from serversync.ports.attachments import AttachmentSource
from serversync.ports.clock import Clock
from serversync.ports.credentials import CredentialProvider
from serversync.ports.events import SyncObserver
from serversync.ports.permissions import SendAsPolicy
from serversync.ports.push import PushHint, PushHintSource
from serversync.ports.records import RecordCreator
from serversync.ports.relevance import Reject, RelevanceFacts, RelevanceRule, Track, Verdict
from serversync.ports.storage import (
    BatchIncomingRepository,
    CheckpointRepository,
    CorrelationKeyLookup,
    EmailActivityRepository,
    EmailServerProfileRepository,
    FolderTrackingRepository,
    IncomingRunRepository,
    LeaseRepository,
    MailboxRepository,
    QuarantineRepository,
    RecordDirectory,
    Repositories,
    TrackingFolderRepository,
    WorkloadRunEndRepository,
    WorkloadRunRepository,
    WorkloadStateRepository,
)
from serversync.ports.transports import (
    BatchMessageSession,
    IncomingMailSession,
    IncomingMailTransport,
    OutgoingMailSession,
    OutgoingMailTransport,
    SentFolderSession,
)

__all__ = [
    "ActRecordRepository",
    "AttachmentSource",
    "BatchIncomingRepository",
    "BatchMessageSession",
    "CheckpointRepository",
    "Clock",
    "CorrelationKeyLookup",
    "CredentialProvider",
    "EmailActivityRepository",
    "EmailServerProfileRepository",
    "ExchangeItemsSession",
    "ExchangeItemsTransport",
    "ExchangeSyncIdMappingRepository",
    "FolderTrackingRepository",
    "IncomingMailSession",
    "IncomingMailTransport",
    "IncomingRunRepository",
    "LeaseRepository",
    "MailboxRepository",
    "OutgoingMailSession",
    "OutgoingMailTransport",
    "PushHint",
    "PushHintSource",
    "QuarantineRepository",
    "RecordCreator",
    "RecordDirectory",
    "Reject",
    "RelevanceFacts",
    "RelevanceRule",
    "Repositories",
    "SendAsPolicy",
    "SentFolderSession",
    "SyncObserver",
    "Track",
    "TrackingFolderRepository",
    "Verdict",
    "WorkloadRunEndRepository",
    "WorkloadRunRepository",
    "WorkloadStateRepository",
]
