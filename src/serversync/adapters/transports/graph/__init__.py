"""The Microsoft Graph transports: Exchange Online mail over Graph's REST API, for profiles
of server type :attr:`~serversync.model.ServerType.MICROSOFT_GRAPH`. Needs the ``graph``
extra (``pip install 'serversync[graph]'``: httpx and MSAL).

:class:`GraphTransport` holds all three: ``GraphTransport().incoming`` reads mail
(:class:`GraphIncomingTransport`), ``GraphTransport().outgoing`` sends it
(:class:`GraphOutgoingTransport`) and ``GraphTransport().act`` syncs appointments,
contacts and To Do tasks (:class:`GraphActTransport`).

- **Connection.** The profile endpoint's ``host`` is the Graph base URL
  (``https://graph.microsoft.com/v1.0``, the default when the profile names none); plain
  ``http`` only with ``tls=TlsMode.NONE``. Mailboxes are addressed as
  ``/users/{email address}``. The bearer token goes to that origin only.
- **Tokens.** A :class:`GraphTokenSource` gives them: by default the access token the
  credential provider resolves (:class:`AccessTokenCredentials`); :class:`TokenCallback`
  for delegated tokens the host refreshes; :class:`MsalClientCredentials` for application
  permissions through MSAL, with its token cache. A 401 gets one fresh token, then raises
  :class:`~serversync.errors.AuthenticationError`.
- **Reading.** Per-folder message delta; the cursor is the whole resume URL
  (:class:`~serversync.model.GraphCheckpoint`). A token Graph has forgotten (410,
  ``syncStateNotFound``) lists the folder again (``reset=True``), after a random wait
  within ``restart_jitter`` so that mass resets spread out. Headers come from the
  delta's selected properties (``internetMessageHeaders``), MIME (``$value``) only for the
  messages the engine tracks. Processed messages get a category and an extended property
  (:data:`MARK_PROPERTY`), and with the profile's
  ``move_undelivered_emails`` undeliverable ones move to the Undeliverable folder under the
  Inbox.
- **Sending.** A draft with our Message-ID and an extended property, then ``send`` with no
  automatic retry; Sent Items and Drafts are asked before any resend, so an email is never
  sent twice (see :class:`GraphOutgoingTransport`).
- **Throttling.** A 429 or 503 with a ``Retry-After`` of a few seconds (seconds or an HTTP
  date) is waited out for reads, one without it after a jittered exponential backoff capped
  at ``max_inline_wait``; a longer one is raised as
  :class:`~serversync.errors.ServerBusyError` with ``retry_after`` for the engine to
  honour. POSTs are never repeated by the client. At most ``concurrency`` (4) requests per
  mailbox are in flight at once, and at most ``request_budget`` (10,000 per 10 minutes,
  :class:`RequestBudget`) go out, over both halves.
- **Large messages.** A message over :data:`MIME_DRAFT_LIMIT` (about 3 MB) is sent as a
  JSON draft whose attachments are added separately, from 3 MB through upload sessions.
- **Push.** With a :class:`GraphWebhookHandler` (``webhook=``) mounted by the host, the
  incoming half is a :class:`~serversync.ports.PushHintSource`: each watch keeps a
  change-notification subscription to the mailbox's Inbox, and a notification wakes the
  mailbox in :meth:`~serversync.SyncEngine.run_forever`. Without one, mailboxes are polled.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Final, final

import httpx

from serversync.adapters._ports_docs import documented_by
from serversync.adapters.transports.graph._act import (
    CRM_ID_PROPERTY,
    LINKED_APPLICATION,
    ActOptions,
    GraphActSession,
)
from serversync.adapters.transports.graph._auth import (
    GRAPH_DEFAULT_SCOPE,
    AccessTokenCredentials,
    GraphTokenSource,
    MsalClientCredentials,
    TokenCallback,
)
from serversync.adapters.transports.graph._client import GraphClient, GraphOptions
from serversync.adapters.transports.graph._incoming import (
    MARK_PROPERTY,
    GraphIncomingSession,
    IncomingOptions,
)
from serversync.adapters.transports.graph._limits import (
    DEFAULT_CONCURRENCY,
    DEFAULT_REQUEST_BUDGET,
    MailboxGates,
    RequestBudget,
)
from serversync.adapters.transports.graph._outgoing import (
    MESSAGE_ID_PROPERTY,
    MIME_DRAFT_LIMIT,
    GraphOutgoingSession,
    OutgoingOptions,
)
from serversync.adapters.transports.graph._stats import GraphStats
from serversync.adapters.transports.graph._subscription import (
    MAX_MESSAGE_SUBSCRIPTION,
    SubscriptionOptions,
    watch_inbox,
)
from serversync.adapters.transports.graph._webhook import (
    GraphWebhookHandler,
    LifecycleEvent,
    WebhookResponse,
    WebhookStats,
)
from serversync.errors import ConfigurationError
from serversync.model import (
    Credentials,
    EmailServerProfile,
    Mailbox,
    ServerEndpoint,
    ServerType,
    TlsMode,
)
from serversync.ports import (
    Clock,
    ExchangeItemsSession,
    ExchangeItemsTransport,
    IncomingMailSession,
    IncomingMailTransport,
    OutgoingMailSession,
    OutgoingMailTransport,
    PushHint,
    PushHintSource,
)
from serversync.settings import Timeouts

__all__ = [
    "CRM_ID_PROPERTY",
    "GRAPH_BASE_URL",
    "GRAPH_DEFAULT_SCOPE",
    "GRAPH_SERVER_TYPES",
    "LINKED_APPLICATION",
    "MARK_PROPERTY",
    "MAX_MESSAGE_SUBSCRIPTION",
    "MESSAGE_ID_PROPERTY",
    "MIME_DRAFT_LIMIT",
    "TRACKED_CATEGORY",
    "UNDELIVERABLE_CATEGORY",
    "UNDELIVERABLE_FOLDER",
    "AccessTokenCredentials",
    "GraphActTransport",
    "GraphIncomingTransport",
    "GraphOutgoingTransport",
    "GraphPushIncomingTransport",
    "GraphStats",
    "GraphTokenSource",
    "GraphTransport",
    "GraphWebhookHandler",
    "LifecycleEvent",
    "MsalClientCredentials",
    "RequestBudget",
    "TokenCallback",
    "WebhookResponse",
    "WebhookStats",
]

GRAPH_BASE_URL: Final = "https://graph.microsoft.com/v1.0"
"""Microsoft Graph v1.0 in the global cloud (national clouds have their own hosts)."""
GRAPH_SERVER_TYPES: Final = (ServerType.MICROSOFT_GRAPH,)
"""The server types the Graph transports serve."""
TRACKED_CATEGORY: Final = "ServerSync Tracked"
"""The category given to a message once it is stored (or found to be a duplicate)."""
UNDELIVERABLE_CATEGORY: Final = "ServerSync Undeliverable"
"""The category given to a message that could not be processed."""
UNDELIVERABLE_FOLDER: Final = "Undeliverable"
"""The folder under the Inbox that undeliverable messages move to, when the profile asks and
the mailbox names no folder of its own (``Mailbox.undeliverable_folder``)."""


def _base_url(endpoint: ServerEndpoint | None, mailbox: Mailbox) -> str:
    if endpoint is None or not endpoint.host:
        return GRAPH_BASE_URL
    host = endpoint.host.rstrip("/")
    if "://" not in host:
        raise ConfigurationError(
            f"the Graph endpoint {host!r} is no URL (https://graph.microsoft.com/v1.0)",
            mailbox_id=mailbox.id,
        )
    if host.lower().startswith("http://") and endpoint.tls is not TlsMode.NONE:
        # A bearer token in plain text: only when the profile asks for it (a loopback fake).
        raise ConfigurationError(
            f"the Graph endpoint {host} is plain HTTP but the profile asks for TLS "
            "(set tls=TlsMode.NONE to allow it)",
            mailbox_id=mailbox.id,
        )
    return host


def _verify(endpoint: ServerEndpoint | None, mailbox: Mailbox) -> bool | ssl.SSLContext:
    if endpoint is None:
        return True
    if endpoint.ca_file is not None:
        # The profile's CA bundle, and nothing else, for this connection.
        try:
            return ssl.create_default_context(cafile=endpoint.ca_file)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the CA file {endpoint.ca_file}: {exc.strerror or exc}",
                mailbox_id=mailbox.id,
            ) from exc
    return endpoint.verify_certificate


class _Base:
    def __init__(
        self,
        *,
        timeouts: Timeouts | None,
        tokens: GraphTokenSource | None,
        http_transport: httpx.AsyncBaseTransport | None,
        max_inline_wait: timedelta,
        page_size: int,
        stats: GraphStats | None,
        gates: MailboxGates | None,
        concurrency: int,
        request_budget: RequestBudget,
        random_source: Callable[[], float],
        clock: Clock | None = None,
    ) -> None:
        self.stats = stats if stats is not None else GraphStats()
        self._random = random_source
        # ``gates`` is GraphTransport's, shared by its halves; a half made alone has its own.
        self._gates = gates or MailboxGates(concurrency, request_budget)
        self._now: Callable[[], datetime] = (
            clock.now if clock is not None else lambda: datetime.now(UTC)
        )
        self._timeouts = timeouts or Timeouts()
        self._tokens: GraphTokenSource = tokens or AccessTokenCredentials()
        self._http_transport = http_transport
        self._max_inline_wait = max_inline_wait
        self._page_size = page_size

    @asynccontextmanager
    async def _client(
        self, mailbox: Mailbox, endpoint: ServerEndpoint | None, credentials: Credentials | None
    ) -> AsyncIterator[GraphClient]:
        base = _base_url(endpoint, mailbox)
        tokens = self._tokens

        async def token(refresh: bool) -> str:
            return await tokens.token(mailbox, credentials, refresh=refresh)

        self.stats._count("sessions")
        http = httpx.AsyncClient(
            transport=self._http_transport,
            verify=_verify(endpoint, mailbox),
            follow_redirects=False,
            timeout=self._timeouts.command.total_seconds(),
        )
        try:
            yield GraphClient(
                http,
                options=GraphOptions(
                    base_url=base,
                    max_inline_wait=self._max_inline_wait,
                    page_size=self._page_size,
                ),
                token=token,
                mailbox_id=mailbox.id,
                stats=self.stats,
                gate=self._gates.gate(mailbox.id),
                random_source=self._random,
            )
        finally:
            await http.aclose()


@final
@documented_by(IncomingMailTransport)
class GraphIncomingTransport(_Base):
    """Reads mail through Graph; one instance serves every Graph mailbox.

    ``timeouts`` bounds every request: listings and tagging under ``command``, MIME under
    ``fetch``. ``http_transport`` replaces httpx's network transport (tests hand in the fake
    Graph's). ``page_size`` is the delta page size asked for (``odata.maxpagesize``).
    ``stats`` is shared with a :class:`GraphTransport`'s outgoing half when it built this
    one. ``concurrency`` and ``request_budget`` bound each mailbox's requests (see the
    module documentation). After Graph lost a folder's delta token, the new round waits a
    random part of ``restart_jitter`` (drawn from ``random_source``, at most a quarter of
    ``timeouts.command``), so that mailboxes reset together do not list all at once;
    ``random_source`` also draws the jitter of the backoff after a 503 without
    ``Retry-After``.

    It gives no push hints: Graph mailboxes read through it are polled.
    :class:`GraphPushIncomingTransport` adds change notifications.
    """

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        tokens: GraphTokenSource | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        max_inline_wait: timedelta = timedelta(seconds=5),
        page_size: int = 100,
        tracked_category: str = TRACKED_CATEGORY,
        undeliverable_category: str = UNDELIVERABLE_CATEGORY,
        undeliverable_folder: str = UNDELIVERABLE_FOLDER,
        concurrency: int = DEFAULT_CONCURRENCY,
        request_budget: RequestBudget = DEFAULT_REQUEST_BUDGET,
        restart_jitter: timedelta = timedelta(seconds=10),
        random_source: Callable[[], float] = random.random,
        stats: GraphStats | None = None,
        _gates: MailboxGates | None = None,
    ) -> None:
        super().__init__(
            timeouts=timeouts,
            tokens=tokens,
            http_transport=http_transport,
            max_inline_wait=max_inline_wait,
            page_size=page_size,
            stats=stats,
            gates=_gates,
            concurrency=concurrency,
            request_budget=request_budget,
            random_source=random_source,
        )
        self._tracked_category = tracked_category
        self._restart_jitter = restart_jitter
        self._undeliverable_category = undeliverable_category
        self._undeliverable_folder = undeliverable_folder

    @asynccontextmanager
    async def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AsyncIterator[IncomingMailSession]:
        options = IncomingOptions(
            timeouts=self._timeouts,
            tracked_category=self._tracked_category,
            undeliverable_category=self._undeliverable_category,
            undeliverable_folder_name=self._undeliverable_folder,
            move_undeliverable=profile.move_undelivered_emails,
            restart_jitter=self._restart_jitter,
            random=self._random,
        )
        async with self._client(mailbox, profile.incoming, credentials) as client:
            session = GraphIncomingSession(client, mailbox=mailbox, options=options)
            await session.probe()
            yield session


@final
@documented_by(IncomingMailTransport, PushHintSource)
class GraphPushIncomingTransport:
    """A :class:`GraphIncomingTransport` with push hints from change notifications: reads
    mail through ``incoming`` and is a :class:`~serversync.ports.PushHintSource` as well.

    ``webhook`` is the host's mounted :class:`GraphWebhookHandler`;
    ``subscription_lifetime`` is the life asked for each subscription (at most
    :data:`MAX_MESSAGE_SUBSCRIPTION`), renewed after two thirds of it.
    """

    def __init__(
        self,
        incoming: GraphIncomingTransport,
        *,
        webhook: GraphWebhookHandler,
        subscription_lifetime: timedelta = timedelta(minutes=4200),
    ) -> None:
        self._incoming = incoming
        self._webhook = webhook
        self._subscriptions = SubscriptionOptions(
            lifetime=subscription_lifetime, timeouts=incoming._timeouts
        )

    @property
    def stats(self) -> GraphStats:
        """The reading transport's :class:`GraphStats`."""
        return self._incoming.stats

    def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AbstractAsyncContextManager[IncomingMailSession]:
        """The reading transport's session (:meth:`GraphIncomingTransport.open`)."""
        return self._incoming.open(mailbox, profile, credentials)

    async def watch(
        self,
        mailbox: Mailbox,
        profile: EmailServerProfile,
        credentials: Credentials | None,
        *,
        hint: Callable[[PushHint], None],
        refresh_every: timedelta,
    ) -> None:
        """Keep a change-notification subscription to the Inbox (see
        :class:`GraphWebhookHandler`); when Graph refuses the subscription, a
        :class:`~serversync.errors.ConfigurationError`: polled only."""
        async with self._incoming._client(mailbox, profile.incoming, credentials) as client:
            await watch_inbox(
                client,
                self._webhook,
                mailbox,
                hint=hint,
                refresh_every=refresh_every,
                options=self._subscriptions,
            )


