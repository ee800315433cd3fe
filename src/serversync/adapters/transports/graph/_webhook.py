"""The receiving end of Graph change notifications: a request → response function that a host
mounts in whatever web framework it runs (FastAPI, Django, aiohttp, a bare ASGI app).

A notification is only a hint (design decision 7): it wakes the mailbox, whose message delta
then decides what is new. So the handler answers at once (Graph wants a 2xx within 3 s),
never waits for Graph or the store, and drops whatever it cannot route: a lost notification
costs latency until the next poll, never a message.

The handler knows the subscriptions the Graph transport's watches created (in memory, so it
must run in the engine's process); each carries a random ``clientState`` that every
notification has to repeat. Watches run on the engine's event loop; the handler may be called
from any thread or loop, and hands everything over with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import enum
import hmac
import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import attrs

from serversync.ports import PushHint

__all__ = [
    "GraphWebhookHandler",
    "LifecycleEvent",
    "WebhookResponse",
    "WebhookStats",
]

logger = logging.getLogger("serversync.adapters.transports.graph")

# Graph's payloads are small (notifications come in batches of at most a few hundred).
_MAX_BODY: Final = 1_000_000


class LifecycleEvent(enum.StrEnum):
    """Graph's lifecycle notifications (``lifecycleEvent``) for Outlook resources."""

    MISSED = "missed"
    """Notifications were lost: the resource must be read again (a delta round does it)."""
    SUBSCRIPTION_REMOVED = "subscriptionRemoved"
    """Graph removed the subscription: create it again, then read the resource."""
    REAUTHORIZATION_REQUIRED = "reauthorizationRequired"
    """The subscription's authorization runs out: reauthorize it (or renew it)."""


@attrs.frozen(kw_only=True)
class WebhookResponse:
    """What the host sends back: status, content type (``None`` for no body) and body."""

    status: int
    content_type: str | None = None
    body: bytes = b""


@attrs.define
class WebhookStats:
    """What the handler was sent and what it did with it."""

    validations: int = 0
    """Validation handshakes answered."""
    notifications: int = 0
    """Change and lifecycle notifications routed to a watch."""
    unknown_subscription: int = 0
    """Notifications dropped: no watch of this process holds that subscription."""
    wrong_client_state: int = 0
    """Notifications dropped: the ``clientState`` did not match the subscription's."""
    malformed: int = 0
    """Requests refused (400): a body that is no notification batch."""


@attrs.define(eq=False)
class _Route:
    """Where one subscription's notifications go: the watch that created it."""

    mailbox_id: str
    client_state: str = attrs.field(repr=False)
    loop: asyncio.AbstractEventLoop = attrs.field(repr=False)
    deliver: Callable[[PushHint | LifecycleEvent], None] = attrs.field(repr=False)


def _ok(status: int = 202) -> WebhookResponse:
    return WebhookResponse(status=status)


def _refused(status: int, why: str) -> WebhookResponse:
    return WebhookResponse(
        status=status, content_type="text/plain; charset=utf-8", body=why.encode()
    )


