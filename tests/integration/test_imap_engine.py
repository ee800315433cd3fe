"""The engine over the IMAP and POP3 transports against a real Dovecot.

Mail is put on the server with IMAP APPEND by another client (imaplib); storage, the record
directory and credentials are the in-memory ones. What the adapter sent is counted by
``ImapTransport.stats`` (commands by name, header blocks and whole messages downloaded).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest

from serversync import (
    BaseSyncObserver,
    ConfigurationError,
    DecisionReason,
    EmailDirection,
    IncomingFilteringMethod,
    ItemOutcome,
    MailboxRunReport,
    MappingCredentials,
    OutcomeKind,
    RunStatus,
    SyncEngine,
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
    InMemoryDirectory,
    InMemoryStorage,
    a_mailbox,
    a_profile,
    a_sent_email,
    a_user,
    an_email,
)
from tests.integration.dovecot import Dovecot, DovecotUser

pytestmark = pytest.mark.integration

JANE = "jane@fabrikam.example"
TRACKED = "$ServerSyncTracked"


@attrs.define
class DovecotWorld:
    """CRM storage in memory, mail on Dovecot, wired the way a host wires serversync."""

    dovecot: Dovecot
    storage: InMemoryStorage = attrs.Factory(InMemoryStorage)
    directory: InMemoryDirectory = attrs.Factory(InMemoryDirectory)
    imap: ImapTransport = attrs.Factory(ImapTransport)
    pop3: Pop3Transport = attrs.Factory(Pop3Transport)
    credentials: dict[MailboxId, Credentials] = attrs.Factory(dict)

    def add_mailbox(
        self,
        *,
        filtering: IncomingFilteringMethod = IncomingFilteringMethod.IN_RESPONSE_TO_CRM_EMAIL,
        protocol: str = "imap",
        tls: TlsMode = TlsMode.STARTTLS,
        ca_file: Path | None = None,
        password: str | None = None,
        process_from: datetime | None = None,
    ) -> tuple[Mailbox, DovecotUser]:
        user = self.dovecot.add_user()
        record = a_user(user.address, filtering=filtering)
        self.directory.add(record)
        profile = a_profile(
            id=ProfileId(f"profile:{user.address}"),
            name=f"Dovecot {protocol} for {user.address}",
            server_type=ServerType.IMAP_SMTP if protocol == "imap" else ServerType.OTHER_POP3_SMTP,
            incoming=self.dovecot.endpoint(protocol, tls, ca_file=ca_file),
        )
        self.storage.add_profile(profile)
        mailbox = a_mailbox(user.address, owner=record.ref, profile_id=profile.id)
        mailbox = attrs.evolve(mailbox, process_email_received_after=process_from)
        self.storage.add_mailbox(mailbox)
        self.credentials[mailbox.id] = Credentials(
            username=user.address, secret=Secret(password or user.password)
        )
        return mailbox, user

    def engine(self, **overrides: object) -> SyncEngine:
        parts: dict[str, object] = {
            "repositories": self.storage,
            "directory": self.directory,
            "transports": Transports.by_server_type(
                incoming={ServerType.IMAP_SMTP: self.imap, ServerType.OTHER_POP3_SMTP: self.pop3},
                outgoing={},
            ),
            "credentials": MappingCredentials(by_mailbox=self.credentials),
        }
        parts.update(overrides)
        return SyncEngine(**parts)  # type: ignore[arg-type]

    async def sync(self, mailbox: Mailbox, **overrides: object) -> MailboxRunReport:
        async with self.engine(**overrides) as engine:
            (report,) = await engine.sync_mailbox(mailbox.id, workloads=[Workload.INCOMING])
        return report

    def incoming(self) -> list[str]:
        """The Message-IDs of the incoming emails stored, in storage order."""
        return [
            str(a.message_id)
            for a in self.storage.activities()
            if a.direction is EmailDirection.INCOMING
        ]


@pytest.fixture
def world(dovecot: Dovecot) -> DovecotWorld:
    return DovecotWorld(dovecot)


def messages(
    mailbox: Mailbox, count: int, tag: str, *, reply_at: int | None = None
) -> list[tuple[str, bytes]]:
    """``count`` messages; the one at ``reply_at`` answers the one before it, so the engine
    stores the messages before it (a group) before judging it."""
    out: list[tuple[str, bytes]] = []
    for n in range(count):
        mid = f"<{tag}-{n}@fabrikam.example>"
        answers = out[-1][0] if n == reply_at else None
        data = an_email(
            sender=JANE,
            to=[mailbox.email_address],
            subject=f"{tag} {n}",
            message_id=mid,
            in_reply_to=answers,
        )
        out.append((mid, data))
    return out


def kinds(items: Sequence[ItemOutcome]) -> list[OutcomeKind]:
    return [i.kind for i in items]


class CancelAfter(BaseSyncObserver):
    """Cancels the run once ``count`` messages were decided, like a shutdown in mid-batch."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.decided = 0
        self.task: asyncio.Task[object] | None = None

    def item_processed(self, outcome: ItemOutcome) -> None:
        self.decided += 1
        if self.decided == self.count and self.task is not None:
            self.task.cancel()


