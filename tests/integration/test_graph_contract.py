"""The Graph transports keep the incoming and outgoing transport contracts against the fake
Graph: in process through its httpx transport with an access token, and on loopback over
real HTTPS (trusting the test CA through the profile's ``ca_file`` alone) with MSAL client
credentials (MSAL's token endpoint answered by the fake)."""

from __future__ import annotations

import enum
import itertools
import ssl
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import attrs
import pytest

from serversync.adapters.transports.graph import (
    GraphTokenSource,
    GraphTransport,
    MsalClientCredentials,
)
from serversync.model import (
    CredentialKind,
    Credentials,
    Secret,
    ServerEndpoint,
    ServerType,
)
from serversync.ports import IncomingMailTransport, OutgoingMailTransport
from serversync.testing import a_mailbox, a_profile
from serversync.testing.contracts import (
    MailboxFixture,
    check_incoming_transport,
    check_outgoing_transport,
)
from serversync.testing.graph import FAKE_GRAPH_URL, FakeGraph
from tests.integration.pki import Pki, make_pki

pytestmark = pytest.mark.integration

APP_ID = "11111111-2222-3333-4444-555555555555"
APP_SECRET = "app-secret-value"
_serial = itertools.count(1)


class Wiring(enum.Enum):
    IN_PROCESS_TOKEN = "in-process-access-token"
    LOOPBACK_MSAL = "loopback-https-msal-client-credentials"


@attrs.define
class GraphHarness:
    """Fresh mailboxes on one fake Graph, read and written through one GraphTransport."""

    fake: FakeGraph
    wiring: Wiring
    url: str
    graph: GraphTransport
    ca_file: Path | None = None

    @property
    def transport(self) -> IncomingMailTransport:
        return self.graph.incoming

    @property
    def refused_address(self) -> str | None:
        return None  # Exchange accepts every recipient and reports failures as bounces

    def endpoint(self) -> ServerEndpoint:
        if self.ca_file is not None:
            return ServerEndpoint(host=self.url, ca_file=str(self.ca_file))
        return ServerEndpoint(host=self.url)

    async def new_mailbox(self) -> MailboxFixture:
        address = f"user{next(_serial)}@contoso.example"
        self.fake.add_mailbox(address)
        profile = a_profile(server_type=ServerType.MICROSOFT_GRAPH, incoming=self.endpoint())
        if self.wiring is Wiring.LOOPBACK_MSAL:
            right = Credentials(
                username=APP_ID, secret=Secret(APP_SECRET), kind=CredentialKind.OAUTH2_CLIENT_SECRET
            )
            wrong = attrs.evolve(right, secret=Secret("not-the-secret"))
        else:
            right = Credentials(
                username=address,
                secret=Secret(self.fake.issue_token(user=address)),
                kind=CredentialKind.OAUTH2_ACCESS_TOKEN,
            )
            wrong = attrs.evolve(right, secret=Secret("not-a-token"))
        return MailboxFixture(
            mailbox=a_mailbox(address),
            profile=profile,
            credentials=right,
            wrong_credentials=wrong,
        )

    async def deliver(self, fixture: MailboxFixture, data: bytes) -> None:
        self.fake.deliver(fixture.mailbox.email_address, data)

    async def accepted(self) -> Sequence[tuple[tuple[str, ...], bytes]]:
        return [(m.recipients, m.mime) for m in self.fake.sent]


@attrs.define
class OutgoingHarness:
    inner: GraphHarness

    @property
    def transport(self) -> OutgoingMailTransport:
        return self.inner.graph.outgoing

    @property
    def refused_address(self) -> str | None:
        return None

    async def new_mailbox(self) -> MailboxFixture:
        return await self.inner.new_mailbox()

    async def accepted(self) -> Sequence[tuple[tuple[str, ...], bytes]]:
        return await self.inner.accepted()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("graph-contract-pki"))


def tls_context(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    return context


@pytest.fixture(params=list(Wiring), ids=[w.value for w in Wiring])
async def harness(request: pytest.FixtureRequest, pki: Pki) -> AsyncIterator[GraphHarness]:
    wiring: Wiring = request.param
    fake = FakeGraph()
    fake.add_app(APP_ID, APP_SECRET)
    if wiring is Wiring.IN_PROCESS_TOKEN:
        yield GraphHarness(
            fake, wiring, FAKE_GRAPH_URL, GraphTransport(http_transport=fake.transport())
        )
        return
    tokens: GraphTokenSource = MsalClientCredentials(
        authority=fake.authority, http_client=fake.msal_http_client()
    )
    async with fake.serve(tls=tls_context(pki)) as url:
        assert url.startswith("https://")
        yield GraphHarness(fake, wiring, url, GraphTransport(tokens=tokens), pki.ca_file)


async def test_graph_transport_keeps_the_incoming_contract(harness: GraphHarness) -> None:
    await check_incoming_transport(harness)

    assert harness.graph.stats.messages_fetched == 1, "the contract fetches one whole message"
    assert harness.graph.stats.headers_fetched == 4
    mime = [r for r in harness.fake.requests if r.path.endswith("/$value")]
    assert len(mime) == 1, "MIME is asked for only by fetch_message"
    deltas = [r for r in harness.fake.requests if r.path.endswith("/messages/delta")]
    assert deltas, "listing reads the message delta"
    assert all(r.prefer and 'IdType="ImmutableId"' in r.prefer for r in deltas)


async def test_graph_transport_keeps_the_outgoing_contract(harness: GraphHarness) -> None:
    await check_outgoing_transport(OutgoingHarness(harness))

    assert harness.graph.stats.messages_sent == 3
    assert harness.graph.stats.sends_reconciled == 0
    sends = [r for r in harness.fake.requests if r.path.endswith("/send")]
    assert len(sends) == 3, "one send request per message, none repeated"
    if harness.wiring is Wiring.LOOPBACK_MSAL:
        assert harness.fake.token_requests <= 2, "MSAL serves tokens from its cache"
