"""The Graph webhook handler on its own: the validation handshake, ``clientState``, routing
and the lifecycle events, with watches stood in for by recording callbacks."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

from serversync.adapters.transports.graph import (
    GraphWebhookHandler,
    LifecycleEvent,
    WebhookResponse,
)
from serversync.adapters.transports.graph._webhook import _Route
from serversync.ports import PushHint

URL = "https://crm.contoso.example/graph/notifications"
SECRET = "s3cret-client-state"


def _handler() -> GraphWebhookHandler:
    return GraphWebhookHandler(notification_url=URL)


def _watching(
    handler: GraphWebhookHandler, subscription_id: str = "sub-1"
) -> list[PushHint | LifecycleEvent]:
    """Register a watch for ``subscription_id``; the list of what reaches it."""
    seen: list[PushHint | LifecycleEvent] = []
    handler._register(
        subscription_id,
        _Route(
            mailbox_id="mbx-1",
            client_state=SECRET,
            loop=asyncio.get_running_loop(),
            deliver=seen.append,
        ),
    )
    return seen


def _batch(*items: dict[str, Any]) -> bytes:
    return json.dumps({"value": list(items)}).encode()


def _created(subscription_id: str = "sub-1", client_state: str | None = SECRET) -> dict[str, Any]:
    return {
        "subscriptionId": subscription_id,
        "clientState": client_state,
        "changeType": "created",
        "resource": "Users/alice@contoso.example/Messages/AAk1",
        "resourceData": {"id": "AAk1"},
        "subscriptionExpirationDateTime": "2026-11-28T00:00:00Z",
        "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
    }


async def _post(handler: GraphWebhookHandler, body: bytes, query: str = "") -> WebhookResponse:
    return await handler.handle(
        method="POST", query=query, headers={"content-type": "application/json"}, body=body
    )


async def _settle() -> None:
    await asyncio.sleep(0)  # deliveries go through call_soon_threadsafe


async def test_the_validation_handshake_echoes_the_decoded_token_as_plain_text() -> None:
    handler = _handler()
    token = "Validation: Testing client application reachability for subscription Request-Id: 1"
    query = "validationToken=Validation%3a+Testing+client+application+reachability+for+"
    query += "subscription+Request-Id%3a+1"
    answer = await handler.handle(method="POST", query=query, headers={}, body=b"")
    assert answer.status == 200
    assert answer.content_type == "text/plain; charset=utf-8"
    assert answer.body.decode() == token
    assert handler.stats.validations == 1


async def test_a_notification_becomes_a_new_mail_hint_and_is_answered_202() -> None:
    handler = _handler()
    seen = _watching(handler)
    answer = await _post(handler, _batch(_created(), _created()))
    await _settle()
    assert answer.status == 202
    assert seen == [PushHint.NEW_MAIL, PushHint.NEW_MAIL]
    assert handler.stats.notifications == 2


@pytest.mark.parametrize("client_state", ["wrong", None, "s3cret-client-statX", SECRET + "x"])
async def test_a_wrong_client_state_is_answered_202_dropped_and_counted(
    client_state: str | None,
) -> None:
    handler = _handler()
    seen = _watching(handler)
    answer = await _post(handler, _batch(_created(client_state=client_state)))
    await _settle()
    assert answer.status == 202
    assert seen == []
    assert handler.stats.wrong_client_state == 1
    assert handler.stats.notifications == 0


async def test_a_notification_for_an_unknown_subscription_is_answered_202_and_dropped() -> None:
    handler = _handler()
    seen = _watching(handler)
    answer = await _post(handler, _batch(_created(subscription_id="someone-else")))
    await _settle()
    assert answer.status == 202
    assert seen == []
    assert handler.stats.unknown_subscription == 1
    # An ended watch's subscription is unknown from then on.
    handler._unregister("sub-1")
    await _post(handler, _batch(_created()))
    assert handler.stats.unknown_subscription == 2
    assert handler.subscriptions == frozenset()


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ("missed", LifecycleEvent.MISSED),
        ("subscriptionRemoved", LifecycleEvent.SUBSCRIPTION_REMOVED),
        ("reauthorizationRequired", LifecycleEvent.REAUTHORIZATION_REQUIRED),
    ],
)
async def test_lifecycle_events_reach_the_watch(event: str, expected: LifecycleEvent) -> None:
    handler = _handler()
    seen = _watching(handler)
    item = {
        "subscriptionId": "sub-1",
        "clientState": SECRET,
        "lifecycleEvent": event,
        "subscriptionExpirationDateTime": "2026-11-28T00:00:00Z",
        "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
    }
    answer = await _post(handler, _batch(item))
    await _settle()
    assert answer.status == 202
    assert seen == [expected]


async def test_an_unknown_lifecycle_event_is_ignored() -> None:
    handler = _handler()
    seen = _watching(handler)
    item = {"subscriptionId": "sub-1", "clientState": SECRET, "lifecycleEvent": "somethingNew"}
    assert (await _post(handler, _batch(item))).status == 202
    await _settle()
    assert seen == []


@pytest.mark.parametrize(
    "body", [b"", b"not json", b"[]", b'{"value": 3}', b'{"value": [1]}', b'{"other": []}']
)
async def test_a_body_that_is_no_notification_batch_is_refused_with_400(body: bytes) -> None:
    handler = _handler()
    answer = await _post(handler, body)
    assert answer.status == 400
    assert answer.body  # says why
    assert handler.stats.malformed == 1


async def test_only_post_is_answered() -> None:
    answer = await _handler().handle(method="GET", query="", headers={}, body=b"")
    assert answer.status == 405


async def test_a_notification_from_another_thread_reaches_the_watch_on_its_loop() -> None:
    handler = _handler()
    seen = _watching(handler)
    arrived = asyncio.Event()
    loop = asyncio.get_running_loop()

    def host_thread() -> None:
        answer = handler.answer(method="POST", query="", headers={}, body=_batch(_created()))
        assert answer.status == 202
        loop.call_soon_threadsafe(arrived.set)

    thread = threading.Thread(target=host_thread)
    thread.start()
    await asyncio.wait_for(arrived.wait(), 5)
    await _settle()
    thread.join(5)
    assert seen == [PushHint.NEW_MAIL]


def test_the_client_state_never_shows_in_a_repr() -> None:
    handler = _handler()
    route = _Route(
        mailbox_id="mbx-1",
        client_state=SECRET,
        loop=asyncio.new_event_loop(),
        deliver=lambda _: None,
    )
    try:
        handler._register("sub-1", route)
        assert SECRET not in repr(route)
        assert SECRET not in repr(handler)
    finally:
        route.loop.close()


def test_a_notification_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="no http"):
        GraphWebhookHandler(notification_url="ftp://crm.contoso.example/notify")
