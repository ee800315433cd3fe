"""The SMTP transport against a real aiosmtpd server on loopback, alone and under the engine."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest

from serversync import (
    AuthenticationError,
    ConfigurationError,
    ConnectionFailedError,
    DeliveryUncertainError,
    EmailStatus,
    ErrorScope,
    MappingCredentials,
    MessageRejectedError,
    OperationTimeoutError,
    RecipientsRefusedError,
    RunStatus,
    ServerBusyError,
    SyncEngine,
    Timeouts,
    TransientError,
    Transports,
    Workload,
)
from serversync.adapters.transports import SmtpTransport
from serversync.mime import parse_headers
from serversync.model import (
    CredentialKind,
    Credentials,
    EmailActivity,
    EmailServerProfile,
    MessageId,
    OutgoingMessage,
    Secret,
    ServerEndpoint,
    ServerType,
    TlsMode,
)
from serversync.ports import OutgoingMailSession, OutgoingMailTransport
from serversync.testing import (
    FakeClock,
    InMemoryDirectory,
    InMemoryStorage,
    a_mailbox,
    a_pending_email,
    a_profile,
    an_email,
)
from serversync.testing.contracts import MailboxFixture, check_outgoing_transport
from tests.integration.pki import Pki, make_pki
from tests.integration.smtp_server import PASSWORD, TOKEN, USER, Mode, SmtpServer

pytestmark = pytest.mark.integration

JANE = "jane@fabrikam.example"
JOHN = "john@fabrikam.example"
NOBODY = "nobody@fabrikam.example"
MAILBOX = a_mailbox(USER)
PASSWORD_CREDENTIALS = Credentials(username=USER, secret=Secret(PASSWORD))
FAST = Timeouts(
    connect=timedelta(seconds=3),
    command=timedelta(seconds=3),
    send=timedelta(seconds=3),
    close=timedelta(seconds=1),
)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def server(pki: Pki) -> Iterator[SmtpServer]:
    with SmtpServer(pki, mode=Mode.STARTTLS) as running:
        yield running


@pytest.fixture
def smtps_server(pki: Pki) -> Iterator[SmtpServer]:
    with SmtpServer(pki, mode=Mode.SMTPS) as running:
        yield running


def smtp(timeouts: Timeouts = FAST, clock: FakeClock | None = None) -> SmtpTransport:
    return SmtpTransport(timeouts=timeouts, clock=clock, local_hostname="client.serversync.test")


def profile_for(server: SmtpServer, **endpoint: object) -> EmailServerProfile:
    return a_profile(server_type=ServerType.IMAP_SMTP, outgoing=server.endpoint(**endpoint))


@asynccontextmanager
async def session_with(
    server: SmtpServer,
    *,
    transport: SmtpTransport | None = None,
    credentials: Credentials | None = PASSWORD_CREDENTIALS,
    **endpoint: object,
) -> AsyncIterator[OutgoingMailSession]:
    opener = (transport or smtp()).open(MAILBOX, profile_for(server, **endpoint), credentials)
    async with opener as session:
        yield session


def outgoing(n: int, *, to: Sequence[str] = (JANE,)) -> OutgoingMessage:
    mid = MessageId(f"<smtp-test-{n}@serversync.test>")
    data = an_email(sender=USER, to=to, subject=f"test {n}", message_id=mid)
    return OutgoingMessage(message_id=mid, sender=USER, recipients=tuple(to), data=data)


class SmtpHarness:
    """The contract's view of an aiosmtpd server and the SMTP transport."""

    refused_address = "refused@contract.test"

    def __init__(self, server: SmtpServer) -> None:
        self.server = server
        server.handler.refused_recipients[self.refused_address] = "550 5.1.1 No such user"

    @property
    def transport(self) -> OutgoingMailTransport:
        return smtp()

    async def new_mailbox(self) -> MailboxFixture:
        return MailboxFixture(
            mailbox=MAILBOX,
            profile=profile_for(self.server),
            credentials=PASSWORD_CREDENTIALS,
            wrong_credentials=Credentials(username=USER, secret=Secret("wrong")),
        )

    async def accepted(self) -> Sequence[tuple[tuple[str, ...], bytes]]:
        return [(r.rcpt_tos, r.data) for r in self.server.received]


# --- the contract ---------------------------------------------------------------------------


async def test_starttls_with_auth_keeps_the_outgoing_contract(server: SmtpServer) -> None:
    await check_outgoing_transport(SmtpHarness(server))


async def test_smtps_keeps_the_outgoing_contract(smtps_server: SmtpServer) -> None:
    await check_outgoing_transport(SmtpHarness(smtps_server))


