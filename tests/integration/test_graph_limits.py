"""Rate control of the Graph transport against the fake Graph: requests in flight per
mailbox under a throttling storm, the request budget, and backoff when a 503 says nothing."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import attrs
import pytest

from serversync.adapters.transports.graph import GraphTransport, RequestBudget
from serversync.errors import ServerBusyError
from serversync.model import (
    INBOX,
    CredentialKind,
    Credentials,
    EmailServerProfile,
    Mailbox,
    RemoteMessageRef,
    Secret,
    ServerEndpoint,
    ServerType,
)
from serversync.testing import a_mailbox, a_profile, an_email
from serversync.testing.graph import FAKE_GRAPH_URL, FakeGraph, GraphFault

pytestmark = pytest.mark.integration

ALICE = "alice@contoso.example"
HTML_503 = GraphFault(
    status=503,
    method="GET",
    path=r"/\$value$",
    headers={"Content-Type": "text/html"},
    body=b"<html><body><h1>Service Unavailable</h1></body></html>",
    times=3,
)


def setup(fake: FakeGraph) -> tuple[Mailbox, EmailServerProfile, Credentials]:
    profile = a_profile(
        server_type=ServerType.MICROSOFT_GRAPH, incoming=ServerEndpoint(host=FAKE_GRAPH_URL)
    )
    credentials = Credentials(
        username=ALICE,
        secret=Secret(fake.issue_token(user=ALICE)),
        kind=CredentialKind.OAUTH2_ACCESS_TOKEN,
    )
    return a_mailbox(ALICE), profile, credentials


def refs(fake: FakeGraph, count: int) -> list[RemoteMessageRef]:
    for n in range(count):
        fake.deliver(ALICE, an_email(to=[ALICE], subject=f"storm {n}"))
    return [RemoteMessageRef(folder=INBOX, remote_id=m.id) for m in fake.messages(ALICE)]


async def test_at_most_four_requests_per_mailbox_are_in_flight_under_a_throttling_storm() -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    wanted = refs(fake, 24)
    mailbox, profile, credentials = setup(fake)
    graph = GraphTransport(http_transport=fake.transport())
    fake.latency = 0.05
    fake.limit_requests(14, per=1.0)
    fake.add_fault(HTML_503)

    async with (
        graph.incoming.open(mailbox, profile, credentials) as one,
        graph.incoming.open(mailbox, profile, credentials) as two,
    ):
        fetched = await asyncio.gather(
            *((one if n % 2 else two).fetch_message(ref) for n, ref in enumerate(wanted))
        )

    assert [m.ref for m in fetched] == wanted
    statuses = [r.status for r in fake.requests]
    assert 429 in statuses, "the storm throttled"
    assert 503 in statuses, "and a gateway said busy without Retry-After"
    assert fake.peak_in_flight(ALICE) == 4, "both sessions shared the mailbox's 4 slots"
    assert graph.stats.waited >= 1


async def test_the_concurrency_per_mailbox_is_configurable() -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    wanted = refs(fake, 8)
    mailbox, profile, credentials = setup(fake)
    graph = GraphTransport(http_transport=fake.transport(), concurrency=2)
    fake.latency = 0.05

    async with graph.incoming.open(mailbox, profile, credentials) as session:
        await asyncio.gather(*(session.fetch_message(ref) for ref in wanted))

    assert fake.peak_in_flight(ALICE) == 2


async def test_a_spent_request_budget_postpones_the_mailbox_without_asking_graph() -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    wanted = refs(fake, 6)
    mailbox, profile, credentials = setup(fake)
    graph = GraphTransport(
        http_transport=fake.transport(),
        request_budget=RequestBudget(4, timedelta(minutes=10)),
    )

    async with graph.incoming.open(mailbox, profile, credentials) as session:
        await session.fetch_message(wanted[0])
        await session.fetch_message(wanted[1])
        await session.fetch_message(wanted[2])
        with pytest.raises(ServerBusyError) as busy:
            await session.fetch_message(wanted[3])

    assert busy.value.retry_after is not None
    assert busy.value.retry_after > timedelta(minutes=1), "one request's worth of refill"
    assert len(fake.requests) == 4, "the probe and three fetches; nothing over the budget"


async def test_a_round_restarted_after_a_lost_token_first_waits_its_jitter() -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    refs(fake, 3)
    mailbox, profile, credentials = setup(fake)
    draws: list[float] = []

    def source() -> float:
        draws.append(0.5)
        return 0.5

    graph = GraphTransport(
        http_transport=fake.transport(), restart_jitter=timedelta(seconds=1.2), random_source=source
    )

    async with graph.incoming.open(mailbox, profile, credentials) as session:
        first = await session.list_new(INBOX, None, limit=10)
        fake.expire_delta_tokens()
        loop = asyncio.get_running_loop()
        started = loop.time()
        again = await session.list_new(INBOX, first.end, limit=10)
        waited = loop.time() - started

    assert again.reset
    assert [r.remote_id for r in again.refs] == [r.remote_id for r in first.refs]
    assert draws == [0.5], "one draw for the one restart"
    assert waited >= 0.6, "half of the window, as drawn"
    assert graph.stats.rounds_restarted == 1


async def test_a_503_without_retry_after_is_repeated_after_a_jittered_backoff() -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    (ref,) = refs(fake, 1)
    mailbox, profile, credentials = setup(fake)
    draws: list[float] = []

    def source() -> float:
        draws.append(0.0)
        return 0.0

    graph = GraphTransport(http_transport=fake.transport(), random_source=source)
    fake.add_fault(attrs.evolve(HTML_503, times=2))

    async with graph.incoming.open(mailbox, profile, credentials) as session:
        loop = asyncio.get_running_loop()
        started = loop.time()
        message = await session.fetch_message(ref)
        waited = loop.time() - started

    assert message.data
    assert draws == [0.0, 0.0], "one draw per backoff"
    assert 1.4 <= waited < 4, "0.5 s then 1 s: half of 1 s and of 2 s, the rest drawn as 0"
    assert graph.stats.waited == 2
    assert [r.status for r in fake.requests if r.path.endswith("/$value")] == [503, 503, 200]