@final
@documented_by(OutgoingMailTransport)
class GraphOutgoingTransport(_Base):
    """Sends mail through Graph; one instance serves every Graph mailbox.

    Each send is a draft (the composed MIME, tagged with :data:`MESSAGE_ID_PROPERTY`) and
    one ``send`` request, never repeated blindly: Sent Items, Drafts and the Outbox are
    asked first, and again when ``send`` fails in a way that may have sent the message. So
    the engine's retries, and ``ExpiredClaimPolicy.RESEND``, never send an email twice.
    ``timeouts.send`` bounds one whole send, look-ups included.
    """

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        tokens: GraphTokenSource | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        max_inline_wait: timedelta = timedelta(seconds=5),
        concurrency: int = DEFAULT_CONCURRENCY,
        request_budget: RequestBudget = DEFAULT_REQUEST_BUDGET,
        random_source: Callable[[], float] = random.random,
        stats: GraphStats | None = None,
        _gates: MailboxGates | None = None,
    ) -> None:
        super().__init__(
            timeouts=timeouts,
            tokens=tokens,
            http_transport=http_transport,
            max_inline_wait=max_inline_wait,
            page_size=100,
            stats=stats,
            gates=_gates,
            concurrency=concurrency,
            request_budget=request_budget,
            random_source=random_source,
            clock=clock,
        )

    @asynccontextmanager
    async def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AsyncIterator[OutgoingMailSession]:
        options = OutgoingOptions(timeouts=self._timeouts, now=self._now)
        async with self._client(mailbox, profile.outgoing_endpoint, credentials) as client:
            session = GraphOutgoingSession(client, mailbox=mailbox, options=options)
            await session.probe()
            yield session