# --- sessions and receipts ------------------------------------------------------------------


async def test_a_session_sends_every_message_over_one_connection(server: SmtpServer) -> None:
    clock = FakeClock()
    messages = [outgoing(n) for n in range(5)]

    async with session_with(server, transport=smtp(clock=clock)) as session:
        receipts = [await session.send(m) for m in messages]

    assert server.connections == 1
    assert len({r.peer for r in server.received}) == 1
    assert [parse_headers(r.data).message_id for r in server.received] == [
        m.message_id for m in messages
    ]
    assert [r.message_id for r in receipts] == [m.message_id for m in messages]
    assert {r.server_reply for r in receipts} == {"250 2.0.0 Ok: queued as TEST1"}
    assert {r.accepted_at for r in receipts} == {clock.now()}


async def test_a_recipient_refused_alone_is_listed_in_the_receipt(server: SmtpServer) -> None:
    server.handler.refused_recipients[NOBODY] = "550 5.1.1 No such user"

    async with session_with(server) as session:
        receipt = await session.send(outgoing(1, to=[NOBODY, JANE]))

    assert receipt.refused == ((NOBODY, "550 5.1.1 No such user"),)
    (received,) = server.received
    assert received.rcpt_tos == (JANE,)


async def test_every_recipient_refused_fails_only_that_message(server: SmtpServer) -> None:
    server.handler.refused_recipients[NOBODY] = "550 5.1.1 No such user"
    server.handler.refused_recipients[JOHN] = "553 5.1.3 Bad address"

    async with session_with(server) as session:
        with pytest.raises(RecipientsRefusedError) as refused:
            await session.send(outgoing(1, to=[NOBODY, JOHN]))
        await session.send(outgoing(2))

    assert refused.value.recipients == {
        NOBODY: "550 5.1.1 No such user",
        JOHN: "553 5.1.3 Bad address",
    }
    assert refused.value.scope is ErrorScope.ITEM
    assert refused.value.server_code == "550"
    assert [r.rcpt_tos for r in server.received] == [(JANE,)]


async def test_every_recipient_deferred_is_retried_later_not_failed(server: SmtpServer) -> None:
    server.handler.refused_recipients[NOBODY] = "450 4.2.1 Mailbox busy, try later"

    async with session_with(server) as session:
        with pytest.raises(TransientError) as deferred:
            await session.send(outgoing(1, to=[NOBODY]))

    assert not isinstance(deferred.value, RecipientsRefusedError)
    assert deferred.value.scope is ErrorScope.ITEM
    assert deferred.value.server_code == "450"


async def test_451_on_data_defers_only_that_message(server: SmtpServer) -> None:
    server.handler.data_replies_by_recipient[NOBODY] = "451 4.3.0 Try again later"

    async with session_with(server) as session:
        with pytest.raises(TransientError) as deferred:
            await session.send(outgoing(1, to=[NOBODY]))
        await session.send(outgoing(2))

    assert deferred.value.scope is ErrorScope.ITEM
    assert deferred.value.server_code == "451"
    assert server.connections == 1
    assert [r.rcpt_tos for r in server.received] == [(JANE,)]


async def test_554_on_data_rejects_that_message_with_the_servers_code(server: SmtpServer) -> None:
    server.handler.data_replies_by_recipient[NOBODY] = "554 5.7.1 Rejected as spam"

    async with session_with(server) as session:
        with pytest.raises(MessageRejectedError) as rejected:
            await session.send(outgoing(1, to=[NOBODY]))
        await session.send(outgoing(2))

    assert rejected.value.scope is ErrorScope.ITEM
    assert rejected.value.server_code == "554"
    assert rejected.value.server_message == "5.7.1 Rejected as spam"
    assert len(server.received) == 1


async def test_421_means_the_server_is_busy_and_ends_the_session(server: SmtpServer) -> None:
    server.handler.data_replies_by_recipient[NOBODY] = "421 4.3.2 Service shutting down"

    async with session_with(server) as session:
        with pytest.raises(ServerBusyError) as busy:
            await session.send(outgoing(1, to=[NOBODY]))
        with pytest.raises(ConnectionFailedError):
            await session.send(outgoing(2))

    assert busy.value.scope is ErrorScope.MAILBOX
    assert busy.value.server_code == "421"
    assert server.received == []


# --- authentication -------------------------------------------------------------------------


async def test_wrong_password_is_an_authentication_error(server: SmtpServer) -> None:
    wrong = Credentials(username=USER, secret=Secret("wrong"))

    with pytest.raises(AuthenticationError) as refused:
        async with session_with(server, credentials=wrong):
            pass

    assert refused.value.server_code == "535"
    assert refused.value.scope is ErrorScope.MAILBOX
    assert "wrong" not in str(refused.value)


