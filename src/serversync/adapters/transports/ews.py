"""The EWS transports: Exchange Web Services through exchangelib, for Exchange profiles.

:class:`EwsTransport` holds both halves, sharing their settings and statistics:
``EwsTransport().incoming`` reads mail (:class:`EwsIncomingTransport`) and
``EwsTransport().outgoing`` sends it (:class:`EwsOutgoingTransport`), and
``EwsTransport().act`` syncs appointments, contacts and tasks (:class:`EwsActTransport`).

- **Connection.** The profile endpoint's ``host`` is the EWS URL
  (``https://mail.contoso.com/EWS/Exchange.asmx``) or a host name, served at
  ``/EWS/Exchange.asmx``. ``ca_file`` and ``verify_certificate`` apply to this connection
  only. Autodiscover is not used. A password logs in with Basic (NTLM when the profile says
  NTLM or Negotiate); an OAuth 2.0 access token (``CredentialKind.OAUTH2_ACCESS_TOKEN``) is
  sent as a bearer token. With ``incoming_use_impersonation`` / ``outgoing_use_impersonation``
  the account acts for the mailbox through Exchange impersonation.
- **Reading.** The cursor is the SyncFolderItems sync state (:class:`EwsCheckpoint`); a state
  Exchange no longer knows lists the folder again (``reset=True``). Headers come from the
  items' properties, MIME content only for the messages the engine tracks. Processed
  messages get a category (:data:`TRACKED_CATEGORY`, :data:`UNDELIVERABLE_CATEGORY`), and
  with the profile's ``move_undelivered_emails`` undeliverable ones move to the
  Undeliverable folder under the Inbox. Folders are tracked by their EWS id.
- **Sending.** SendAndSaveCopy with the composed MIME; before each send, Sent Items is asked
  for the Message-ID so that a retry after an uncertain attempt never sends twice.
- **Appointments, contacts and tasks.** The default Calendar, Contacts and Tasks folders,
  through SyncFolderItems and GetItem; writes carry the change key last read
  (ConflictResolution NeverOverwrite) and send no meeting invitations. The connection is the
  incoming one: its server, authentication and ``incoming_use_impersonation``.
- **Threads.** exchangelib blocks: each open session has one worker thread that runs its
  calls in order, each under its :class:`~serversync.settings.Timeouts` deadline.
- **Errors.** exchangelib retries nothing (fail-fast); its errors become
  :mod:`serversync.errors` types, ``ErrorServerBusy`` a :class:`ServerBusyError` whose
  ``retry_after`` is Exchange's ``BackOffMilliseconds``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Final, final

from serversync.adapters._ports_docs import documented_by
from serversync.adapters.transports._ews_act import EwsActSession, open_act_session
from serversync.adapters.transports._ews_act_fields import FIELDS
from serversync.adapters.transports._ews_connection import (
    EwsConnection,
    EwsLogin,
    ews_url,
    tls_verification,
)
from serversync.adapters.transports._ews_incoming import EwsIncomingSession, IncomingOptions
from serversync.adapters.transports._ews_outgoing import EwsOutgoingSession, OutgoingOptions
from serversync.adapters.transports._ews_stats import EwsStats
from serversync.errors import ConfigurationError
from serversync.model import (
    AuthenticationProtocol,
    Credentials,
    EmailServerProfile,
    Mailbox,
    ServerEndpoint,
    ServerType,
)
from serversync.ports import (
    Clock,
    IncomingMailSession,
    IncomingMailTransport,
    OutgoingMailSession,
    OutgoingMailTransport,
)
from serversync.ports.act import ExchangeItemsSession, ExchangeItemsTransport
from serversync.settings import Timeouts

__all__ = [
    "ACT_FIELDS",
    "EXCHANGE_SERVER_TYPES",
    "TRACKED_CATEGORY",
    "UNDELIVERABLE_CATEGORY",
    "UNDELIVERABLE_FOLDER",
    "EwsActSession",
    "EwsActTransport",
    "EwsIncomingTransport",
    "EwsOutgoingTransport",
    "EwsStats",
    "EwsTransport",
]

EXCHANGE_SERVER_TYPES: Final = (
    ServerType.EXCHANGE_SERVER,
    ServerType.EXCHANGE_SERVER_HYBRID,
    ServerType.EXCHANGE_ONLINE_HYBRID,
)
"""The server types the EWS transports serve."""
ACT_FIELDS: Final = FIELDS
"""The fields of :data:`serversync.act.FIELDS` that :class:`EwsActTransport` reads and
writes, per entity; the engine syncs only these over EWS (sessions' ``held_fields``)."""
TRACKED_CATEGORY: Final = "ServerSync Tracked"
"""The category given to a message once it is stored (or found to be a duplicate)."""
UNDELIVERABLE_CATEGORY: Final = "ServerSync Undeliverable"
"""The category given to a message that could not be processed."""
UNDELIVERABLE_FOLDER: Final = "Undeliverable"
"""The folder under the Inbox that undeliverable messages move to, when the profile asks and
the mailbox names no folder of its own (``Mailbox.undeliverable_folder``)."""


def _login(
    mailbox: Mailbox,
    endpoint: ServerEndpoint | None,
    credentials: Credentials | None,
    *,
    direction: str,
    authentication: AuthenticationProtocol,
    impersonation: bool,
) -> EwsLogin:
    if endpoint is None:
        raise ConfigurationError(
            f"the profile has no {direction} server (the EWS URL)", mailbox_id=mailbox.id
        )
    if credentials is None:
        raise ConfigurationError(
            "EWS needs credentials, and the profile's credential source gave none",
            mailbox_id=mailbox.id,
        )
    return EwsLogin(
        address=mailbox.email_address,
        url=ews_url(endpoint, mailbox_id=mailbox.id),
        credentials=credentials,
        authentication=authentication,
        impersonation=impersonation,
        verify=tls_verification(endpoint, mailbox.id),
    )


@final
@documented_by(IncomingMailTransport)
class EwsIncomingTransport:
    """Reads mail over EWS; one instance serves every Exchange mailbox.

    ``timeouts`` bounds every call: connecting (building the account and fetching the
    well-known folders) under ``connect``, headers and MIME under ``fetch``, the rest under
    ``command``. ``stats`` is shared with an :class:`EwsTransport`'s outgoing half when it
    built this one.
    """

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        stats: EwsStats | None = None,
        tracked_category: str = TRACKED_CATEGORY,
        undeliverable_category: str = UNDELIVERABLE_CATEGORY,
        undeliverable_folder: str = UNDELIVERABLE_FOLDER,
    ) -> None:
        self._timeouts = timeouts or Timeouts()
        self._tracked_category = tracked_category
        self._undeliverable_category = undeliverable_category
        self._undeliverable_folder = undeliverable_folder
        self.stats = stats if stats is not None else EwsStats()

    @asynccontextmanager
    async def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AsyncIterator[IncomingMailSession]:
        login = _login(
            mailbox,
            profile.incoming,
            credentials,
            direction="incoming",
            authentication=profile.incoming_authentication,
            impersonation=profile.incoming_use_impersonation,
        )
        connection = await EwsConnection.open(
            login, mailbox_id=mailbox.id, timeouts=self._timeouts, stats=self.stats
        )
        options = IncomingOptions(
            timeouts=self._timeouts,
            tracked_category=self._tracked_category,
            undeliverable_category=self._undeliverable_category,
            undeliverable_folder_name=self._undeliverable_folder,
            move_undeliverable=profile.move_undelivered_emails,
        )
        try:
            yield EwsIncomingSession(connection, mailbox=mailbox, options=options, stats=self.stats)
        finally:
            await connection.aclose()


