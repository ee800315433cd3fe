"""A protocol-level Exchange Web Services (EWS) server for tests.

:class:`EwsTestServer` serves EWS over real HTTP and SOAP on loopback, from mailboxes kept
in memory, so that code using an unmodified EWS client (exchangelib) can be tested without
an Exchange server::

    from exchangelib import DELEGATE, Account, Configuration, Credentials
    from exchangelib.transport import BASIC
    from exchangelib.version import EXCHANGE_2016, Version

    from serversync.testing.ews import EwsTestServer

    with EwsTestServer() as server:
        server.add_mailbox("alice@contoso.example", password="secret")
        server.deliver("alice@contoso.example", raw_message_bytes)
        config = Configuration(
            service_endpoint=server.url,
            credentials=Credentials("alice@contoso.example", "secret"),
            auth_type=BASIC,
            version=Version(build=EXCHANGE_2016),
        )
        account = Account(
            "alice@contoso.example", config=config, autodiscover=False, access_type=DELEGATE
        )
        ...

This module is not imported by ``serversync.testing``; import it explicitly.
"""

from serversync.testing.ews._faults import (
    Delay,
    DropConnection,
    EwsFault,
    Fault,
    HttpError,
    ServerBusy,
)
from serversync.testing.ews._server import EWS_PATH, EwsTestServer
from serversync.testing.ews._views import FolderView, ItemView, OutboxMessage, RequestRecord

__all__ = [
    "EWS_PATH",
    "Delay",
    "DropConnection",
    "EwsFault",
    "EwsTestServer",
    "Fault",
    "FolderView",
    "HttpError",
    "ItemView",
    "OutboxMessage",
    "RequestRecord",
    "ServerBusy",
]
