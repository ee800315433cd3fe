"""A fake Microsoft Graph for tests: one stateful tenant that speaks Graph's HTTP and JSON.

:class:`FakeGraph` keeps mailboxes (well-known folders, messages with their MIME, drafts,
Sent Items, categories, extended properties, moves), per-folder message delta rounds with
next and delta links (and their loss: 410 ``SyncStateNotFound``), the send that files the
draft in Sent Items, calendar events, contacts and To Do tasks with their delta rounds
(:class:`FakeItems`, ``fake.items``), applications with client secrets and consent, bearer
tokens, injected faults (:class:`GraphFault`: throttling with ``Retry-After``, a 504 after
the send went through, slow answers), change-notification subscriptions
(``fake.subscriptions``: the validation handshake and the notifications POSTed over real
HTTP, lifecycle events on demand) and a record of every request. It is served three ways:

- in process: ``fake.transport()`` is an httpx transport to hand to the Graph transports
  (``GraphTransport(http_transport=fake.transport())``), no sockets;
- on loopback over real HTTP: ``async with fake.serve() as url: ...`` (also ``with``);
- to MSAL: ``fake.msal_http_client()`` is MSAL's ``http_client`` for the token endpoint of
  ``https://login.microsoftonline.com/<tenant>``, so client credentials run offline.

::

    from serversync.adapters.transports.graph import GraphTransport, MsalClientCredentials
    from serversync.testing.graph import FakeGraph

    fake = FakeGraph()
    fake.add_mailbox("alice@contoso.example")
    fake.add_app("app-id", "app-secret")
    fake.deliver("alice@contoso.example", raw_message_bytes)
    graph = GraphTransport(
        http_transport=fake.transport(),
        tokens=MsalClientCredentials(
            authority=fake.authority, http_client=fake.msal_http_client()
        ),
    )

This module is not imported by ``serversync.testing``; import it explicitly (it needs the
``graph`` extra). Its answers follow Microsoft's documented samples; only a live tenant
confirms Graph agrees with it (see the Microsoft Graph page of the documentation).

:func:`serve_asgi` serves a host's ASGI app (with a mounted ``GraphWebhookHandler``) on
loopback, for the fake's notifications to reach it.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from typing import Final

import httpx

from serversync.testing.graph._core import (
    FakeMessage,
    GraphFault,
    GraphRequest,
    GraphResponse,
    GraphState,
    RequestRecord,
    SentMail,
    format_http_date,
)
from serversync.testing.graph._host import AsgiApp, serve_asgi
from serversync.testing.graph._items import FakeItems
from serversync.testing.graph._serve import (
    FakeEntraHttpClient,
    LoopbackServer,
    in_process_transport,
)
from serversync.testing.graph._subscriptions import (
    FakeSubscription,
    FakeSubscriptions,
    NotificationRecord,
)

__all__ = [
    "FAKE_GRAPH_URL",
    "AsgiApp",
    "FakeEntraHttpClient",
    "FakeGraph",
    "FakeItems",
    "FakeMessage",
    "FakeSubscription",
    "FakeSubscriptions",
    "GraphFault",
    "GraphRequest",
    "GraphResponse",
    "NotificationRecord",
    "RequestRecord",
    "SentMail",
    "format_http_date",
    "serve_asgi",
]

FAKE_GRAPH_URL: Final = "https://graph.microsoft.com/v1.0"
"""The base URL to give the Graph transports when the fake serves in process."""


class FakeGraph(GraphState):
    """A fake Graph tenant (see the module documentation).

    Arrange with :meth:`add_mailbox`, :meth:`add_folder`, :meth:`deliver`, :meth:`add_app`
    and :meth:`issue_token`; disturb with :meth:`add_fault`, :meth:`expire_delta_tokens`,
    :meth:`expire_tokens`, :meth:`revoke_consent` and :meth:`links_to`; inspect
    :attr:`sent`, :attr:`requests` and :meth:`messages`.
    """

    def __init__(
        self, *, tenant: str = "contoso.example", now: Callable[[], datetime] | None = None
    ) -> None:
        # ``now`` stamps items' lastModifiedDateTime (a test's fake clock: one time line).
        super().__init__(tenant=tenant, now=now)

    @property
    def authority(self) -> str:
        """The Entra ID authority for MSAL (answered by :meth:`msal_http_client`)."""
        return f"https://login.microsoftonline.com/{self.tenant}"

    def transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport answering in process, for :data:`FAKE_GRAPH_URL`."""
        return in_process_transport(self)

    def msal_http_client(self) -> FakeEntraHttpClient:
        """MSAL's ``http_client``, answered by the fake token endpoint."""
        return FakeEntraHttpClient(self)

    @contextlib.contextmanager
    def serve_blocking(self, *, tls: ssl.SSLContext | None = None) -> Iterator[str]:
        """Serve on loopback over real HTTP (HTTPS with ``tls``, a server-side context);
        yields the base URL (``http://127.0.0.1:…/v1.0``)."""
        server = LoopbackServer(self, tls=tls)
        server.start()
        try:
            yield f"{server.scheme}://127.0.0.1:{server.port}/v1.0"
        finally:
            server.stop()

    @contextlib.asynccontextmanager
    async def serve(self, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
        """:meth:`serve_blocking` for ``async with``."""
        with self.serve_blocking(tls=tls) as url:
            yield url
