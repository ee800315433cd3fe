"""A whole CRM-and-mail world in memory, wired the way a host wires serversync."""

from __future__ import annotations

from collections.abc import Mapping
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import Any, final

from serversync.adapters.credentials import MappingCredentials
from serversync.adapters.storage.memory import InMemoryDirectory, InMemoryStorage
from serversync.adapters.transports.memory import (
    InMemoryIncomingTransport,
    InMemoryMailServer,
    InMemoryOutgoingTransport,
)
from serversync.adapters.transports.memory_items import (
    InMemoryExchange,
    InMemoryExchangeItemsTransport,
)
from serversync.engine import SyncEngine, Transports
from serversync.model import (
    INBOX,
    Credentials,
    CrmRecord,
    EmailServerProfile,
    IncomingFilteringMethod,
    Mailbox,
    MailboxId,
    OutgoingDeliveryMethod,
    Secret,
)
from serversync.settings import SyncSettings
from serversync.testing._clock import FakeClock
from serversync.testing.builders import a_mailbox, a_profile, a_queue, a_user

__all__ = ["InMemoryWorld"]


@final
class InMemoryWorld:
    """A mail server, CRM storage, a record directory, credentials and a fake clock.

    ``add_user`` and ``add_queue`` create the mail account, the CRM record and the mailbox
    together; ``engine()`` builds a :class:`SyncEngine` over all of it. Every part stays
    reachable (``server``, ``storage``, ``directory``, ``clock``) for assertions.
    ``exchange`` holds every user's calendar, contacts and tasks for appointment, contact and
    task sync (with a profile of an Exchange server type), and ``storage`` the CRM side.
    """

    def __init__(
        self,
        *,
        clock: FakeClock | None = None,
        profile: EmailServerProfile | None = None,
        settings: SyncSettings | None = None,
    ) -> None:
        self.clock = clock or FakeClock()
        self.server = InMemoryMailServer(clock=self.clock)
        self.storage = InMemoryStorage(clock=self.clock)
        self.exchange = InMemoryExchange(clock=self.clock)
        self.directory = InMemoryDirectory()
        self.profile = profile or a_profile()
        self.settings = settings or SyncSettings()
        self.storage.add_profile(self.profile)
        self._credentials: dict[MailboxId, Credentials] = {}

    def _add_mailbox(self, record: CrmRecord, password: str, overrides: dict[str, Any]) -> Mailbox:
        address = record.email_address
        self.server.add_account(address, password)
        self.exchange.add_mailbox(address, password)
        self.directory.add(record)
        fields: dict[str, Any] = {"profile_id": self.profile.id}
        fields.update(overrides)
        mailbox = a_mailbox(address, owner=record.ref, **fields)
        self.storage.add_mailbox(mailbox)
        self._credentials[mailbox.id] = Credentials(username=address, secret=Secret(password))
        return mailbox

    def add_user(
        self,
        address: str,
        *,
        filtering: IncomingFilteringMethod = IncomingFilteringMethod.IN_RESPONSE_TO_CRM_EMAIL,
        password: str = "secret",
        user_fields: Mapping[str, Any] | None = None,
        **mailbox_overrides: Any,
    ) -> Mailbox:
        """A CRM user with a mail account and a mailbox; returns the mailbox.

        ``user_fields`` set other fields of the user's :class:`CrmRecord`.
        """
        user = a_user(address, filtering=filtering, **dict(user_fields or {}))
        return self._add_mailbox(user, password, mailbox_overrides)

    def add_queue(
        self,
        address: str,
        *,
        filtering: IncomingFilteringMethod = IncomingFilteringMethod.ALL_EMAIL_MESSAGES,
        password: str = "secret",
        **mailbox_overrides: Any,
    ) -> Mailbox:
        """A CRM queue with a mail account and a mailbox; returns the mailbox."""
        return self._add_mailbox(a_queue(address, filtering=filtering), password, mailbox_overrides)

    def add_forward_mailbox(self, address: str, *, password: str = "secret") -> Mailbox:
        """A forward mailbox: no owner, never sends; returns the mailbox."""
        self.server.add_account(address, password)
        mailbox = a_mailbox(
            address,
            profile_id=self.profile.id,
            is_forward_mailbox=True,
            outgoing_delivery_method=OutgoingDeliveryMethod.NONE,
        )
        self.storage.add_mailbox(mailbox)
        self._credentials[mailbox.id] = Credentials(username=address, secret=Secret(password))
        return mailbox

    def add_record(self, record: CrmRecord) -> None:
        """A CRM record without a mailbox (contact, account, lead...)."""
        self.directory.add(record)

    def deliver(self, address: str, data: bytes, *, folder: str = INBOX) -> int:
        """Put a message into one account's folder; returns its UID."""
        return self.server.deliver(address, data, folder=folder)

    def send_mail(self, data: bytes) -> list[str]:
        """Deliver a message to every local account among its To and Cc, as an MTA would;
        returns the accounts it reached."""
        headers = BytesHeaderParser().parsebytes(data)
        values = [str(v) for name in ("to", "cc") for v in (headers.get_all(name) or [])]
        reached = []
        for _, address in getaddresses(values):
            try:
                self.server.deliver(address, data)
            except KeyError:
                continue
            reached.append(address.lower())
        return reached

    @property
    def credentials(self) -> MappingCredentials:
        """Credentials of every mailbox added so far."""
        return MappingCredentials(by_mailbox=self._credentials)

    def transports(self) -> Transports:
        """The in-memory transports over ``server`` for every server type."""
        return Transports.for_all(
            incoming=InMemoryIncomingTransport(self.server),
            outgoing=InMemoryOutgoingTransport(self.server),
            act=InMemoryExchangeItemsTransport(self.exchange),
        )

    def engine(self, **overrides: Any) -> SyncEngine:
        """A :class:`SyncEngine` over this world; keyword arguments replace any part."""
        parts: dict[str, Any] = {
            "repositories": self.storage,
            "directory": self.directory,
            "transports": self.transports(),
            "credentials": self.credentials,
            "settings": self.settings,
            "clock": self.clock,
            "act_records": self.storage,
            "act_mappings": self.storage,
        }
        parts.update(overrides)
        return SyncEngine(**parts)
