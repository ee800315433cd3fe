"""What every pipeline of one engine shares: ports, settings and the deadline helper."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from datetime import timedelta
from typing import TypeVar

import attrs

from serversync.errors import OperationTimeoutError, SyncError
from serversync.ports import (
    ActRecordRepository,
    AttachmentSource,
    Clock,
    CredentialProvider,
    ExchangeSyncIdMappingRepository,
    RecordDirectory,
    RelevanceRule,
    Repositories,
    SendAsPolicy,
    SyncObserver,
)
from serversync.settings import SyncSettings

from ._transports import Transports

__all__ = ["EngineContext", "deadline", "logger"]

logger = logging.getLogger("serversync")

T = TypeVar("T")


async def deadline(limit: timedelta, awaitable: Awaitable[T], what: str) -> T:
    """Await ``awaitable`` for at most ``limit``; a miss raises :class:`OperationTimeoutError`."""
    try:
        async with asyncio.timeout(limit.total_seconds()):
            return await awaitable
    except TimeoutError as exc:
        if isinstance(exc, SyncError):  # an adapter's own OperationTimeoutError
            raise
        raise OperationTimeoutError(
            f"{what} did not finish within {limit.total_seconds():g} s"
        ) from exc


@attrs.frozen(kw_only=True)
class EngineContext:
    """The engine's collaborators, handed to the incoming and outgoing pipelines."""

    engine_id: str
    repositories: Repositories
    directory: RecordDirectory
    transports: Transports
    credentials: CredentialProvider
    rules: Sequence[RelevanceRule]
    settings: SyncSettings
    clock: Clock
    observer: SyncObserver
    send_as: SendAsPolicy | None = None
    attachments: AttachmentSource | None = None
    act_records: ActRecordRepository | None = None
    act_mappings: ExchangeSyncIdMappingRepository | None = None

    async def storage(self, awaitable: Awaitable[T], what: str) -> T:
        """A repository call under the storage deadline."""
        return await deadline(self.settings.timeouts.storage, awaitable, what)
