"""The Graph ACT session keeps the ExchangeItemsSession contract against the fake Graph, in
process through its httpx transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from serversync.adapters.transports.graph import GraphTransport
from serversync.model import CredentialKind, Credentials, Secret, ServerEndpoint, ServerType
from serversync.ports import ExchangeItemsSession
from serversync.testing import FakeClock, a_mailbox, a_profile
from serversync.testing.act_contracts import check_exchange_items_session
from serversync.testing.graph import FAKE_GRAPH_URL, FakeGraph

pytestmark = pytest.mark.integration

ALICE = "alice@contoso.example"


async def test_the_graph_act_session_keeps_the_contract() -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    graph = GraphTransport(http_transport=fake.transport(), clock=FakeClock())
    profile = a_profile(
        server_type=ServerType.MICROSOFT_GRAPH, incoming=ServerEndpoint(host=FAKE_GRAPH_URL)
    )
    mailbox = a_mailbox(ALICE, profile_id=profile.id)
    credentials = Credentials(
        username=ALICE,
        secret=Secret(fake.issue_token(user=ALICE)),
        kind=CredentialKind.OAUTH2_ACCESS_TOKEN,
    )

    @asynccontextmanager
    async def open_session() -> AsyncIterator[ExchangeItemsSession]:
        async with graph.act.open(mailbox, profile, credentials) as session:
            yield session

    await check_exchange_items_session(open_session)

    assert fake.items.contacts(ALICE) == [], "the contract cleans up its contacts"
    assert fake.items.events(ALICE) == []
    assert fake.items.tasks(ALICE) == []
