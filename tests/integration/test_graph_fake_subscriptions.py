"""The fake Graph's subscriptions on their own, against small host apps on loopback: the
handshake it insists on, the notifications it POSTs, the limits it enforces."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from serversync.testing import an_email
from serversync.testing.graph import AsgiApp, FakeGraph, serve_asgi

pytestmark = pytest.mark.integration

ALICE = "alice@contoso.example"
Reply = Callable[[str], Awaitable[tuple[int, str, bytes]]]


async def _echo(token: str) -> tuple[int, str, bytes]:
    return 200, "text/plain", token.encode()


class _Host:
    """An ASGI app answering validations with ``reply`` and keeping every notification."""

    def __init__(self, reply: Reply = _echo) -> None:
        self.reply = reply
        self.received: list[dict[str, Any]] = []

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        body = (await receive()).get("body", b"")
        query = parse_qs(scope["query_string"].decode())
        if "validationToken" in query:
            status, kind, out = await self.reply(query["validationToken"][0])
        else:
            self.received.append(json.loads(body))
            status, kind, out = 202, "text/plain", b""
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", kind.encode())],
            }
        )
        await send({"type": "http.response.body", "body": out})


@asynccontextmanager
async def _tenant(host: AsgiApp) -> AsyncIterator[tuple[FakeGraph, httpx.AsyncClient, str]]:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    token = fake.issue_token(user=ALICE)
    async with (
        fake.serve() as graph_url,
        serve_asgi(host) as host_url,
        httpx.AsyncClient(
            base_url=graph_url, headers={"Authorization": f"Bearer {token}"}, timeout=20
        ) as client,
    ):
        yield fake, client, host_url + "/notify"


def _subscription(url: str, *, minutes: float = 60, **extra: Any) -> dict[str, Any]:
    expiry = datetime.now(UTC) + timedelta(minutes=minutes)
    return {
        "changeType": "created",
        "notificationUrl": url,
        "resource": f"users/{ALICE}/mailFolders('inbox')/messages",
        "expirationDateTime": expiry.isoformat(),
        "clientState": "the-secret",
        **extra,
    }


async def test_a_subscription_is_created_after_a_handshake_and_notifies_new_mail() -> None:
    host = _Host()
    async with _tenant(host) as (fake, client, url):
        created = await client.post("/subscriptions", json=_subscription(url))
        assert created.status_code == 201, created.text
        subscription = created.json()
        fake.deliver(ALICE, an_email(subject="one"), folder="sentitems")  # not subscribed
        message_id = fake.deliver(ALICE, an_email(subject="two"))
        await asyncio.to_thread(fake.subscriptions.wait_delivered)
    (batch,) = host.received
    (item,) = batch["value"]
    assert item["subscriptionId"] == subscription["id"]
    assert item["clientState"] == "the-secret"
    assert item["changeType"] == "created"
    assert item["resourceData"]["id"] == message_id
    assert item["resource"].endswith(f"/Messages/{message_id}")
    assert {"subscriptionExpirationDateTime", "tenantId"} <= item.keys()
    (record,) = fake.subscriptions.notifications
    assert (record.kind, record.status, record.attempts) == ("created", 202, 1)


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (lambda token: _answer(200, "text/plain", b"something else"), "exactly match"),
        (lambda token: _answer(404, "text/plain", b""), "200 OK"),
        (lambda token: _answer(200, "application/json", token.encode()), "text/plain"),
    ],
)
async def test_a_wrong_echo_refuses_the_subscription(
    reply: Callable[[str], Awaitable[tuple[int, str, bytes]]], why: str
) -> None:
    async with _tenant(_Host(reply)) as (fake, client, url):
        refused = await client.post("/subscriptions", json=_subscription(url))
        assert refused.status_code == 400
        assert why in refused.json()["error"]["message"]
        assert fake.subscriptions.active() == []


async def _answer(status: int, kind: str, body: bytes) -> tuple[int, str, bytes]:
    return status, kind, body


async def test_a_late_echo_refuses_the_subscription() -> None:
    async def slow(token: str) -> tuple[int, str, bytes]:
        await asyncio.sleep(1.0)
        return await _echo(token)

    async with _tenant(_Host(slow)) as (fake, client, url):
        fake.subscriptions.validation_timeout = 0.3
        refused = await client.post("/subscriptions", json=_subscription(url))
        assert refused.status_code == 400
        assert "did not answer within 0.3 s" in refused.json()["error"]["message"]
        assert fake.subscriptions.active() == []


async def test_a_subscription_longer_than_4230_minutes_is_refused() -> None:
    async with _tenant(_Host()) as (fake, client, url):
        refused = await client.post("/subscriptions", json=_subscription(url, minutes=4231))
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "ExtensionError"
        created = await client.post("/subscriptions", json=_subscription(url, minutes=4229))
        assert created.status_code == 201
        assert [s.id for s in fake.subscriptions.active()] == [created.json()["id"]]
        too_long = (datetime.now(UTC) + timedelta(minutes=4300)).isoformat()
        renewed = await client.patch(
            f"/subscriptions/{created.json()['id']}", json={"expirationDateTime": too_long}
        )
        assert renewed.status_code == 400


async def test_a_subscription_lapses_without_renewal_and_notifies_no_more() -> None:
    host = _Host()
    async with _tenant(host) as (fake, client, url):
        created = await client.post("/subscriptions", json=_subscription(url, minutes=0.02))
        assert created.status_code == 201
        await asyncio.sleep(1.5)
        fake.deliver(ALICE, an_email(subject="after expiry"))
        assert fake.subscriptions.active() == []
        assert fake.subscriptions.expired == 1
        gone = await client.patch(
            f"/subscriptions/{created.json()['id']}",
            json={"expirationDateTime": (datetime.now(UTC) + timedelta(hours=1)).isoformat()},
        )
        assert gone.status_code == 404
    assert host.received == []


async def test_lifecycle_events_go_to_the_lifecycle_url_and_removal_ends_it() -> None:
    host = _Host()
    async with _tenant(host) as (fake, client, url):
        created = await client.post(
            "/subscriptions", json=_subscription(url, lifecycleNotificationUrl=url + "?life")
        )
        subscription_id = created.json()["id"]
        assert fake.subscriptions.send_lifecycle("reauthorizationRequired") == 1
        assert fake.subscriptions.active()[0].needs_reauthorization
        reauthorized = await client.post(f"/subscriptions/{subscription_id}/reauthorize")
        assert reauthorized.status_code == 200
        assert fake.subscriptions.active()[0].reauthorizations == 1
        fake.subscriptions.send_lifecycle("subscriptionRemoved")
        assert fake.subscriptions.active() == []
        await asyncio.to_thread(fake.subscriptions.wait_delivered)
        with pytest.raises(ValueError, match="unknown lifecycle event"):
            fake.subscriptions.send_lifecycle("somethingElse")
    events = [item["lifecycleEvent"] for batch in host.received for item in batch["value"]]
    assert events == ["reauthorizationRequired", "subscriptionRemoved"]
    assert all(b["value"][0]["clientState"] == "the-secret" for b in host.received)


async def test_a_delegated_token_subscribes_to_its_own_mailbox_only() -> None:
    async with _tenant(_Host()) as (fake, client, url):
        fake.add_mailbox("bob@contoso.example")
        theirs = _subscription(url, resource="users/bob@contoso.example/messages")
        refused = await client.post("/subscriptions", json=theirs)
        assert refused.status_code == 403
        deleted = await client.delete("/subscriptions/unknown")
        assert deleted.status_code == 404


async def test_a_notification_the_host_refuses_is_tried_again() -> None:
    host = _Host()
    answers = iter([503])

    async def flaky(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        status = next(answers, None) if not scope["query_string"] else None
        if status is None:
            await host(scope, receive, send)
            return
        await receive()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with _tenant(flaky) as (fake, client, url):
        assert (await client.post("/subscriptions", json=_subscription(url))).status_code == 201
        fake.deliver(ALICE, an_email(subject="retried"))
        await asyncio.to_thread(fake.subscriptions.wait_delivered)
    (record,) = fake.subscriptions.notifications
    assert (record.status, record.attempts) == (202, 2)
    assert len(host.received) == 1
