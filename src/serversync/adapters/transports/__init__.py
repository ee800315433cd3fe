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

__all__: list[str] = [
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
    "ImapStats",
    "ImapTransport",
    "Pop3Stats",
    "Pop3Transport",
    "SmtpTransport",
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


def __getattr__(name: str) -> Any:
    # exchangelib takes about half a second to import: only code that uses EWS pays for it.
    if name in _EWS_NAMES:
        from serversync.adapters.transports import ews

        return getattr(ews, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
