"""What the Graph transports did, for tests and metrics."""

from __future__ import annotations

import collections
from typing import final

import attrs

__all__ = ["GraphStats"]


@final
@attrs.define
class GraphStats:
    """What a :class:`~serversync.adapters.transports.graph.GraphTransport` did, over all
    its sessions.

    ``requests`` counts HTTP requests by method, each as it was sent (a repeat after a 401
    or a throttled answer counts again); ``throttled`` counts 429 and 503 answers and
    ``waited`` those waited out in place. ``rounds_restarted`` counts delta rounds started
    again after Graph lost the token. ``headers_fetched`` and ``messages_fetched`` count
    header blocks and whole messages returned; ``messages_sent`` counts ``send`` requests
    Graph accepted, ``sends_reconciled`` the sends answered from a copy already in Sent
    Items, and ``drafts_reused`` the sends of a draft an earlier attempt left.
    ``large_drafts`` counts messages built as JSON drafts with separate attachments (too
    large for a MIME draft), ``drafts_replaced`` half-built drafts deleted to be built
    again, and ``bytes_uploaded`` the attachment bytes sent through upload sessions.
    ``batches`` counts ``$batch`` requests (their items count in ``requests`` as one POST).
    """

    sessions: int = 0
    requests: collections.Counter[str] = attrs.Factory(collections.Counter)
    throttled: int = 0
    waited: int = 0
    rounds_restarted: int = 0
    headers_fetched: int = 0
    messages_fetched: int = 0
    messages_sent: int = 0
    sends_reconciled: int = 0
    drafts_reused: int = 0
    large_drafts: int = 0
    drafts_replaced: int = 0
    bytes_uploaded: int = 0
    batches: int = 0

    def _count(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to the counter attribute ``name`` (one event loop: no lock)."""
        setattr(self, name, getattr(self, name) + amount)