async def test_anonymous_sender_is_refused_by_a_server_that_wants_auth(server: SmtpServer) -> None:
    async with session_with(server, credentials=None) as session:
        with pytest.raises(AuthenticationError) as refused:
            await session.send(outgoing(1))

    assert refused.value.server_code == "530"
    assert refused.value.scope is ErrorScope.MAILBOX


async def test_xoauth2_token_authenticates(server: SmtpServer) -> None:
    token = Credentials(
        username=USER, secret=Secret(TOKEN), kind=CredentialKind.OAUTH2_ACCESS_TOKEN
    )

    async with session_with(server, credentials=token) as session:
        await session.send(outgoing(1))

    assert len(server.received) == 1


async def test_refused_xoauth2_token_fails_at_once_instead_of_hanging(server: SmtpServer) -> None:
    token = Credentials(
        username=USER, secret=Secret("expired"), kind=CredentialKind.OAUTH2_ACCESS_TOKEN
    )
    started = time.monotonic()

    with pytest.raises(AuthenticationError) as refused:
        async with session_with(server, credentials=token):
            pass

    assert time.monotonic() - started < 1.0
    assert refused.value.server_code == "535"


# --- TLS ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [Mode.STARTTLS, Mode.SMTPS])
async def test_untrusted_certificate_is_refused_for_good(pki: Pki, mode: Mode) -> None:
    # No ca_file: the system's CAs, which do not include the test CA.
    with SmtpServer(pki, mode=mode) as untrusted, pytest.raises(ConfigurationError) as refused:
        async with session_with(untrusted, ca_file=None):
            pass

    assert not refused.value.transient
    assert "certificate" in str(refused.value)


async def test_certificate_checks_are_off_only_when_the_profile_says_so(server: SmtpServer) -> None:
    async with session_with(server, ca_file=None, verify_certificate=False) as session:
        await session.send(outgoing(1))

    assert len(server.received) == 1


async def test_starttls_profile_never_falls_back_to_plain_text() -> None:
    with SmtpServer(None, mode=Mode.PLAIN) as plain:
        with pytest.raises(ConfigurationError, match="STARTTLS"):
            async with session_with(plain, tls=TlsMode.STARTTLS):
                pass
        async with session_with(plain) as session:  # the profile says TlsMode.NONE
            await session.send(outgoing(1))

    assert len(plain.received) == 1


# --- broken connections ---------------------------------------------------------------------


async def test_connection_dropped_mid_data_leaves_delivery_uncertain_and_is_not_reused(
    server: SmtpServer,
) -> None:
    server.handler.drop_in_data = True

    async with session_with(server) as session:
        # The whole message was handed over: only the server knows whether it kept it.
        with pytest.raises(DeliveryUncertainError) as dropped:
            await session.send(outgoing(1))
        server.handler.drop_in_data = False
        with pytest.raises(ConnectionFailedError, match="cannot be used"):
            await session.send(outgoing(2))

    assert dropped.value.scope is ErrorScope.MAILBOX
    assert server.received == []
    assert server.connections == 1


async def test_stalled_server_times_out_within_the_send_timeout(server: SmtpServer) -> None:
    server.handler.stall_in_data = 5.0
    transport = smtp(timeouts=Timeouts(send=timedelta(seconds=0.3)))
    started = time.monotonic()

    async with session_with(server, transport=transport) as session:
        # Stalled after the message arrived: the server may still accept it.
        with pytest.raises(DeliveryUncertainError) as timed_out:
            await session.send(outgoing(1))
        elapsed = time.monotonic() - started
        with pytest.raises(ConnectionFailedError):
            await session.send(outgoing(2))

    assert 0.3 <= elapsed < 1.5
    assert timed_out.value.transient
    assert timed_out.value.scope is ErrorScope.MAILBOX


async def test_server_that_never_greets_times_out_on_connect() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # never accepts: the handshake completes, no greeting comes
        profile = a_profile(
            server_type=ServerType.IMAP_SMTP,
            outgoing=ServerEndpoint(
                host="127.0.0.1", port=silent.getsockname()[1], tls=TlsMode.NONE
            ),
        )
        transport = smtp(timeouts=Timeouts(connect=timedelta(seconds=0.3)))
        started = time.monotonic()
        with pytest.raises(OperationTimeoutError):
            async with transport.open(MAILBOX, profile, None):
                pass
    assert time.monotonic() - started < 1.5