@final
@documented_by(OutgoingMailTransport)
class EwsOutgoingTransport:
    """Sends mail over EWS; one instance serves every Exchange mailbox.

    ``timeouts`` bounds connecting (``connect``) and each send, the look into Sent Items
    included (``send``). ``clock`` stamps receipts (the system clock by default). With
    ``reconcile_sent_items`` (the default) each send first looks for the Message-ID in Sent
    Items and does not send a message that is already there.
    """

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        clock: Clock | None = None,
        stats: EwsStats | None = None,
        reconcile_sent_items: bool = True,
    ) -> None:
        self._timeouts = timeouts or Timeouts()
        self._now: Callable[[], datetime] = (
            clock.now if clock is not None else lambda: datetime.now(UTC)
        )
        self._reconcile = reconcile_sent_items
        self.stats = stats if stats is not None else EwsStats()

    @asynccontextmanager
    async def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AsyncIterator[OutgoingMailSession]:
        login = _login(
            mailbox,
            profile.outgoing_endpoint,
            credentials,
            direction="outgoing",
            authentication=profile.outgoing_authentication,
            impersonation=profile.outgoing_use_impersonation,
        )
        connection = await EwsConnection.open(
            login, mailbox_id=mailbox.id, timeouts=self._timeouts, stats=self.stats
        )
        options = OutgoingOptions(
            timeouts=self._timeouts, reconcile_sent_items=self._reconcile, now=self._now
        )
        try:
            yield EwsOutgoingSession(connection, options=options, stats=self.stats)
        finally:
            await connection.aclose()


