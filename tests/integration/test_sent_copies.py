"""Copies of sent mail stored in the IMAP Sent folder: the engine sends through a real SMTP
server (aiosmtpd) and APPENDs the same bytes into the user's folder on a real Dovecot."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from serversync import (
    Credentials,
    EmailStatus,
    MappingCredentials,
    ProfileId,
    Secret,
    ServerType,
    SyncEngine,
    TlsMode,
    Transports,
    Workload,
)
from serversync.adapters.transports import ImapTransport, SmtpTransport
from serversync.model import SendResult
from serversync.testing import (
    InMemoryDirectory,
    InMemoryStorage,
    a_mailbox,
    a_pending_email,
    a_profile,
    a_user,
)
from tests.integration.dovecot import Dovecot, DovecotUser
from tests.integration.smtp_server import Mode, SmtpServer

pytestmark = pytest.mark.integration

JANE = "jane@fabrikam.example"


@pytest.fixture
def alice(dovecot: Dovecot) -> DovecotUser:
    return dovecot.add_user()


@pytest.fixture
def smtp(dovecot: Dovecot, alice: DovecotUser) -> Iterator[SmtpServer]:
    with SmtpServer(dovecot.pki, mode=Mode.SMTPS, users={alice.address: alice.password}) as server:
        yield server


async def _send(
    dovecot: Dovecot, smtp: SmtpServer, alice: DovecotUser, folder: str, subjects: list[str]
) -> list[SendResult]:
    storage, directory = InMemoryStorage(), InMemoryDirectory()
    user = a_user(alice.address)
    directory.add(user)
    profile = a_profile(
        id=ProfileId("dovecot-and-aiosmtpd"),
        server_type=ServerType.IMAP_SMTP,
        incoming=dovecot.endpoint("imap", TlsMode.IMPLICIT),
        outgoing=smtp.endpoint(),
        sent_folder=folder,
    )
    storage.add_profile(profile)
    mailbox = a_mailbox(alice.address, owner=user.ref, profile_id=profile.id)
    storage.add_mailbox(mailbox)
    for subject in subjects:
        storage.put_activity(a_pending_email(sender_mailbox=mailbox, to=[JANE], subject=subject))
    credentials = Credentials(username=alice.address, secret=Secret(alice.password))
    engine = SyncEngine(
        repositories=storage,
        directory=directory,
        transports=Transports.by_server_type(
            incoming={ServerType.IMAP_SMTP: ImapTransport()},
            outgoing={ServerType.IMAP_SMTP: SmtpTransport()},
        ),
        credentials=MappingCredentials(by_mailbox={mailbox.id: credentials}),
    )
    async with engine:
        (report,) = await engine.sync_mailbox(mailbox.id, workloads=[Workload.OUTGOING])
    return list(report.sends)


def _folder_contents(dovecot: Dovecot, user: DovecotUser, folder: str) -> list[tuple[bytes, bytes]]:
    """(FLAGS line, whole message) of every message in ``folder``, read without \\Seen."""
    with dovecot.imap(user) as client:
        status, detail = client.select(f'"{folder}"', readonly=True)
        assert status == "OK", detail
        status, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
        assert status == "OK", data
        return [(item[0], item[1]) for item in data if isinstance(item, tuple)]


async def test_each_sent_email_is_appended_to_the_sent_folder_read_and_tagged(
    dovecot: Dovecot, smtp: SmtpServer, alice: DovecotUser
) -> None:
    results = await _send(dovecot, smtp, alice, "Sent", ["Quote", "Invoice"])

    assert [r.status for r in results] == [EmailStatus.SENT, EmailStatus.SENT]
    assert [r.copied_to_sent for r in results] == [True, True]
    stored = await asyncio.to_thread(_folder_contents, dovecot, alice, "Sent")
    sent_bytes = [received.data for received in smtp.received]
    assert len(stored) == 2
    for flags, _data in stored:
        assert b"\\Seen" in flags
        assert b"$ServerSyncTracked" in flags
    # The copy is the message the SMTP server got, byte for byte.
    assert sorted(data for _, data in stored) == sorted(sent_bytes)


async def test_a_missing_folder_is_created_on_first_use(
    dovecot: Dovecot, smtp: SmtpServer, alice: DovecotUser
) -> None:
    results = await _send(dovecot, smtp, alice, "Sent by the CRM", ["Quote"])

    assert [r.copied_to_sent for r in results] == [True]
    stored = await asyncio.to_thread(_folder_contents, dovecot, alice, "Sent by the CRM")
    assert [data for _, data in stored] == [smtp.received[0].data]