async def test_nothing_listening_is_a_transient_connection_failure(server: SmtpServer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    with pytest.raises(ConnectionFailedError) as failed:
        async with session_with(server, port=closed_port):
            pass

    assert failed.value.transient


# --- under the engine -----------------------------------------------------------------------


class EngineSetup:
    """Storage, credentials and an engine whose only outgoing transport is SMTP."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server
        self.clock = FakeClock()
        self.storage = InMemoryStorage()
        self.storage.add_profile(profile_for(server))
        self.storage.add_mailbox(MAILBOX)

    def pending(self, subject: str, to: Sequence[str] = (JANE,)) -> EmailActivity:
        email = a_pending_email(sender_mailbox=MAILBOX, to=to, subject=subject)
        self.storage.put_activity(email)
        return email

    def stored(self, email: EmailActivity) -> EmailActivity:
        return next(a for a in self.storage.activities() if a.id == email.id)

    async def run(self) -> RunStatus:
        engine = SyncEngine(
            repositories=self.storage,
            directory=InMemoryDirectory(),
            transports=Transports.by_server_type(
                incoming={}, outgoing={ServerType.IMAP_SMTP: smtp(clock=self.clock)}
            ),
            credentials=MappingCredentials(by_mailbox={MAILBOX.id: PASSWORD_CREDENTIALS}),
            clock=self.clock,
        )
        async with engine:
            report = await engine.run_once(workloads=[Workload.OUTGOING])
        (mailbox_report,) = report.mailboxes
        return mailbox_report.status


async def test_engine_sends_each_pending_email_once_with_its_derived_message_id(
    server: SmtpServer,
) -> None:
    setup = EngineSetup(server)
    emails = [setup.pending(f"Quote {n}") for n in range(3)]

    assert await setup.run() is RunStatus.SUCCEEDED
    setup.clock.advance(timedelta(minutes=10))
    assert await setup.run() is RunStatus.SUCCEEDED

    expected = {f"<serversync.{e.id}@contoso.example>" for e in emails}
    assert sorted(str(parse_headers(r.data).message_id) for r in server.received) == sorted(
        expected
    )
    assert server.connections == 1, "one connection for the run; the second run had no work"
    for email in emails:
        after = setup.stored(email)
        assert after.status is EmailStatus.SENT
        assert after.message_id in expected
        assert after.sent_on == setup.clock.now() - timedelta(minutes=10)
        assert after.server_reply == "250 2.0.0 Ok: queued as TEST1"


async def test_engine_fails_a_rejected_email_and_still_sends_the_next(server: SmtpServer) -> None:
    server.handler.data_replies_by_recipient[NOBODY] = "554 5.7.1 Rejected as spam"
    setup = EngineSetup(server)
    rejected = setup.pending("spam", to=[NOBODY])
    fine = setup.pending("fine")

    assert await setup.run() is RunStatus.SUCCEEDED

    failed = setup.stored(rejected)
    assert failed.status is EmailStatus.FAILED
    assert failed.last_send_error is not None
    assert failed.last_send_error.server_code == "554"
    assert setup.stored(fine).status is EmailStatus.SENT
    assert [r.rcpt_tos for r in server.received] == [(JANE,)]


async def test_engine_keeps_a_deferred_email_pending_with_the_attempt_counted(
    server: SmtpServer,
) -> None:
    server.handler.data_replies_by_recipient[NOBODY] = "451 4.3.0 Try again later"
    setup = EngineSetup(server)
    deferred = setup.pending("later", to=[NOBODY])

    assert await setup.run() is RunStatus.SUCCEEDED

    after = setup.stored(deferred)
    assert after.status is EmailStatus.PENDING_SEND
    assert after.delivery_attempts == 1
    assert after.last_send_error is not None
    assert after.last_send_error.server_code == "451"
    assert after.postpone_sending_until == setup.clock.now() + timedelta(minutes=5)
    assert server.received == []


async def test_two_engines_sharing_one_outbox_send_every_email_exactly_once(
    server: SmtpServer,
) -> None:
    setup = EngineSetup(server)
    emails = [setup.pending(f"Order {n}") for n in range(20)]

    for _ in range(3):
        statuses = await asyncio.gather(setup.run(), setup.run())
        assert RunStatus.FAILED not in statuses
        setup.clock.advance(timedelta(minutes=10))

    sent_ids = [str(parse_headers(r.data).message_id) for r in server.received]
    assert sorted(sent_ids) == sorted(f"<serversync.{e.id}@contoso.example>" for e in emails), (
        "every email reached the server exactly once"
    )
    assert all(setup.stored(e).status is EmailStatus.SENT for e in emails)