@final
@documented_by(ExchangeItemsTransport)
class GraphActTransport(_Base):
    """Syncs appointments, contacts and To Do tasks through Graph; one instance serves every
    Graph mailbox.

    The calendar is read through ``calendarView/delta`` over a window of ``window_past``
    before now to ``window_future`` after it, started again over a new window once its start
    lags ``window_roll`` behind. Events are created with a ``transactionId`` derived from
    the CRM record and carry its id in :data:`CRM_ID_PROPERTY`; tasks carry it as a
    ``linkedResource`` (:data:`LINKED_APPLICATION`). Every write names the change key it
    read (``If-Match``): a stale one raises
    :class:`~serversync.errors.StorageConflictError`.
    """

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        tokens: GraphTokenSource | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        max_inline_wait: timedelta = timedelta(seconds=5),
        window_past: timedelta = timedelta(days=30),
        window_future: timedelta = timedelta(days=365),
        window_roll: timedelta = timedelta(days=7),
        concurrency: int = DEFAULT_CONCURRENCY,
        request_budget: RequestBudget = DEFAULT_REQUEST_BUDGET,
        random_source: Callable[[], float] = random.random,
        stats: GraphStats | None = None,
        _gates: MailboxGates | None = None,
    ) -> None:
        super().__init__(
            timeouts=timeouts,
            tokens=tokens,
            http_transport=http_transport,
            max_inline_wait=max_inline_wait,
            page_size=100,
            stats=stats,
            gates=_gates,
            concurrency=concurrency,
            request_budget=request_budget,
            random_source=random_source,
            clock=clock,
        )
        self._window = (window_past, window_future, window_roll)

    @asynccontextmanager
    async def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AsyncIterator[ExchangeItemsSession]:
        past, future, roll = self._window
        options = ActOptions(
            timeouts=self._timeouts,
            now=self._now,
            window_past=past,
            window_future=future,
            window_roll=roll,
        )
        async with self._client(mailbox, profile.incoming, credentials) as client:
            session = GraphActSession(client, mailbox=mailbox, options=options)
            await session.probe()
            yield session


