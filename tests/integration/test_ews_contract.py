"""The EWS transports keep the incoming and outgoing transport contracts against the EWS test
server, with unmodified exchangelib as the client: Basic over HTTP, an OAuth 2.0 bearer token
over HTTPS (trusting the test CA through the profile's ``ca_file`` alone), and a service
account that impersonates each mailbox."""

from __future__ import annotations

import enum
import itertools
import ssl
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import attrs
import pytest

from serversync.adapters.transports import EwsTransport
from serversync.model import (
    CredentialKind,
    Credentials,
    Secret,
    ServerEndpoint,
    ServerType,
    TlsMode,
)
from serversync.ports import (
    IncomingMailTransport,
    OutgoingMailTransport,
)
from serversync.testing import a_mailbox, a_profile
from serversync.testing.contracts import (
    MailboxFixture,
    check_incoming_transport,
    check_outgoing_transport,
)
from serversync.testing.ews import EwsTestServer
from tests.integration.pki import Pki, make_pki

pytestmark = pytest.mark.integration

PASSWORD = "correct horse"
SERVICE = "svc-crm@contoso.example"
_serial = itertools.count(1)


class Login(enum.Enum):
    BASIC = "basic"
    OAUTH = "oauth"
    IMPERSONATION = "impersonation"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("ews-contract-pki"))


def tls_context(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    return context


@pytest.fixture(params=list(Login), ids=[login.value for login in Login])
async def harness(request: pytest.FixtureRequest, pki: Pki) -> AsyncIterator[EwsHarness]:
    login: Login = request.param
    # OAuth tokens travel over HTTPS only (requests-oauthlib refuses plain HTTP).
    tls = tls_context(pki) if login is Login.OAUTH else None
    async with EwsTestServer(tls=tls) as server:
        if login is Login.IMPERSONATION:
            server.add_user(SERVICE, password=PASSWORD, can_impersonate=True)
        yield EwsHarness(server, login, pki.ca_file, EwsTransport())


@attrs.define
class EwsHarness:
    """Fresh mailboxes on one EWS test server, read and written through one EwsTransport."""

    server: EwsTestServer
    login: Login
    ca_file: Path
    ews: EwsTransport

    @property
    def transport(self) -> IncomingMailTransport:
        return self.ews.incoming

    @property
    def refused_address(self) -> str | None:
        return None  # Exchange accepts every recipient and reports failures as bounces

    def endpoint(self) -> ServerEndpoint:
        if self.login is Login.OAUTH:
            return ServerEndpoint(host=self.server.url, ca_file=str(self.ca_file))
        return ServerEndpoint(host=self.server.url, tls=TlsMode.NONE)

    async def new_mailbox(self) -> MailboxFixture:
        address = f"user{next(_serial)}@contoso.example"
        self.server.add_mailbox(address, password=PASSWORD)
        impersonate = self.login is Login.IMPERSONATION
        profile = a_profile(
            server_type=ServerType.EXCHANGE_SERVER,
            incoming=self.endpoint(),
            incoming_use_impersonation=impersonate,
            outgoing_use_impersonation=impersonate,
        )
        if self.login is Login.OAUTH:
            token = self.server.issue_token(address)
            right = Credentials(
                username=address, secret=Secret(token), kind=CredentialKind.OAUTH2_ACCESS_TOKEN
            )
            wrong = attrs.evolve(right, secret=Secret("not-a-token"))
        else:
            user = SERVICE if impersonate else address
            right = Credentials(username=user, secret=Secret(PASSWORD))
            wrong = attrs.evolve(right, secret=Secret("not-it"))
        return MailboxFixture(
            mailbox=a_mailbox(address),
            profile=profile,
            credentials=right,
            wrong_credentials=wrong,
        )

    async def deliver(self, fixture: MailboxFixture, data: bytes) -> None:
        self.server.deliver(fixture.mailbox.email_address, data)

    async def accepted(self) -> Sequence[tuple[tuple[str, ...], bytes]]:
        return [(m.recipients, m.mime) for m in self.server.outbox]


@attrs.define
class OutgoingHarness:
    """The same server and mailboxes, with the outgoing transport under test."""

    inner: EwsHarness

    @property
    def transport(self) -> OutgoingMailTransport:
        return self.inner.ews.outgoing

    @property
    def refused_address(self) -> str | None:
        return self.inner.refused_address

    async def new_mailbox(self) -> MailboxFixture:
        return await self.inner.new_mailbox()

    async def accepted(self) -> Sequence[tuple[tuple[str, ...], bytes]]:
        return await self.inner.accepted()


async def test_ews_transport_keeps_the_incoming_contract(harness: EwsHarness) -> None:
    await check_incoming_transport(harness)

    stats = harness.ews.stats
    # One message through fetch_message, then two and two (of three asked for, one missing)
    # through fetch_messages.
    assert stats.messages_fetched == 5, "the contract fetches five whole messages"
    mime_requests = [r for r in harness.server.requests if "item:MimeContent" in r.field_uris]
    assert len(mime_requests) == 3, "one GetItem for each fetch_message and fetch_messages call"
    if harness.login is Login.IMPERSONATION:
        acting = {r.impersonated for r in harness.server.requests if r.login == SERVICE}
        assert len(acting) == 1, "every request impersonates one mailbox"
        assert None not in acting, "every request impersonates the mailbox"


async def test_ews_transport_keeps_the_outgoing_contract(harness: EwsHarness) -> None:
    await check_outgoing_transport(OutgoingHarness(harness))

    assert harness.ews.stats.messages_sent == 3
    assert all(m.disposition == "SendAndSaveCopy" for m in harness.server.outbox)
