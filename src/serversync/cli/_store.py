"""What every command shares: the store URL, opening the store, and building an engine on it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs

from serversync import (
    ConfigurationError,
    MailboxId,
    ServerType,
    SyncEngine,
    SyncObserver,
    SyncSettings,
    Transports,
)
from serversync.adapters.transports.ews import EXCHANGE_SERVER_TYPES, EwsTransport
from serversync.adapters.transports.graph import GRAPH_SERVER_TYPES, GraphTransport
from serversync.adapters.transports.imap import ImapTransport
from serversync.adapters.transports.pop3 import Pop3Transport
from serversync.adapters.transports.smtp import SmtpTransport
from serversync.sql import SqlActRecords, SqlCredentials, SqlDirectory, SqlStorage

__all__ = [
    "DEFAULT_STORE",
    "STORE_VARIABLE",
    "Store",
    "mailbox_id_for",
    "open_store",
    "require_store",
    "store_url",
]

DEFAULT_STORE = "sqlite:///serversync.db"
STORE_VARIABLE = "SERVERSYNC_STORE"


def store_url(explicit: str | None) -> str:
    """The store to use: ``--store``, else ``$SERVERSYNC_STORE``, else ./serversync.db."""
    return explicit or os.environ.get(STORE_VARIABLE) or DEFAULT_STORE


def mailbox_id_for(address: str) -> MailboxId:
    """The id the CLI gives the mailbox of ``address``."""
    return MailboxId(f"mailbox:{address.strip().lower()}")


@attrs.frozen
class Store:
    """An open store with the directory and credentials that live in it."""

    storage: SqlStorage
    directory: SqlDirectory
    credentials: SqlCredentials

    def engine(
        self, *, engine_id: str | None = None, observer: SyncObserver | None = None
    ) -> SyncEngine:
        """An engine over this store with the IMAP, POP3, SMTP, EWS and Graph transports, and
        appointment, contact and task sync over EWS and Graph with the store's own ACT
        tables."""
        settings = SyncSettings()
        smtp = SmtpTransport(timeouts=settings.timeouts)
        ews = EwsTransport(timeouts=settings.timeouts)
        graph = GraphTransport(timeouts=settings.timeouts)
        transports = Transports.by_server_type(
            act={
                **dict.fromkeys(EXCHANGE_SERVER_TYPES, ews.act),
                **dict.fromkeys(GRAPH_SERVER_TYPES, graph.act),
            },
            incoming={
                ServerType.IMAP_SMTP: ImapTransport(timeouts=settings.timeouts),
                ServerType.OTHER_POP3_SMTP: Pop3Transport(timeouts=settings.timeouts),
                **dict.fromkeys(EXCHANGE_SERVER_TYPES, ews.incoming),
                **dict.fromkeys(GRAPH_SERVER_TYPES, graph.incoming),
            },
            outgoing={
                ServerType.IMAP_SMTP: smtp,
                ServerType.OTHER_POP3_SMTP: smtp,
                **dict.fromkeys(EXCHANGE_SERVER_TYPES, ews.outgoing),
                **dict.fromkeys(GRAPH_SERVER_TYPES, graph.outgoing),
            },
        )
        return SyncEngine(
            repositories=self.storage,
            directory=self.directory,
            transports=transports,
            credentials=self.credentials,
            settings=settings,
            act_records=SqlActRecords(self.storage),
            act_mappings=self.storage,
            engine_id=engine_id,
            observer=observer,
        )


def require_store(url: str, *, upgrade: bool) -> None:
    """Refuse a SQLite file that does not exist yet, unless the command creates it (SQLite
    would otherwise create an empty file and then complain about its schema)."""
    if url.startswith("sqlite") and not upgrade:
        path = url.split("///", 1)[-1]
        if path and path != ":memory:" and not os.path.exists(path):
            raise ConfigurationError(f"no store at {path}: run `serversync init` first")


@asynccontextmanager
async def open_store(url: str, *, upgrade: bool = False) -> AsyncIterator[Store]:
    """Open the store at ``url`` (creating or migrating its schema with ``upgrade``)."""
    storage = await SqlStorage.open(url, upgrade=upgrade)
    try:
        yield Store(storage, SqlDirectory(storage), SqlCredentials(storage))
    finally:
        await storage.aclose()
