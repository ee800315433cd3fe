"""The quarantine against a real Dovecot, over IMAP and POP3: a message the store refuses once
is retried by its server reference and stored once; a message that never parses is tagged
``$ServerSyncUndeliverable``; a quarantined message deleted meanwhile is released."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

from serversync import (
    ErrorScope,
    IncomingFilteringMethod,
    MappingCredentials,
    OutcomeKind,
    PermanentError,
    RetryPolicy,
    RunReport,
    RunStatus,
    SyncEngine,
    SyncSettings,
    Transports,
    Workload,
)
from serversync.adapters.transports import ImapTransport, Pop3Transport
from serversync.model import (
    Credentials,
    Mailbox,
    MailboxId,
    ProfileId,
    Secret,
    ServerType,
    TlsMode,
)
from serversync.testing import (
    FakeClock,
    InMemoryDirectory,
    InMemoryStorage,
    a_mailbox,
    a_profile,
    a_user,
    an_email,
)
from tests.integration.dovecot import Dovecot, DovecotUser

pytestmark = pytest.mark.integration

JANE = "jane@fabrikam.example"
TRACKED = "$ServerSyncTracked"
UNDELIVERABLE = "$ServerSyncUndeliverable"
RETRY = timedelta(minutes=15)


class PlugInFailed(PermanentError):
    """What a host's store raises for one email it refuses."""

    default_scope = ErrorScope.ITEM


@attrs.define
class Setup:
    dovecot: Dovecot
    protocol: str
    settings: SyncSettings = attrs.Factory(SyncSettings)
    clock: FakeClock = attrs.Factory(FakeClock)
    storage: InMemoryStorage = attrs.Factory(InMemoryStorage)
    directory: InMemoryDirectory = attrs.Factory(InMemoryDirectory)
    credentials: dict[MailboxId, Credentials] = attrs.Factory(dict)

    def add_mailbox(self) -> tuple[Mailbox, DovecotUser]:
        user = self.dovecot.add_user()
        record = a_user(user.address, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
        self.directory.add(record)
        profile = a_profile(
            id=ProfileId(f"profile:{user.address}"),
            server_type=(
                ServerType.IMAP_SMTP if self.protocol == "imap" else ServerType.OTHER_POP3_SMTP
            ),
            incoming=self.dovecot.endpoint(self.protocol, TlsMode.IMPLICIT),
        )
        self.storage.add_profile(profile)
        mailbox = a_mailbox(user.address, owner=record.ref, profile_id=profile.id)
        self.storage.add_mailbox(mailbox)
        self.credentials[mailbox.id] = Credentials(
            username=user.address, secret=Secret(user.password)
        )
        return mailbox, user

    async def cycle(self, mailbox: Mailbox) -> RunReport:
        engine = SyncEngine(
            repositories=self.storage,
            directory=self.directory,
            transports=Transports.by_server_type(
                incoming={
                    ServerType.IMAP_SMTP: ImapTransport(),
                    ServerType.OTHER_POP3_SMTP: Pop3Transport(),
                },
                outgoing={},
            ),
            credentials=MappingCredentials(by_mailbox=self.credentials),
            settings=self.settings,
            clock=self.clock,
        )
        async with engine:
            reports = await engine.sync_mailbox(mailbox.id, workloads=[Workload.INCOMING])
            return RunReport(
                started_at=reports[0].started_at,
                finished_at=reports[0].finished_at,
                mailboxes=reports,
            )


def _email(n: int, address: str) -> bytes:
    return an_email(
        sender=JANE, to=[address], subject=f"order {n}", message_id=f"<q-{n}@fabrikam.example>"
    )


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
async def test_an_email_the_store_refuses_once_is_retried_from_the_server_and_stored_once(
    dovecot: Dovecot, protocol: str
) -> None:
    setup = Setup(dovecot, protocol)
    mailbox, user = setup.add_mailbox()
    dovecot.append(user, *(_email(n, user.address) for n in range(3)))
    setup.storage.faults.fail_next("add_incoming", PlugInFailed("plug-in failed"), skip=1)

    first = await setup.cycle(mailbox)

    assert first.mailboxes[0].status is RunStatus.SUCCEEDED
    assert [(i.subject, i.kind) for i in first.items()] == [
        ("order 0", OutcomeKind.TRACKED),
        ("order 1", OutcomeKind.FAILED),
        ("order 2", OutcomeKind.TRACKED),
    ]
    (entry,) = await setup.storage.list_quarantine(mailbox.id)
    assert entry.subject == "order 1"
    if protocol == "imap":
        assert dovecot.flags(user) == {1: {TRACKED}, 2: set(), 3: {TRACKED}}

    setup.clock.advance(RETRY)
    second = await setup.cycle(mailbox)

    assert [(i.subject, i.kind) for i in second.items()] == [("order 1", OutcomeKind.TRACKED)]
    assert sorted(str(a.message_id) for a in setup.storage.activities()) == [
        f"<q-{n}@fabrikam.example>" for n in range(3)
    ], "every message stored exactly once"
    assert await setup.storage.list_quarantine() == []
    if protocol == "imap":
        assert dovecot.flags(user) == {1: {TRACKED}, 2: {TRACKED}, 3: {TRACKED}}

    setup.clock.advance(RETRY)
    assert list((await setup.cycle(mailbox)).items()) == [], "nothing left to do"


async def test_a_message_that_never_parses_is_tagged_undeliverable_on_the_imap_server(
    dovecot: Dovecot,
) -> None:
    setup = Setup(
        dovecot, "imap", settings=SyncSettings(retry=RetryPolicy(quarantine_max_attempts=2))
    )
    mailbox, user = setup.add_mailbox()
    dovecot.append(user, b"\r\nno header at all\r\n", _email(1, user.address))

    first = await setup.cycle(mailbox)
    assert [i.kind for i in first.items()] == [OutcomeKind.FAILED, OutcomeKind.TRACKED]
    assert dovecot.flags(user) == {1: set(), 2: {TRACKED}}

    setup.clock.advance(RETRY)
    second = await setup.cycle(mailbox)

    (outcome,) = second.items()
    assert outcome.kind is OutcomeKind.FAILED
    assert "given up after 2 attempts" in outcome.explanation
    assert dovecot.flags(user) == {1: {UNDELIVERABLE}, 2: {TRACKED}}
    (entry,) = await setup.storage.list_quarantine(mailbox.id)
    assert entry.given_up


async def test_a_quarantined_message_deleted_from_the_imap_server_is_released(
    dovecot: Dovecot,
) -> None:
    setup = Setup(dovecot, "imap")
    mailbox, user = setup.add_mailbox()
    dovecot.append(user, b"\r\nno header at all\r\n")
    await setup.cycle(mailbox)
    assert len(await setup.storage.list_quarantine(mailbox.id)) == 1

    with dovecot.imap(user) as client:
        client.select("INBOX")
        client.uid("STORE", "1", "+FLAGS", "(\\Deleted)")
        client.expunge()
    setup.clock.advance(RETRY)
    report = await setup.cycle(mailbox)

    (outcome,) = report.items()
    assert outcome.kind is OutcomeKind.SKIPPED
    assert outcome.explanation == "quarantined message released: no longer on the server"
    assert await setup.storage.list_quarantine() == []
