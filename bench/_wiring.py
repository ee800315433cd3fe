"""A host's wiring of serversync for the measures: profiles, mailboxes, CRM records, the CRM
emails that tracked mail answers, credentials and engines."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from bench._mail import CRM_DOMAIN, crm_message_id
from bench._servers import PASSWORD, Dovecot
from serversync import MappingCredentials, SyncEngine, SyncSettings, Transports
from serversync.adapters.storage.sql import SqlDirectory, SqlStorage
from serversync.adapters.transports import ImapTransport, Pop3Transport, SmtpTransport
from serversync.model import (
    Credentials,
    EmailServerProfile,
    Mailbox,
    MailboxId,
    ProfileId,
    Secret,
    ServerEndpoint,
    ServerType,
    TlsMode,
)
from serversync.ports import SyncObserver
from serversync.testing import (
    InMemoryDirectory,
    InMemoryStorage,
    a_mailbox,
    a_profile,
    a_sent_email,
    a_user,
)

Store = InMemoryStorage | SqlStorage
"""The stores the measures use: serversync's own two."""
Directory = InMemoryDirectory | SqlDirectory

__all__ = [
    "CUSTOMERS",
    "Directory",
    "Store",
    "add_crm_emails",
    "add_mailbox",
    "add_profile",
    "credentials",
    "engine",
    "imap_profile",
    "pop3_profile",
]

CUSTOMERS = [f"customer.{n}@fabrikam.example" for n in range(50)]
"""Who the CRM emails went to."""


async def add_profile(storage: Store, profile: EmailServerProfile) -> None:
    """Store ``profile``."""
    await _maybe(storage.add_profile(profile))


async def _maybe(value: Any) -> Any:
    """Await ``value`` if it is awaitable: the in-memory store is synchronous where the SQL
    store is not."""
    return await value if inspect.isawaitable(value) else value


def imap_profile(
    dovecot: Dovecot,
    *,
    profile_id: str = "bench-imap",
    tls: TlsMode = TlsMode.NONE,
    smtp_port: int | None = None,
    **fields: Any,
) -> EmailServerProfile:
    """An IMAP/SMTP profile for the run's Dovecot (plain IMAP, or IMAPS with its test CA);
    outgoing mail goes to the SMTP sink at ``smtp_port`` when given."""
    port = dovecot.imaps_port if tls is TlsMode.IMPLICIT else dovecot.imap_port
    incoming = ServerEndpoint(
        host="127.0.0.1", port=port, tls=tls, ca_file=str(dovecot.pki.ca_file)
    )
    outgoing = (
        ServerEndpoint(host="127.0.0.1", port=smtp_port, tls=TlsMode.NONE)
        if smtp_port is not None
        else None
    )
    return a_profile(
        id=ProfileId(profile_id),
        name=f"Benchmark {profile_id}",
        server_type=ServerType.IMAP_SMTP,
        incoming=incoming,
        outgoing=outgoing,
        use_same_settings_for_outgoing=False,
        **fields,
    )


def pop3_profile(dovecot: Dovecot) -> EmailServerProfile:
    """A POP3 profile for the run's Dovecot (plain POP3)."""
    return a_profile(
        id=ProfileId("bench-pop3"),
        name="Benchmark POP3",
        server_type=ServerType.OTHER_POP3_SMTP,
        incoming=ServerEndpoint(host="127.0.0.1", port=dovecot.pop3_port, tls=TlsMode.NONE),
    )


async def add_mailbox(
    storage: Store, directory: Directory, address: str, profile: EmailServerProfile
) -> Mailbox:
    """A CRM user at ``address`` (default filter: "in response to CRM email") and its
    approved mailbox on ``profile``, in the host's store and directory."""
    record = a_user(address)
    await _maybe(directory.add(record))
    mailbox = a_mailbox(address, owner=record.ref, profile_id=profile.id)
    await _maybe(storage.add_mailbox(mailbox))
    return mailbox


async def add_crm_emails(storage: Store, sender: Mailbox, count: int) -> None:
    """The emails the CRM sent that tracked mail answers (``crm_message_id(0..count-1)``)."""
    for n in range(count):
        email = a_sent_email(
            sender_mailbox=sender,
            to=[CUSTOMERS[n % len(CUSTOMERS)]],
            subject=f"Quote {n} from {CRM_DOMAIN}",
            message_id=crm_message_id(n),
        )
        await _maybe(storage.put_activity(email))


def credentials(mailboxes: Iterable[Mailbox]) -> MappingCredentials:
    """Every mailbox logs in as its address with the benchmark password."""
    return MappingCredentials(
        by_mailbox={
            MailboxId(m.id): Credentials(username=m.email_address, secret=Secret(PASSWORD))
            for m in mailboxes
        }
    )


def engine(
    storage: Store,
    directory: Directory,
    mailboxes: Iterable[Mailbox],
    *,
    imap: ImapTransport | None = None,
    pop3: Pop3Transport | None = None,
    settings: SyncSettings | None = None,
    observer: SyncObserver | None = None,
) -> SyncEngine:
    """An engine over the real IMAP, POP3 and SMTP transports."""
    smtp = SmtpTransport()
    return SyncEngine(
        repositories=storage,
        directory=directory,
        transports=Transports.by_server_type(
            incoming={
                ServerType.IMAP_SMTP: imap or ImapTransport(),
                ServerType.OTHER_POP3_SMTP: pop3 or Pop3Transport(),
            },
            outgoing={ServerType.IMAP_SMTP: smtp, ServerType.OTHER_POP3_SMTP: smtp},
        ),
        credentials=credentials(mailboxes),
        settings=settings,
        observer=observer,
    )
