"""Mail transport adapters."""

from typing import TYPE_CHECKING, Any

from serversync.adapters.transports.imap import ImapStats, ImapTransport
from serversync.adapters.transports.pop3 import Pop3Stats, Pop3Transport
from serversync.adapters.transports.smtp import SmtpTransport

if TYPE_CHECKING:
    from serversync.adapters.transports.ews import (
        ACT_FIELDS,
        EXCHANGE_SERVER_TYPES,
        TRACKED_CATEGORY,
        UNDELIVERABLE_CATEGORY,
        UNDELIVERABLE_FOLDER,
        EwsActTransport,
        EwsIncomingTransport,
        EwsOutgoingTransport,
        EwsStats,
        EwsTransport,
    )
    from serversync.adapters.transports.graph import (
        GRAPH_SERVER_TYPES,
        AccessTokenCredentials,
        GraphStats,
        GraphTokenSource,
        GraphTransport,
        MsalClientCredentials,
        TokenCallback,
    )

__all__: list[str] = [
    "ACT_FIELDS",
    "EXCHANGE_SERVER_TYPES",
    "GRAPH_SERVER_TYPES",
    "TRACKED_CATEGORY",
    "UNDELIVERABLE_CATEGORY",
    "UNDELIVERABLE_FOLDER",
    "AccessTokenCredentials",
    "EwsActTransport",
    "EwsIncomingTransport",
    "EwsOutgoingTransport",
    "EwsStats",
    "EwsTransport",
    "GraphStats",
    "GraphTokenSource",
    "GraphTransport",
    "ImapStats",
    "ImapTransport",
    "MsalClientCredentials",
    "Pop3Stats",
    "Pop3Transport",
    "SmtpTransport",
    "TokenCallback",
]

_EWS_NAMES = frozenset(
    {
        "ACT_FIELDS",
        "EXCHANGE_SERVER_TYPES",
        "TRACKED_CATEGORY",
        "UNDELIVERABLE_CATEGORY",
        "UNDELIVERABLE_FOLDER",
        "EwsActTransport",
        "EwsIncomingTransport",
        "EwsOutgoingTransport",
        "EwsStats",
        "EwsTransport",
    }
)


_GRAPH_NAMES = frozenset(
    {
        "GRAPH_SERVER_TYPES",
        "AccessTokenCredentials",
        "GraphStats",
        "GraphTokenSource",
        "GraphTransport",
        "MsalClientCredentials",
        "TokenCallback",
    }
)


def __getattr__(name: str) -> Any:
    # exchangelib takes about half a second to import: only code that uses EWS pays for it.
    if name in _EWS_NAMES:
        from serversync.adapters.transports import ews

        return getattr(ews, name)
    # httpx and MSAL come with the graph extra: only code that uses Graph needs them.
    if name in _GRAPH_NAMES:
        from serversync.adapters.transports import graph

        return getattr(graph, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
