"""The fake Graph's change-notification subscriptions, over real HTTP like Graph's.

``POST /subscriptions`` runs the validation handshake for real: the fake POSTs
``?validationToken=…`` to the ``notificationUrl`` (and the ``lifecycleNotificationUrl``) and
refuses the subscription (400) unless the answer is ``200 text/plain`` with the token within
:attr:`FakeSubscriptions.validation_timeout`. A message delivered to a subscribed folder is
POSTed to the ``notificationUrl`` as Graph's documented notification batch, from a thread of
its own (the delivery never waits for the host); lifecycle notifications are sent when a
test asks (:meth:`FakeSubscriptions.send_lifecycle`). Subscriptions expire at their
``expirationDateTime`` (more than 4,230 minutes ahead is refused, as Graph does; the fake
accepts short lives, for tests of renewal). Faults for ``/subscriptions`` are injected with
:class:`~serversync.testing.graph.GraphFault` like any other.
"""

from __future__ import annotations

import collections
import json
import re
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode

import attrs
import httpx

from serversync.testing.graph._core import GraphResponse

if TYPE_CHECKING:
    from serversync.testing.graph._core import GraphState

__all__ = ["FakeSubscription", "FakeSubscriptions", "NotificationRecord"]

_MAX_LIFE: Final = timedelta(minutes=4230)
_FOLDER_RESOURCE: Final = re.compile(
    r"^/?(?:users|Users)/([^/]+)/mailFolders(?:\('([^']+)'\)|/([^/]+))/messages$"
)
_MAILBOX_RESOURCE: Final = re.compile(r"^/?(?:users|Users)/([^/]+)/messages$")
_LIFECYCLE: Final = frozenset({"missed", "subscriptionRemoved", "reauthorizationRequired"})


@attrs.define
class FakeSubscription:
    """One subscription the fake holds."""

    id: str
    address: str
    folder_id: str | None
    resource: str
    change_types: frozenset[str]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None = attrs.field(repr=False)
    expires: datetime
    renewals: int = 0
    reauthorizations: int = 0
    needs_reauthorization: bool = False


@attrs.frozen(kw_only=True)
class NotificationRecord:
    """A notification the fake POSTed: the subscription, its kind (``created`` or a
    lifecycle event), the answer's status (``None``: none within the deadline) and how many
    tries it took."""

    subscription_id: str
    kind: str
    status: int | None
    attempts: int