async def test_mail_is_tracked_exactly_once_across_an_interrupted_run(
    world: DovecotWorld, dovecot: Dovecot
) -> None:
    mailbox, user = world.add_mailbox(filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    sent = messages(mailbox, 5, "interrupted", reply_at=2)
    dovecot.append(user, *(data for _, data in sent))

    observer = CancelAfter(2)
    async with world.engine(observer=observer) as engine:
        task: asyncio.Task[object] = asyncio.ensure_future(
            engine.sync_mailbox(mailbox.id, workloads=[Workload.INCOMING])
        )
        observer.task = task
        with pytest.raises(asyncio.CancelledError):
            await task
    assert world.incoming() == [mid for mid, _ in sent[:2]], "two were stored before the cancel"

    report = await world.sync(mailbox)

    assert report.status is RunStatus.SUCCEEDED
    assert kinds(report.items) == [OutcomeKind.DUPLICATE] * 2 + [OutcomeKind.TRACKED] * 3
    assert world.incoming() == [mid for mid, _ in sent], "every message exactly once"
    flags = dovecot.flags(user)
    assert all(TRACKED in f for f in flags.values()), flags
    assert not any("\\Seen" in f for f in flags.values()), "nothing may be marked read"
    again = await world.sync(mailbox)
    assert again.items == (), "the cursor is past every message"


async def test_an_email_is_received_on_its_arrival_at_the_server_not_its_date_header(
    world: DovecotWorld, dovecot: Dovecot
) -> None:
    mailbox, user = world.add_mailbox(filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    arrived = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    ((_, data),) = messages(mailbox, 1, "arrival")  # its Date header is 2026-01-05 08:00
    dovecot.append(user, data, arrived=arrived)

    report = await world.sync(mailbox)

    assert kinds(report.items) == [OutcomeKind.TRACKED]
    (email,) = world.storage.activities()
    assert email.received_on == arrived


async def test_process_email_from_skips_mail_that_arrived_before_it(
    world: DovecotWorld, dovecot: Dovecot
) -> None:
    cutoff = datetime(2026, 6, 1, tzinfo=UTC)
    mailbox, user = world.add_mailbox(
        filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES, process_from=cutoff
    )
    (_, older), (newer_id, newer) = messages(mailbox, 2, "process-from")
    dovecot.append(user, older, arrived=cutoff - timedelta(days=30))
    dovecot.append(user, newer, arrived=cutoff + timedelta(days=30))

    report = await world.sync(mailbox)

    assert kinds(report.items) == [OutcomeKind.SKIPPED, OutcomeKind.TRACKED]
    assert world.incoming() == [newer_id]
    (email,) = world.storage.activities()
    assert email.received_on == cutoff + timedelta(days=30)


async def test_a_new_uidvalidity_lists_the_inbox_again_without_duplicates(
    world: DovecotWorld, dovecot: Dovecot
) -> None:
    mailbox, user = world.add_mailbox(filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    first = messages(mailbox, 3, "before-rebuild")
    dovecot.append(user, *(data for _, data in first))
    assert kinds((await world.sync(mailbox)).items) == [OutcomeKind.TRACKED] * 3
    cursor = await world.storage.load_checkpoint(mailbox.id, "INBOX")

    dovecot.rebuild_index(user)
    later = messages(mailbox, 1, "after-rebuild")
    dovecot.append(user, later[0][1])
    report = await world.sync(mailbox)

    assert report.status is RunStatus.SUCCEEDED
    assert kinds(report.items) == [OutcomeKind.DUPLICATE] * 3 + [OutcomeKind.TRACKED]
    assert world.incoming() == [mid for mid, _ in first + later]
    new_cursor = await world.storage.load_checkpoint(mailbox.id, "INBOX")
    assert new_cursor != cursor
    assert getattr(new_cursor, "uidvalidity", None) != getattr(cursor, "uidvalidity", None)


async def test_a_message_moved_out_and_back_is_not_tracked_twice(
    world: DovecotWorld, dovecot: Dovecot
) -> None:
    mailbox, user = world.add_mailbox(filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    ((mid, data),) = messages(mailbox, 1, "moved")
    dovecot.append(user, data)
    assert kinds((await world.sync(mailbox)).items) == [OutcomeKind.TRACKED]

    with dovecot.imap(user) as client:
        client.create("Archive")
        client.select("INBOX")
        assert client.uid("MOVE", "1", "Archive")[0] == "OK"
        client.select("Archive")
        assert client.uid("MOVE", "1:*", "INBOX")[0] == "OK"
    report = await world.sync(mailbox)

    assert kinds(report.items) == [OutcomeKind.DUPLICATE]
    assert report.items[0].remote_id == "2", "the message came back under a new UID"
    assert report.items[0].reason is DecisionReason.DUPLICATE
    assert world.incoming() == [mid]


async def test_a_wrong_password_fails_only_that_mailbox(
    world: DovecotWorld, dovecot: Dovecot
) -> None:
    good, good_user = world.add_mailbox(filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
    bad, bad_user = world.add_mailbox(
        filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES, password="not-the-password"
    )
    dovecot.append(good_user, messages(good, 1, "good")[0][1])
    dovecot.append(bad_user, messages(bad, 1, "bad")[0][1])

    async with world.engine() as engine:
        report = await engine.run_once(workloads=[Workload.INCOMING])

    by_mailbox = {r.mailbox_id: r for r in report.mailboxes}
    assert by_mailbox[good.id].status is RunStatus.SUCCEEDED
    assert kinds(by_mailbox[good.id].items) == [OutcomeKind.TRACKED]
    failed = by_mailbox[bad.id]
    assert failed.status is RunStatus.FAILED
    assert failed.error is not None
    assert failed.error.error_type == "AuthenticationError"
    assert not failed.error.transient
    assert failed.error.server_code == "NO [AUTHENTICATIONFAILED]"
    assert "not-the-password" not in failed.error.message


@pytest.mark.parametrize("tls", [TlsMode.IMPLICIT, TlsMode.STARTTLS])
async def test_a_certificate_from_an_untrusted_ca_is_refused(
    world: DovecotWorld, dovecot: Dovecot, tls: TlsMode
) -> None:
    mailbox, user = world.add_mailbox(tls=tls, ca_file=dovecot.pki.other_ca_file)
    dovecot.append(user, messages(mailbox, 1, "untrusted")[0][1])

    report = await world.sync(mailbox)

    assert report.status is RunStatus.FAILED
    assert report.error is not None
    assert report.error.error_type == ConfigurationError.__name__
    assert not report.error.transient
    assert "certificate" in report.error.message
    assert world.imap.stats.commands["AUTHENTICATE"] == 0, "no credentials went out"


async def test_unrelated_mail_is_judged_on_headers_and_never_downloaded(
    world: DovecotWorld, dovecot: Dovecot
) -> None:
    mailbox, user = world.add_mailbox()  # "in response to CRM email", the default
    world.storage.put_activity(
        a_sent_email(
            sender_mailbox=mailbox,
            to=[JANE],
            subject="Quote",
            message_id="<quote@contoso.example>",
        )
    )
    unrelated = messages(mailbox, 4, "newsletter")
    reply = an_email(
        sender=JANE,
        to=[mailbox.email_address],
        subject="RE: Quote",
        message_id="<reply@fabrikam.example>",
        in_reply_to="<quote@contoso.example>",
    )
    dovecot.append(user, *(data for _, data in unrelated), reply)

    report = await world.sync(mailbox)

    assert kinds(report.items) == [OutcomeKind.NOT_RELEVANT] * 4 + [OutcomeKind.TRACKED]
    assert report.items[-1].reason is DecisionReason.CORRELATION_MATCH
    stats = world.imap.stats
    assert stats.headers_fetched == 5
    assert stats.messages_fetched == 1, "only the tracked reply is downloaded"
    # metadata and headers for the batch in one command, BODY.PEEK[] for the reply alone
    assert stats.commands["UID FETCH"] == 2
    assert stats.commands["UID STORE"] == 1, "only the tracked message is tagged"
    flags = dovecot.flags(user)
    assert [uid for uid, f in flags.items() if TRACKED in f] == [5]
    assert not any("\\Seen" in f for f in flags.values())


async def test_a_pop3_mailbox_syncs_through_the_engine(
    world: DovecotWorld, dovecot: Dovecot
) -> None:
    mailbox, user = world.add_mailbox(
        filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES, protocol="pop3"
    )
    sent = messages(mailbox, 3, "pop3")
    dovecot.append(user, *(data for _, data in sent))

    report = await world.sync(mailbox)

    assert report.status is RunStatus.SUCCEEDED
    assert kinds(report.items) == [OutcomeKind.TRACKED] * 3
    assert world.incoming() == [mid for mid, _ in sent]
    stats = world.pop3.stats
    assert (stats.commands["TOP"], stats.commands["RETR"]) == (3, 3)
    assert (await world.sync(mailbox)).items == (), "the seen UIDLs keep the cursor"

    more = messages(mailbox, 1, "pop3-later")
    dovecot.append(user, more[0][1])
    later = await world.sync(mailbox)
    assert kinds(later.items) == [OutcomeKind.TRACKED]
    assert world.incoming() == [mid for mid, _ in sent + more]
