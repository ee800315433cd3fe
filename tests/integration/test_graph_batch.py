"""JSON batching against the fake Graph: tagging and the header fallback go in ``$batch``es
of at most 20, per-item throttling is waited out, per-item errors are mapped like single
requests, and the fake's batches follow Graph's rules (20 at most, ``dependsOn`` and 424)."""

from __future__ import annotations

import httpx
import pytest

from serversync.adapters.transports.graph import MARK_PROPERTY, TRACKED_CATEGORY, GraphTransport
from serversync.mime import parse_headers
from serversync.model import (
    INBOX,
    CredentialKind,
    Credentials,
    EmailServerProfile,
    Mailbox,
    MessageId,
    RemoteMark,
    Secret,
    ServerEndpoint,
    ServerType,
)
from serversync.testing import a_mailbox, a_profile, an_email
from serversync.testing.graph import FAKE_GRAPH_URL, FakeGraph, GraphFault

pytestmark = pytest.mark.integration

ALICE = "alice@contoso.example"
JANE = "jane@fabrikam.example"


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


def batches(fake: FakeGraph) -> list[str]:
    return [r.path for r in fake.requests if r.path.endswith("/$batch")]


async def test_tagging_45_messages_takes_three_batches_and_waits_out_throttled_items() -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    for n in range(45):
        fake.deliver(ALICE, an_email(sender=JANE, to=[ALICE], subject=f"m {n}"))
    mailbox, profile, credentials = setup(fake)
    graph = GraphTransport(http_transport=fake.transport(), page_size=50)
    ids = [m.id for m in fake.messages(ALICE)]
    # Two tagging requests inside the batches are throttled, one message is gone.
    fake.add_fault(GraphFault.throttled("1", method="PATCH", times=2))
    fake.add_fault(
        GraphFault.error(404, "ErrorItemNotFound", method="PATCH", path=f"/messages/{ids[7]}$")
    )

    async with graph.incoming.open(mailbox, profile, credentials) as session:
        listed = await session.list_new(INBOX, None, limit=50)
        fake.requests.clear()
        await session.mark(listed.refs, RemoteMark.TRACKED)

    tagged = {m.id for m in fake.messages(ALICE) if m.categories == [TRACKED_CATEGORY]}
    assert tagged == set(ids) - {ids[7]}, "every message but the gone one is tagged"
    assert all(
        m.extended == {MARK_PROPERTY: "tracked"} for m in fake.messages(ALICE) if m.id in tagged
    )
    assert len(batches(fake)) == 4, "20 + 20 + 5 items, and one more for the two throttled"
    throttled = [r for r in fake.requests if r.status == 429]
    assert len(throttled) == 2
    assert graph.stats.batches == 4
    patches = [r for r in fake.requests if r.method == "PATCH"]
    assert len(patches) == 45 + 2, "each message once, the throttled ones twice"


async def test_the_header_fallback_reads_messages_without_transport_headers_in_one_batch() -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    for n in range(5):
        fake.deliver(
            ALICE,
            an_email(
                sender=JANE,
                to=[ALICE],
                message_id=f"<reply-{n}@fabrikam.example>",
                in_reply_to=f"<order-{n}@contoso.example>",
            ),
            transport_headers=n % 2 == 0,
        )
    mailbox, profile, credentials = setup(fake)

    async with GraphTransport(http_transport=fake.transport()).incoming.open(
        mailbox, profile, credentials
    ) as session:
        listed = await session.list_new(INBOX, None, limit=10)
        fake.requests.clear()
        headers = await session.fetch_headers(listed.refs)

    parsed = [parse_headers(h.data) for h in headers]
    assert [p.in_reply_to for p in parsed] == [
        (MessageId(f"<order-{n}@contoso.example>"),) for n in range(5)
    ]
    assert len(batches(fake)) == 1
    expanded = [r for r in fake.requests if "singleValueExtendedProperties" in r.query]
    assert len(expanded) == 2, "only the two messages without transport headers"
    assert all(r.prefer == 'IdType="ImmutableId"' for r in expanded)


async def test_the_fakes_batches_hold_20_and_fail_dependents_with_424() -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    message_id = fake.deliver(ALICE, an_email(to=[ALICE]))
    token = fake.issue_token(user=ALICE)
    auth = {"Authorization": f"Bearer {token}"}

    def get(n: int, path: str, *depends: str) -> dict[str, object]:
        item: dict[str, object] = {"id": str(n), "method": "GET", "url": path}
        if depends:
            item["dependsOn"] = list(depends)
        return item

    async with httpx.AsyncClient(transport=fake.transport()) as http:
        too_many = await http.post(
            f"{FAKE_GRAPH_URL}/$batch",
            headers=auth,
            json={"requests": [get(n, f"/users/{ALICE}/mailFolders/inbox") for n in range(21)]},
        )
        chained = await http.post(
            f"{FAKE_GRAPH_URL}/$batch",
            headers=auth,
            json={
                "requests": [
                    get(1, f"/users/{ALICE}/messages/nope"),
                    get(2, f"/users/{ALICE}/messages/{message_id}", "1"),
                    get(3, f"/users/{ALICE}/messages/{message_id}"),
                ]
            },
        )
        unauthorized = await http.post(
            f"{FAKE_GRAPH_URL}/$batch", json={"requests": [get(1, f"/users/{ALICE}/messages")]}
        )

    assert too_many.status_code == 400
    assert chained.status_code == 200
    statuses = {r["id"]: r["status"] for r in chained.json()["responses"]}
    assert statuses == {"1": 404, "2": 424, "3": 200}
    assert unauthorized.status_code == 401