def _error(status: int, code: str, message: str) -> GraphResponse:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return GraphResponse(status=status, headers={"Content-Type": "application/json"}, body=body)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeSubscriptions:
    """The subscriptions of a fake tenant (``fake.subscriptions``)."""

    def __init__(self, state: GraphState) -> None:
        self._state = state
        self._by_id: dict[str, FakeSubscription] = {}
        self.validation_timeout = 10.0
        """Seconds the endpoint has to answer the validation handshake (Graph: 10)."""
        self.delivery_timeout = 3.0
        """Seconds the endpoint has to answer a notification (Graph: 3) before a retry."""
        self.delivery_attempts = 3
        """Tries per notification (Graph keeps trying for hours)."""
        self.notifications: list[NotificationRecord] = []
        """Every notification sent, once its delivery ended."""
        self.muted = False
        """Lose change notifications (not lifecycle ones), as Graph sometimes does."""
        self.expired = 0
        """Subscriptions that lapsed without renewal."""
        self.deleted = 0
        """Subscriptions deleted by a client."""
        self._pending: collections.deque[tuple[FakeSubscription, str, bytes, str]] = (
            collections.deque()
        )
        self._sender: threading.Thread | None = None
        self._send_lock = threading.Lock()

    # -- inspecting and disturbing ------------------------------------------------------------

    def active(self) -> list[FakeSubscription]:
        """Copies of the subscriptions that have not lapsed."""
        with self._state._lock:
            self._purge()
            return [attrs.evolve(s) for s in self._by_id.values()]

    def send_lifecycle(self, event: str, subscription_id: str | None = None) -> int:
        """Send the lifecycle notification ``event`` (``missed``, ``subscriptionRemoved``,
        ``reauthorizationRequired``) for one subscription or all; ``subscriptionRemoved``
        removes them. Returns how many were sent."""
        if event not in _LIFECYCLE:
            raise ValueError(f"unknown lifecycle event {event!r}")
        with self._state._lock:
            self._purge()
            chosen = [
                s
                for s in self._by_id.values()
                if subscription_id is None or s.id == subscription_id
            ]
            for s in chosen:
                if event == "subscriptionRemoved":
                    del self._by_id[s.id]
                elif event == "reauthorizationRequired":
                    s.needs_reauthorization = True
                if s.lifecycle_url is None:
                    continue
                item = {
                    "subscriptionId": s.id,
                    "subscriptionExpirationDateTime": _iso(s.expires),
                    "tenantId": self._tenant_id,
                    "clientState": s.client_state,
                    "lifecycleEvent": event,
                }
                self._enqueue(s, event, {"value": [item]}, s.lifecycle_url)
            return len(chosen)

    def wait_delivered(self, timeout: float = 5.0) -> None:
        """Block until every notification queued so far was delivered (or given up)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._send_lock:
                if not self._pending and self._sender is None:
                    return
            time.sleep(0.01)
        raise TimeoutError("notifications still being delivered")

    @property
    def _tenant_id(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_DNS, self._state.tenant))

    # -- the fake's hooks ---------------------------------------------------------------------

    def message_created(self, address: str, folder_id: str, message_id: str) -> None:
        """Notify every subscription to the folder (or the mailbox) of a new message."""
        self._purge()
        if self.muted:
            return
        for s in list(self._by_id.values()):
            if s.address.lower() != address.lower() or "created" not in s.change_types:
                continue
            if s.folder_id is not None and s.folder_id != folder_id:
                continue
            user = f"Users/{s.address}"
            item = {
                "subscriptionId": s.id,
                "subscriptionExpirationDateTime": _iso(s.expires),
                "changeType": "created",
                "resource": f"{user}/Messages/{message_id}",
                "resourceData": {
                    "@odata.type": "#Microsoft.Graph.Message",
                    "@odata.id": f"{user}/Messages/{message_id}",
                    "@odata.etag": 'W/"CQAAABYAAAA1"',
                    "id": message_id,
                },
                "clientState": s.client_state,
                "tenantId": self._tenant_id,
            }
            self._enqueue(s, "created", {"value": [item]}, s.notification_url)

    def handle(
        self, method: str, rest: list[str], headers: Mapping[str, str], body: bytes
    ) -> GraphResponse:
        """``/subscriptions[/{id}[/reauthorize]]``; called with the fake's lock held."""
        self._purge()
        if not rest and method == "POST":
            return self._create(headers, body)
        if not rest:
            return _error(405, "InvalidRequest", "unsupported subscriptions request")
        found = self._by_id.get(rest[0])
        if found is None:
            return _error(404, "ResourceNotFound", "The object was not found.")
        if len(rest) == 1 and method == "GET":
            return self._answer(200, found)
        if len(rest) == 1 and method == "PATCH":
            return self._renew(found, body)
        if len(rest) == 1 and method == "DELETE":
            del self._by_id[found.id]
            self.deleted += 1
            return GraphResponse(status=204)
        if rest[1:] == ["reauthorize"] and method == "POST":
            found.reauthorizations += 1
            found.needs_reauthorization = False
            return GraphResponse(status=200)
        return _error(405, "InvalidRequest", "unsupported subscriptions request")

    # -- answering ----------------------------------------------------------------------------

    def _purge(self) -> None:
        now = self._state._now()
        for s in [s for s in self._by_id.values() if s.expires <= now]:
            del self._by_id[s.id]
            self.expired += 1

    def _answer(self, status: int, s: FakeSubscription) -> GraphResponse:
        value = {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
            "id": s.id,
            "resource": s.resource,
            "applicationId": "24d3b144-21ae-4080-943f-7067b395b913",
            "changeType": ",".join(sorted(s.change_types)),
            "clientState": s.client_state,
            "notificationUrl": s.notification_url,
            "lifecycleNotificationUrl": s.lifecycle_url,
            "expirationDateTime": _iso(s.expires),
            "creatorId": "8ee44408-0679-472c-bc2a-692812af3437",
            "latestSupportedTlsVersion": "v1_2",
            "notificationContentType": "application/json",
        }
        return GraphResponse(
            status=status,
            headers={"Content-Type": "application/json"},
            body=json.dumps(value).encode(),
        )

    def _expiry(self, value: Any) -> datetime | GraphResponse:
        try:
            expires = datetime.fromisoformat(str(value))
        except ValueError:
            return _error(400, "InvalidRequest", "expirationDateTime is no date and time")
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        now = self._state._now()
        if expires <= now:
            return _error(400, "InvalidRequest", "expirationDateTime is in the past")
        if expires > now + _MAX_LIFE:
            return _error(
                400,
                "ExtensionError",
                "Operation: Create; Exception: [Status Code: BadRequest; Reason: Subscription "
                "expiration can only be 4230 minutes in the future.]",
            )
        return expires

    def _create(self, headers: Mapping[str, str], body: bytes) -> GraphResponse:
        try:
            asked = json.loads(body or b"{}")
        except ValueError:
            return _error(400, "BadRequest", "the body is no JSON")
        if not isinstance(asked, dict):
            return _error(400, "BadRequest", "the body is no JSON object")
        resource = str(asked.get("resource") or "")
        folder = _FOLDER_RESOURCE.match(resource)
        whole = _MAILBOX_RESOURCE.match(resource)
        match = folder or whole
        if match is None:
            return _error(400, "ExtensionError", f"Resource '{resource}' is not supported.")
        address = match.group(1)
        box = self._state._mailboxes.get(address.lower())
        if box is None:
            return _error(404, "ResourceNotFound", f"The user '{address}' was not found.")
        if not self._may_subscribe(headers, box.address):
            return _error(403, "ExtensionError", "Access is denied to the requested resource.")
        folder_id = None
        if folder is not None:
            name = folder.group(2) or folder.group(3)
            folder_id = box.well_known.get(name.lower(), name)
            if folder_id not in box.folders:
                return _error(404, "ResourceNotFound", "The folder was not found.")
        change_types = frozenset(
            c.strip() for c in str(asked.get("changeType") or "").split(",") if c.strip()
        )
        if not change_types or not change_types <= {"created", "updated", "deleted"}:
            return _error(400, "InvalidRequest", "changeType is missing or unknown")
        url = str(asked.get("notificationUrl") or "")
        lifecycle = asked.get("lifecycleNotificationUrl")
        if not url.lower().startswith(("https://", "http://")):
            return _error(400, "InvalidRequest", "notificationUrl is no URL")
        expires = self._expiry(asked.get("expirationDateTime"))
        if isinstance(expires, GraphResponse):
            return expires
        refused = self._handshakes([url, *([str(lifecycle)] if lifecycle else [])])
        if refused is not None:
            return _error(
                400, "InvalidRequest", f"Subscription validation request failed. {refused}"
            )
        client_state = asked.get("clientState")
        s = FakeSubscription(
            id=str(uuid.uuid4()),
            address=box.address,
            folder_id=folder_id,
            resource=resource,
            change_types=change_types,
            notification_url=url,
            lifecycle_url=str(lifecycle) if lifecycle else None,
            client_state=str(client_state) if client_state is not None else None,
            expires=expires,
        )
        self._by_id[s.id] = s
        return self._answer(201, s)

    def _may_subscribe(self, headers: Mapping[str, str], address: str) -> bool:
        """Delegated tokens subscribe to their own mailbox only."""
        value = headers.get("authorization", "")
        grant = self._state._grants.get(value[7:] if value.lower().startswith("bearer ") else "")
        return grant is None or grant.user is None or grant.user == address.lower()

    def _renew(self, s: FakeSubscription, body: bytes) -> GraphResponse:
        try:
            asked = json.loads(body or b"{}")
        except ValueError:
            return _error(400, "BadRequest", "the body is no JSON")
        expires = self._expiry(asked.get("expirationDateTime") if isinstance(asked, dict) else "")
        if isinstance(expires, GraphResponse):
            return expires
        s.expires = expires
        s.renewals += 1
        s.needs_reauthorization = False
        return self._answer(200, s)

    def _handshakes(self, urls: list[str]) -> str | None:
        """Validate every URL with the fake's lock released: the host answering may look at
        the fake meanwhile (from the very thread or event loop that waits for this answer)."""
        lock = self._state._lock
        lock.release()
        try:
            for url in urls:
                refused = self._validate(url)
                if refused is not None:
                    return refused
            return None
        finally:
            lock.acquire()

    def _validate(self, url: str) -> str | None:
        """The validation handshake against ``url``: ``None`` when it was answered right."""
        token = (
            "Validation: Testing client application reachability for subscription "
            f"Request-Id: {uuid.uuid4()}"
        )
        target = url + ("&" if "?" in url else "?") + urlencode({"validationToken": token})
        try:
            answer = httpx.post(
                target,
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=self.validation_timeout,
            )
        except httpx.TimeoutException:
            seconds = self.validation_timeout
            return f"The notification endpoint did not answer within {seconds:g} s."
        except httpx.HTTPError as exc:
            return f"The notification endpoint could not be reached ({type(exc).__name__})."
        if answer.status_code != 200:
            return (
                "Notification endpoint must respond with 200 OK to validation request "
                f"(it answered {answer.status_code})."
            )
        if not answer.headers.get("content-type", "").lower().startswith("text/plain"):
            return "The validation response must be text/plain."
        if answer.text != token:
            return "Response must exactly match validationToken query parameter."
        return None

    # -- delivering ---------------------------------------------------------------------------

    def _enqueue(self, s: FakeSubscription, kind: str, payload: Any, url: str) -> None:
        with self._send_lock:
            self._pending.append((s, kind, json.dumps(payload).encode(), url))
            if self._sender is None:
                self._sender = threading.Thread(
                    target=self._send_all, name="fake-graph-notifications", daemon=True
                )
                self._sender.start()

    def _send_all(self) -> None:
        with httpx.Client(timeout=self.delivery_timeout) as client:
            while True:
                with self._send_lock:
                    if not self._pending:
                        self._sender = None
                        return
                    s, kind, body, url = self._pending.popleft()
                status: int | None = None
                attempts = 0
                while attempts < self.delivery_attempts:
                    attempts += 1
                    try:
                        status = client.post(
                            url, content=body, headers={"Content-Type": "application/json"}
                        ).status_code
                    except httpx.HTTPError:
                        status = None
                    if status is not None and 200 <= status < 300:
                        break
                    time.sleep(0.1 * attempts)
                with self._state._lock:
                    self.notifications.append(
                        NotificationRecord(
                            subscription_id=s.id, kind=kind, status=status, attempts=attempts
                        )
                    )