@final
@documented_by(ExchangeItemsTransport)
class EwsActTransport:
    """Syncs appointments, contacts and tasks over EWS; one instance serves every Exchange
    mailbox.

    The session connects like the incoming transport: the profile's incoming server (the EWS
    URL), incoming authentication, and ``incoming_use_impersonation`` (the profile has no
    impersonation setting of its own for ACT; one service account with impersonation is how
    Dynamics serves ACT for every mailbox). ``timeouts`` bounds connecting (``connect``),
    reads (``fetch``) and writes (``command``).
    """

    def __init__(self, *, timeouts: Timeouts | None = None, stats: EwsStats | None = None) -> None:
        self._timeouts = timeouts or Timeouts()
        self.stats = stats if stats is not None else EwsStats()

    @asynccontextmanager
    async def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AsyncIterator[ExchangeItemsSession]:
        login = _login(
            mailbox,
            profile.incoming,
            credentials,
            direction="incoming",
            authentication=profile.incoming_authentication,
            impersonation=profile.incoming_use_impersonation,
        )
        async with open_act_session(
            login, mailbox_id=mailbox.id, timeouts=self._timeouts, stats=self.stats
        ) as session:
            yield session


@final
class EwsTransport:
    """Both EWS transports with one set of settings and one :class:`EwsStats`.

    Register ``incoming`` and ``outgoing`` for the Exchange server types (``act`` serves
    appointments, contacts and tasks)::

        ews = EwsTransport(timeouts=settings.timeouts)
        transports = Transports.by_server_type(
            incoming=dict.fromkeys(EXCHANGE_SERVER_TYPES, ews.incoming),
            outgoing=dict.fromkeys(EXCHANGE_SERVER_TYPES, ews.outgoing),
        )
    """

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        clock: Clock | None = None,
        tracked_category: str = TRACKED_CATEGORY,
        undeliverable_category: str = UNDELIVERABLE_CATEGORY,
        undeliverable_folder: str = UNDELIVERABLE_FOLDER,
        reconcile_sent_items: bool = True,
    ) -> None:
        self.stats = EwsStats()
        self.incoming = EwsIncomingTransport(
            timeouts=timeouts,
            stats=self.stats,
            tracked_category=tracked_category,
            undeliverable_category=undeliverable_category,
            undeliverable_folder=undeliverable_folder,
        )
        """Reads mail (an :class:`~serversync.ports.IncomingMailTransport`)."""
        self.outgoing = EwsOutgoingTransport(
            timeouts=timeouts,
            clock=clock,
            stats=self.stats,
            reconcile_sent_items=reconcile_sent_items,
        )
        """Sends mail (an :class:`~serversync.ports.OutgoingMailTransport`)."""
        self.act = EwsActTransport(timeouts=timeouts, stats=self.stats)
        """Syncs appointments, contacts and tasks (an
        :class:`~serversync.ports.act.ExchangeItemsTransport`)."""
