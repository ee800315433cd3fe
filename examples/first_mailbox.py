"""Synchronize one real IMAP mailbox once and print every decision: a first try on your mail.

Give it an IMAP account in environment variables and run it::

    MAIL_ADDRESS=me@example.com MAIL_PASSWORD=... IMAP_HOST=imap.example.com \
        python examples/first_mailbox.py

``IMAP_PORT`` (993) and ``IMAP_CA_FILE`` (a CA bundle for a server with a private CA) are
optional. The connection is IMAP over TLS with the certificate verified. Nothing is stored:
the CRM side lives in memory for the length of the run. On the server, each tracked message
gets the IMAP keyword ``$ServerSyncTracked``; nothing is moved or deleted.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta

from serversync import (
    Credentials,
    CrmRecord,
    EmailApprovalStatus,
    EmailServerProfile,
    IncomingFilteringMethod,
    Mailbox,
    MailboxId,
    MappingCredentials,
    ProfileId,
    RecordRef,
    Secret,
    ServerEndpoint,
    ServerType,
    SyncEngine,
    Transports,
    Workload,
)
from serversync.adapters.transports import ImapTransport
from serversync.testing import InMemoryDirectory, InMemoryStorage

ADDRESS = os.environ["MAIL_ADDRESS"]


async def main() -> None:
    profile = EmailServerProfile(
        id=ProfileId("my-imap"),
        name="My IMAP server",
        server_type=ServerType.IMAP_SMTP,
        # IMAPS on port 993 by default, certificate and host name verified.
        incoming=ServerEndpoint(
            host=os.environ["IMAP_HOST"],
            port=int(os.environ.get("IMAP_PORT", "993")),
            ca_file=os.environ.get("IMAP_CA_FILE"),  # only for a private CA
        ),
        # Judge only the last two days of mail; older messages are reported as skipped.
        process_emails_received_after=datetime.now(UTC) - timedelta(days=2),
    )
    me = CrmRecord(
        ref=RecordRef("systemuser", "me"),
        email_address=ADDRESS,
        incoming_filtering_method=IncomingFilteringMethod.ALL_EMAIL_MESSAGES,
        mailbox_id=MailboxId("my-mailbox"),
        approval=EmailApprovalStatus.APPROVED,
    )
    mailbox = Mailbox(
        id=MailboxId("my-mailbox"),
        name="My mailbox",
        email_address=ADDRESS,
        owner=me.ref,
        profile_id=profile.id,
        approval=EmailApprovalStatus.APPROVED,
        allow_email_connector_to_use_credentials=True,
    )
    storage = InMemoryStorage()
    storage.add_profile(profile)
    storage.add_mailbox(mailbox)
    password = Secret(os.environ["MAIL_PASSWORD"])
    credentials = MappingCredentials(
        by_mailbox={mailbox.id: Credentials(username=ADDRESS, secret=password)}
    )
    transports = Transports.by_server_type(
        incoming={ServerType.IMAP_SMTP: ImapTransport()},
        outgoing={},  # this first try only reads
    )
    async with SyncEngine(
        repositories=storage,
        directory=InMemoryDirectory([me]),
        transports=transports,
        credentials=credentials,
    ) as engine:
        report = await engine.run_once(workloads=[Workload.INCOMING])

    for run in report.mailboxes:
        error = f" ({run.error.error_type}: {run.error.message})" if run.error else ""
        print(f"{run.mailbox_id} {run.workload.value}: {run.status.value}{error}")
    for item in report.items():
        reason = item.reason.name if item.reason is not None else "-"
        print(f"{item.kind.value:12} {reason:20} {item.subject!r} from {item.sender}")


if __name__ == "__main__":
    asyncio.run(main())
