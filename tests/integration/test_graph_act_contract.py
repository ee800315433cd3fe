"""The Graph ACT session keeps the ExchangeItemsSession contract against the fake Graph, in
process through its httpx transport and on loopback over real HTTP; and what the session
makes of ``@removed`` rows, a window that lags behind and a forgotten delta token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest

from serversync.adapters.transports.graph import GraphTransport
from serversync.model import (
    ActEntity,
    CredentialKind,
    Credentials,
    Secret,
    ServerEndpoint,
    ServerType,
    TlsMode,
)
from serversync.ports import ExchangeItemsSession
from serversync.testing import FakeClock, a_mailbox, a_profile
from serversync.testing.act_contracts import check_exchange_items_session
from serversync.testing.graph import FAKE_GRAPH_URL, FakeGraph

pytestmark = pytest.mark.integration

ALICE = "alice@contoso.example"


@pytest.fixture(params=["in-process", "loopback"])
async def served(request: pytest.FixtureRequest) -> AsyncIterator[tuple[FakeGraph, str | None]]:
    """The fake, and its loopback URL (``None``: in process)."""
    fake = FakeGraph()
    if request.param == "in-process":
        yield fake, None
        return
    async with fake.serve() as url:
        yield fake, url


async def test_the_graph_act_session_keeps_the_contract(
    served: tuple[FakeGraph, str | None],
) -> None:
    fake, url = served
    fake.add_mailbox(ALICE)
    if url is None:
        graph = GraphTransport(http_transport=fake.transport(), clock=FakeClock())
        endpoint = ServerEndpoint(host=FAKE_GRAPH_URL)
    else:
        graph = GraphTransport(clock=FakeClock())
        endpoint = ServerEndpoint(host=url, tls=TlsMode.NONE)
    profile = a_profile(server_type=ServerType.MICROSOFT_GRAPH, incoming=endpoint)
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


async def test_removed_rows_are_deletes_only_when_the_event_is_gone_and_the_window_rolls() -> None:
    clock = FakeClock()
    fake = FakeGraph(now=clock.now)
    fake.add_mailbox(ALICE)
    graph = GraphTransport(http_transport=fake.transport(), clock=clock)
    profile = a_profile(
        server_type=ServerType.MICROSOFT_GRAPH, incoming=ServerEndpoint(host=FAKE_GRAPH_URL)
    )
    mailbox = a_mailbox(ALICE, profile_id=profile.id)
    credentials = Credentials(
        username=ALICE,
        secret=Secret(fake.issue_token(user=ALICE)),
        kind=CredentialKind.OAUTH2_ACCESS_TOKEN,
    )
    soon = {"dateTime": "2026-01-09T09:00:00", "timeZone": "UTC"}
    soon_end = {"dateTime": "2026-01-09T10:00:00", "timeZone": "UTC"}
    staying = fake.items.add_event(ALICE, {"subject": "Stays", "start": soon, "end": soon_end})
    leaving = fake.items.add_event(ALICE, {"subject": "Leaves", "start": soon, "end": soon_end})
    async with graph.act.open(mailbox, profile, credentials) as session:
        first = await session.sync_items(ActEntity.APPOINTMENT, None, limit=50)
        assert {i.key.item_id for i in first.changed} == {staying, leaving}
        assert not first.more
        assert "#window=" in first.state, "the window rides along in the state"

        fake.items.edit(
            ALICE,
            leaving,
            {
                "start": {"dateTime": "2029-01-09T09:00:00", "timeZone": "UTC"},
                "end": {"dateTime": "2029-01-09T10:00:00", "timeZone": "UTC"},
            },
        )
        fake.items.remove(ALICE, staying)
        second = await session.sync_items(ActEntity.APPOINTMENT, first.state, limit=50)

        assert second.deleted == (staying,), "a removed event that is gone is a delete"
        (moved,) = second.changed
        assert moved.key.item_id == leaving, "a removed event that exists moved out of the window"
        assert moved.fields["start"] == datetime(2029, 1, 9, 9, 0, tzinfo=UTC)
        assert not second.reset

        clock.advance(timedelta(days=8))
        rolled = await session.sync_items(ActEntity.APPOINTMENT, second.state, limit=50)
        assert rolled.reset, "a window that lags behind starts a new round"
        assert rolled.changed == ()
        assert rolled.state.split("#window=")[1] != second.state.split("#window=")[1]

        fake.expire_delta_tokens()
        lost = await session.sync_items(ActEntity.APPOINTMENT, rolled.state, limit=50)
        assert lost.reset, "a forgotten delta token starts a new round"