def _same(given: Any, expected: str) -> bool:
    """``clientState`` compared in constant time (it is a secret)."""
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class GraphWebhookHandler:
    """Answers Microsoft Graph's webhook requests; mount it at ``notification_url``.

    Give it to :class:`GraphTransport` (``webhook=``) and route the host's requests to
    :meth:`handle` (method, query string, headers, body in; a :class:`WebhookResponse` out):

    - ``?validationToken=…``: the validation handshake, answered ``200 text/plain`` with the
      decoded token;
    - a notification batch: answered ``202`` at once; each notification whose
      ``subscriptionId`` a watch of this process holds and whose ``clientState`` matches
      becomes a push hint for the mailbox; the rest are dropped and counted in
      :attr:`stats`;
    - lifecycle notifications: ``missed`` wakes the mailbox, ``subscriptionRemoved`` makes
      the watch create its subscription again (then wakes the mailbox),
      ``reauthorizationRequired`` makes it reauthorize (or renew) its subscription.

    ``lifecycle_notification_url`` defaults to ``notification_url`` (the handler answers
    both kinds on one URL). Both must be HTTPS URLs Graph can reach; plain ``http`` serves
    loopback tests only.
    """

    def __init__(
        self, *, notification_url: str, lifecycle_notification_url: str | None = None
    ) -> None:
        for url in (notification_url, lifecycle_notification_url):
            if url is not None and urlsplit(url).scheme.lower() not in ("https", "http"):
                raise ValueError(f"the notification URL {url!r} is no http(s) URL")
        self.notification_url = notification_url
        self.lifecycle_notification_url = lifecycle_notification_url or notification_url
        self.stats = WebhookStats()
        self._routes: dict[str, _Route] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"GraphWebhookHandler(notification_url={self.notification_url!r}, "
            f"subscriptions={len(self._routes)})"
        )

    # -- the watches' side --------------------------------------------------------------------

    def _register(self, subscription_id: str, route: _Route) -> None:
        with self._lock:
            self._routes[subscription_id] = route

    def _unregister(self, subscription_id: str) -> None:
        with self._lock:
            self._routes.pop(subscription_id, None)

    @property
    def subscriptions(self) -> frozenset[str]:
        """The ids of the subscriptions whose notifications this handler routes."""
        with self._lock:
            return frozenset(self._routes)

    # -- the host's side ----------------------------------------------------------------------

    async def handle(
        self, *, method: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> WebhookResponse:
        """Answer one request (see the class documentation); never raises."""
        return self.answer(method=method, query=query, headers=headers, body=body)

    __call__ = handle

    def answer(
        self, *, method: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> WebhookResponse:
        """:meth:`handle` for synchronous frameworks: it does no I/O and never blocks."""
        if method.upper() != "POST":
            return _refused(405, "Graph notifications are POSTed")
        token = parse_qs(query, keep_blank_values=True).get("validationToken")
        if token is not None:
            with self._lock:
                self.stats.validations += 1
            return WebhookResponse(
                status=200, content_type="text/plain; charset=utf-8", body=token[-1].encode()
            )
        if len(body) > _MAX_BODY:
            return self._malformed("the body is too large for a notification batch")
        try:
            batch = json.loads(body)
        except ValueError:
            return self._malformed("the body is no JSON")
        items = batch.get("value") if isinstance(batch, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            return self._malformed('the body is no notification batch ({"value": [...]})')
        for item in items:
            self._route(item)
        return _ok()

    def _malformed(self, why: str) -> WebhookResponse:
        with self._lock:
            self.stats.malformed += 1
        logger.warning("Graph webhook: refused a request: %s", why)
        return _refused(400, why)

    def _route(self, item: Mapping[str, Any]) -> None:
        subscription_id = item.get("subscriptionId")
        with self._lock:
            route = self._routes.get(subscription_id) if isinstance(subscription_id, str) else None
            if route is None:
                self.stats.unknown_subscription += 1
                logger.debug("Graph webhook: dropped a notification for an unknown subscription")
                return
            if not _same(item.get("clientState"), route.client_state):
                self.stats.wrong_client_state += 1
                logger.warning(
                    "Graph webhook: dropped a notification with a wrong clientState (mailbox %s)",
                    route.mailbox_id,
                )
                return
            self.stats.notifications += 1
        event = item.get("lifecycleEvent")
        what: PushHint | LifecycleEvent
        if event is None:
            what = PushHint.NEW_MAIL
        else:
            try:
                what = LifecycleEvent(str(event))
            except ValueError:
                logger.info("Graph webhook: ignored the lifecycle event %r", event)
                return
        try:
            route.loop.call_soon_threadsafe(route.deliver, what)
        except RuntimeError:  # the watch's loop is closed: it ended
            logger.debug("Graph webhook: the watch of mailbox %s has ended", route.mailbox_id)