@final
class GraphTransport:
    """The Graph transports with one set of settings and one :class:`GraphStats`.

    Register ``incoming``, ``outgoing`` and ``act`` for :data:`GRAPH_SERVER_TYPES`::

        graph = GraphTransport(
            timeouts=settings.timeouts,
            tokens=MsalClientCredentials(authority="https://login.microsoftonline.com/contoso.example"),
        )
        transports = Transports.by_server_type(
            incoming=dict.fromkeys(GRAPH_SERVER_TYPES, graph.incoming),
            outgoing=dict.fromkeys(GRAPH_SERVER_TYPES, graph.outgoing),
            act=dict.fromkeys(GRAPH_SERVER_TYPES, graph.act),
        )

    For push hints, add ``webhook=GraphWebhookHandler(notification_url=...)`` and route the
    requests to that URL to the handler (see :class:`GraphWebhookHandler`).
    """

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        tokens: GraphTokenSource | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        max_inline_wait: timedelta = timedelta(seconds=5),
        page_size: int = 100,
        tracked_category: str = TRACKED_CATEGORY,
        undeliverable_category: str = UNDELIVERABLE_CATEGORY,
        undeliverable_folder: str = UNDELIVERABLE_FOLDER,
        concurrency: int = DEFAULT_CONCURRENCY,
        request_budget: RequestBudget = DEFAULT_REQUEST_BUDGET,
        restart_jitter: timedelta = timedelta(seconds=10),
        random_source: Callable[[], float] = random.random,
        webhook: GraphWebhookHandler | None = None,
        subscription_lifetime: timedelta = timedelta(minutes=4200),
    ) -> None:
        self.stats = GraphStats()
        """What both halves did (:class:`GraphStats`)."""
        # One gate per mailbox for both halves: Graph counts the mailbox's requests together.
        gates = MailboxGates(concurrency, request_budget)
        reader = GraphIncomingTransport(
            timeouts=timeouts,
            tokens=tokens,
            http_transport=http_transport,
            max_inline_wait=max_inline_wait,
            page_size=page_size,
            tracked_category=tracked_category,
            undeliverable_category=undeliverable_category,
            undeliverable_folder=undeliverable_folder,
            restart_jitter=restart_jitter,
            random_source=random_source,
            stats=self.stats,
            _gates=gates,
        )
        # Without a webhook the incoming half offers no push at all, so the engine polls
        # its mailboxes without trying (and failing) to watch each of them first.
        self.incoming: GraphIncomingTransport | GraphPushIncomingTransport = (
            GraphPushIncomingTransport(
                reader, webhook=webhook, subscription_lifetime=subscription_lifetime
            )
            if webhook is not None
            else reader
        )
        """Reads mail (an :class:`~serversync.ports.IncomingMailTransport`; with ``webhook``,
        a :class:`GraphPushIncomingTransport`, push hints too)."""
        self.outgoing = GraphOutgoingTransport(
            timeouts=timeouts,
            tokens=tokens,
            http_transport=http_transport,
            clock=clock,
            max_inline_wait=max_inline_wait,
            random_source=random_source,
            stats=self.stats,
            _gates=gates,
        )
        """Sends mail (an :class:`~serversync.ports.OutgoingMailTransport`)."""
        self.act = GraphActTransport(
            timeouts=timeouts,
            tokens=tokens,
            http_transport=http_transport,
            clock=clock,
            max_inline_wait=max_inline_wait,
            random_source=random_source,
            stats=self.stats,
            _gates=gates,
        )
        """Syncs appointments, contacts and tasks (an
        :class:`~serversync.ports.ExchangeItemsTransport`)."""
