"""What the EWS transports did, counted from the worker threads that do it."""

from __future__ import annotations

import collections
import threading
from typing import final

import attrs

__all__ = ["EwsStats"]


@final
@attrs.define
class EwsStats:
    """What an :class:`~serversync.adapters.transports.EwsTransport` did, over all its
    sessions: for tests and metrics.

    ``requests`` counts EWS requests by operation (``"GetItem"``, ``"SyncFolderItems"``,
    ...), each HTTP request as it was sent. ``headers_fetched`` and ``messages_fetched``
    count header blocks and whole messages returned; ``messages_sent`` counts messages
    handed to Exchange, ``sends_reconciled`` the sends answered from a copy already in Sent
    Items instead of sending again. ``bytes_received`` and ``read_chunks`` count the bytes of
    the responses exchangelib parsed and the pieces it read them in.
    """

    connections: int = 0
    requests: collections.Counter[str] = attrs.Factory(collections.Counter)
    headers_fetched: int = 0
    messages_fetched: int = 0
    messages_sent: int = 0
    sends_reconciled: int = 0
    bytes_received: int = 0
    read_chunks: int = 0
    # Sessions count from their own worker threads at the same time.
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False, eq=False)

    def _count(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to the counter attribute ``name``."""
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def _count_request(self, operation: str) -> None:
        """Count one HTTP request of ``operation``."""
        with self._lock:
            self.requests[operation] += 1

    def _count_read(self, size: int) -> None:
        """Count one piece of a response, ``size`` bytes long, read by exchangelib."""
        with self._lock:
            self.read_chunks += 1
            self.bytes_received += size
