"""The fake Graph's state and its request handler: a pure ``handle(request) -> response``
over an in-memory tenant, served in process (httpx) and on loopback (real HTTP) alike."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from email.utils import format_datetime, getaddresses, parsedate_to_datetime
from typing import Any, Final
from urllib.parse import parse_qs, quote, unquote, urlsplit

import attrs

from serversync.testing.graph._batch import run_batch
from serversync.testing.graph._folders import FolderDeltas
from serversync.testing.graph._items import ITEM_RESOURCES, FakeItems
from serversync.testing.graph._large import (
    MAX_REQUEST_BYTES,
    FakeAttachment,
    LargeMessages,
    draft_mime,
)

__all__ = [
    "FakeMessage",
    "GraphFault",
    "GraphRequest",
    "GraphResponse",
    "GraphState",
    "RequestRecord",
    "SentMail",
]

_WELL_KNOWN: Final = (
    ("msgfolderroot", "Top of Information Store", None),
    ("inbox", "Inbox", "msgfolderroot"),
    ("drafts", "Drafts", "msgfolderroot"),
    ("sentitems", "Sent Items", "msgfolderroot"),
    ("outbox", "Outbox", "msgfolderroot"),
    ("deleteditems", "Deleted Items", "msgfolderroot"),
    ("junkemail", "Junk Email", "msgfolderroot"),
    ("archive", "Archive", "msgfolderroot"),
)
_DEFAULT_PAGE: Final = 10
_PROP_FILTER: Final = re.compile(
    r"^singleValueExtendedProperties/Any\(ep: ep/id eq '((?:[^']|'')*)' and "
    r"ep/value eq '((?:[^']|'')*)'\)$"
)
_EQ_FILTER: Final = re.compile(r"^(internetMessageId|displayName) eq '((?:[^']|'')*)'$")
_EXPAND_IDS: Final = re.compile(r"id eq '([^']*)'")
_MAX_PAGE: Final = re.compile(r"odata\.maxpagesize=(\d+)")


@attrs.frozen(kw_only=True)
class GraphRequest:
    """One HTTP request as the fake sees it."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes = b""


@attrs.frozen(kw_only=True)
class GraphResponse:
    """The fake's answer; ``delay`` holds it back that long (a slow or timed-out answer)."""

    status: int
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: bytes = b""
    delay: float = 0.0


@attrs.frozen(kw_only=True)
class RequestRecord:
    """A request the fake answered (tokens are never kept, only whether one was sent)."""

    at: float
    method: str
    host: str
    path: str
    query: str
    authorized: bool
    prefer: str | None
    status: int
    answered: float = 0.0
    """When the answer went out (``at`` plus the answer's delay): with ``at``, the time the
    request was in flight, for checks of concurrency."""


@attrs.frozen(kw_only=True)
class SentMail:
    """A message the fake sent: the sending mailbox, the envelope recipients and the MIME."""

    mailbox: str
    recipients: tuple[str, ...]
    mime: bytes
    message_id: str | None


@attrs.frozen(kw_only=True)
class GraphFault:
    """An injected answer for the next ``times`` requests whose method and path match.

    ``path`` is a regular expression searched in the request path. With ``after`` the
    request is carried out first and its answer replaced by the fault (the send that
    happened although Graph said 504). ``delay`` holds the answer back (past the client's
    deadline, a timeout). Build common ones with :meth:`throttled` and :meth:`error`.
    """

    status: int
    method: str | None = None
    path: str = ""
    body: bytes = b""
    headers: Mapping[str, str] = attrs.field(factory=dict)
    times: int = 1
    after: bool = False
    delay: float = 0.0

    @classmethod
    def throttled(
        cls, retry_after: str = "1", *, method: str | None = None, path: str = "", times: int = 1
    ) -> GraphFault:
        """429 ``ApplicationThrottled`` with a ``Retry-After`` (seconds or an HTTP date)."""
        return cls.error(
            429,
            "ApplicationThrottled",
            "Application is over its MailboxConcurrency limit.",
            method=method,
            path=path,
            times=times,
            headers={"Retry-After": retry_after},
        )

    @classmethod
    def error(
        cls,
        status: int,
        code: str,
        message: str = "",
        *,
        method: str | None = None,
        path: str = "",
        times: int = 1,
        after: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> GraphFault:
        """An OData error answer."""
        return cls(
            status=status,
            method=method,
            path=path,
            times=times,
            after=after,
            headers={"Content-Type": "application/json", **(headers or {})},
            body=json.dumps({"error": {"code": code, "message": message or code}}).encode(),
        )


@attrs.define
class FakeMessage:
    """One message in a fake mailbox."""

    id: str
    folder_id: str
    mime: bytes
    received: datetime
    is_draft: bool = False
    transported: bool = True
    categories: list[str] = attrs.Factory(list)
    extended: dict[str, str] = attrs.Factory(dict)
    bcc: list[str] = attrs.Factory(list)
    change: int = 1
    internet_message_id: str | None = None

    def parsed(self) -> EmailMessage:
        """The MIME's headers."""
        # The header block alone: parsing a large message whole is slow, and only its
        # headers are read.
        ends = [i for i in (self.mime.find(b"\r\n\r\n"), self.mime.find(b"\n\n")) if i >= 0]
        head = self.mime[: min(ends)] + b"\r\n\r\n" if ends else self.mime
        message = BytesParser(policy=default_policy).parsebytes(head, headersonly=True)
        assert isinstance(message, EmailMessage)
        return message


@attrs.define
class _Folder:
    id: str
    name: str
    parent_id: str | None


@attrs.define
class _Mailbox:
    address: str
    folders: dict[str, _Folder]
    well_known: dict[str, str]
    messages: dict[str, FakeMessage] = attrs.Factory(dict)
    # Change log: (folder id, kind, message id); kind is created, updated or deleted.
    log: list[tuple[str, str, str]] = attrs.Factory(list)
    on_premises: bool = False


@attrs.define
class _Round:
    """A delta round's listing, or the position a delta token stands for."""

    address: str
    folder_id: str
    select: str
    change_type: str
    ids: list[str] = attrs.Factory(list)
    offset: int = 0
    position: int = 0
    removed: list[str] = attrs.Factory(list)


@attrs.define
class _Grant:
    client_id: str | None
    user: str | None
    expires: float


@attrs.define
class _App:
    secret: str | None
    certificate: str | None = None
    consented: bool = True


def _error(status: int, code: str, message: str = "", **headers: str) -> GraphResponse:
    body = json.dumps({"error": {"code": code, "message": message or code}}).encode()
    return GraphResponse(
        status=status, headers={"Content-Type": "application/json", **headers}, body=body
    )


def _json(status: int, value: Any, **headers: str) -> GraphResponse:
    return GraphResponse(
        status=status,
        headers={"Content-Type": "application/json", **headers},
        body=json.dumps(value).encode(),
    )


def _recipient(value: str) -> dict[str, Any]:
    ((name, address),) = getaddresses([value]) or [("", value)]
    return {"emailAddress": {"name": name or address, "address": address}}


def _recipients(message: EmailMessage, header: str) -> list[dict[str, Any]]:
    values = [str(v) for v in message.get_all(header) or ()]
    return [
        {"emailAddress": {"name": name or address, "address": address}}
        for name, address in getaddresses(values)
        if address
    ]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class GraphState:
    """The fake tenant: mailboxes, applications and their tokens, delta rounds, faults and
    the record of requests. Thread-safe: the loopback server answers from its own thread."""

    def __init__(self, *, tenant: str, now: Callable[[], datetime] | None = None) -> None:
        self.tenant = tenant
        self._now = now or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._mailboxes: dict[str, _Mailbox] = {}
        self._apps: dict[str, _App] = {}
        self._grants: dict[str, _Grant] = {}
        self._rounds: dict[str, _Round] = {}
        self._faults: list[GraphFault] = []
        self._link_host: str | None = None
        self.sent: list[SentMail] = []
        self.requests: list[RequestRecord] = []
        self.token_requests = 0
        self.hold_in_outbox = False
        self.latency = 0.0
        self._batching = 0
        """Seconds every answer is held back (a slow server, so that requests overlap)."""
        self._serial = 0
        self._budget: tuple[int, float] | None = None
        self._spent: dict[str, list[float]] = {}
        self._large = LargeMessages(new_id=self._new_id)
        self._folder_deltas = FolderDeltas()
        from serversync.testing.graph._subscriptions import FakeSubscriptions

        self.subscriptions = FakeSubscriptions(self)
        """Change-notification subscriptions (see ``_subscriptions``)."""
        self.items = FakeItems(lock=self._lock, new_id=self._new_id, now=self._now)
        """Calendar events, contacts and To Do tasks (see :class:`FakeItems`)."""

    # -- arranging ----------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        self._serial += 1
        # Immutable ids look like Exchange's: long, base64url, case-sensitive.
        raw = f"{prefix}-{self._serial}-{secrets.token_hex(6)}".encode()
        return "AAkALg" + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def add_mailbox(self, address: str, *, on_premises: bool = False) -> None:
        """A mailbox with the well-known folders; ``on_premises`` makes Graph answer 404
        ``MailboxNotEnabledForRESTAPI`` for it, as for a mailbox of a hybrid on premises."""
        with self._lock:
            folders: dict[str, _Folder] = {}
            known: dict[str, str] = {}
            for name, display, parent in _WELL_KNOWN:
                folder_id = self._new_id("folder")
                known[name] = folder_id
                folders[folder_id] = _Folder(
                    id=folder_id, name=display, parent_id=known[parent] if parent else None
                )
            self._mailboxes[address.lower()] = _Mailbox(
                address=address, folders=folders, well_known=known, on_premises=on_premises
            )
            self.items.add_mailbox(address)

    def add_folder(self, address: str, name: str, *, parent: str = "inbox") -> str:
        """A mail folder under ``parent`` (a well-known name or an id); returns its id."""
        with self._lock:
            box = self._box(address)
            parent_id = box.well_known.get(parent, parent)
            folder_id = self._new_id("folder")
            box.folders[folder_id] = _Folder(id=folder_id, name=name, parent_id=parent_id)
            return folder_id

    def add_app(
        self, client_id: str, secret: str | None = None, *, certificate: str | None = None
    ) -> None:
        """An application the token endpoint knows, with its client secret or its
        certificate (PEM; the token endpoint then checks MSAL's signed assertion)."""
        with self._lock:
            self._apps[client_id] = _App(secret=secret, certificate=certificate)

    def revoke_consent(self, client_id: str) -> None:
        """Withdraw the application's consent: new tokens are refused (``invalid_grant``)
        and Graph answers 403 ``ErrorAccessDenied`` to the ones it holds."""
        with self._lock:
            self._apps[client_id].consented = False

    def issue_token(
        self, *, client_id: str | None = None, user: str | None = None, lifetime: float = 3600
    ) -> str:
        """An access token: an application's (every mailbox) or a user's (``user``'s own
        mailbox only, like a delegated token), valid ``lifetime`` seconds."""
        with self._lock:
            token = "fake." + secrets.token_urlsafe(24)
            self._grants[token] = _Grant(
                client_id=client_id,
                user=user.lower() if user else None,
                expires=time.monotonic() + lifetime,
            )
            return token

    def expire_tokens(self) -> None:
        """Invalidate every access token: Graph answers 401 until a new one is used."""
        with self._lock:
            self._grants.clear()

    def deliver(
        self,
        address: str,
        mime: bytes,
        *,
        folder: str = "inbox",
        received: datetime | None = None,
        transport_headers: bool = True,
    ) -> str:
        """Put a message into a folder (a well-known name or an id); returns its id.
        ``transport_headers=False`` gives it no ``internetMessageHeaders``, like a message
        saved by a client instead of received."""
        with self._lock:
            box = self._box(address)
            folder_id = box.well_known.get(folder, folder)
            message = FakeMessage(
                id=self._new_id("msg"),
                folder_id=folder_id,
                mime=mime,
                received=received or self._now(),
                transported=transport_headers,
            )
            message.internet_message_id = _message_id(message.parsed())
            box.messages[message.id] = message
            box.log.append((folder_id, "created", message.id))
            self.subscriptions.message_created(box.address, folder_id, message.id)
            return message.id

    def messages(self, address: str, folder: str | None = None) -> list[FakeMessage]:
        """Copies of the mailbox's messages, in one folder (a well-known name or an id)
        or all."""
        with self._lock:
            box = self._box(address)
            folder_id = box.well_known.get(folder, folder) if folder else None
            return [
                attrs.evolve(m)
                for m in box.messages.values()
                if folder_id is None or m.folder_id == folder_id
            ]

    def folder_id(self, address: str, name: str) -> str:
        """The id of a well-known folder or of the folder with that display name."""
        with self._lock:
            box = self._box(address)
            if name in box.well_known:
                return box.well_known[name]
            for f in box.folders.values():
                if f.name == name:
                    return f.id
            raise KeyError(name)

    def file_outbox(self, address: str) -> None:
        """Move every message waiting in the Outbox to Sent Items (``hold_in_outbox``)."""
        with self._lock:
            box = self._box(address)
            outbox, sent = box.well_known["outbox"], box.well_known["sentitems"]
            for m in box.messages.values():
                if m.folder_id == outbox:
                    self._move(box, m, sent)

    def limit_requests(self, count: int, *, per: float) -> None:
        """Throttle like Graph's per-mailbox budget, scaled down: more than ``count``
        requests to one mailbox within ``per`` seconds are answered 429 with the
        ``Retry-After`` (whole seconds) until the oldest leaves the window."""
        with self._lock:
            self._budget = (count, per)
            self._spent.clear()

    def add_fault(self, fault: GraphFault) -> None:
        """Answer matching requests with ``fault`` (see :class:`GraphFault`)."""
        with self._lock:
            self._faults.append(fault)

    def expire_delta_tokens(self) -> None:
        """Forget every delta round: each next/delta link answers 410 ``SyncStateNotFound``."""
        with self._lock:
            self._rounds.clear()
            self._folder_deltas.clear()
            self.items.forget_rounds()

    def folder_delta_lists_top_level_only(self, value: bool = True) -> None:
        """Make the folder tree delta list top-level folders alone (a live tenant is yet to
        confirm that it lists nested ones, as documented by third parties)."""
        with self._lock:
            self._folder_deltas.top_level_only = value

    def rename_folder(self, address: str, folder: str, name: str) -> None:
        """Give a folder (a well-known name or an id) another display name."""
        with self._lock:
            box = self._box(address)
            box.folders[box.well_known.get(folder, folder)].name = name

    def remove_folder(self, address: str, folder: str) -> None:
        """Delete a folder (an id) and its messages."""
        with self._lock:
            box = self._box(address)
            del box.folders[folder]
            for m in [m for m in box.messages.values() if m.folder_id == folder]:
                del box.messages[m.id]

    def upload_links_to(self, host: str | None) -> None:
        """Write upload session URLs to ``host`` (``outlook.office.com``, as Graph does, or
        another host, for tests of the client); ``None``: the host asked."""
        with self._lock:
            self._large.upload_host = host

    def set_upload_session_lifetime(self, lifetime: timedelta) -> None:
        """How long new upload sessions accept ranges (15 minutes unless set)."""
        with self._lock:
            self._large.session_lifetime = lifetime

    def expire_upload_sessions(self) -> None:
        """End every open upload session: its ``uploadUrl`` answers 404."""
        with self._lock:
            self._large.sessions.clear()

    def links_to(self, host: str | None) -> None:
        """Write next and delta links to ``host`` (another host, for tests of the client)."""
        with self._lock:
            self._link_host = host

    def _box(self, address: str) -> _Mailbox:
        return self._mailboxes[address.lower()]

    # -- token endpoint -----------------------------------------------------------------------

    def handle_token(self, form: Mapping[str, str]) -> GraphResponse:
        """The token endpoint (client credentials) for a form-encoded request."""
        with self._lock:
            self.token_requests += 1
            client_id = form.get("client_id", "")
            app = self._apps.get(client_id)
            if form.get("grant_type") != "client_credentials":
                return _json(400, {"error": "unsupported_grant_type"})
            if app is None or not _authenticated(app, form, self.authority_token_endpoint):
                return _json(
                    401,
                    {
                        "error": "invalid_client",
                        "error_description": "AADSTS7000215: Invalid client secret provided.",
                    },
                )
            if not app.consented:
                return _json(
                    400,
                    {
                        "error": "invalid_grant",
                        "error_description": "AADSTS65001: The user or administrator has not "
                        "consented to use the application.",
                    },
                )
            token = self.issue_token(client_id=client_id)
            return _json(
                200,
                {
                    "token_type": "Bearer",
                    "expires_in": 3599,
                    "ext_expires_in": 3599,
                    "access_token": token,
                },
            )

    @property
    def authority_token_endpoint(self) -> str:
        """The token endpoint of the fake's authority (the audience of client assertions)."""
        return f"https://login.microsoftonline.com/{self.tenant}/oauth2/v2.0/token"

    def openid_configuration(self, authority: str) -> GraphResponse:
        """The OpenID discovery document MSAL reads for ``authority``."""
        return _json(
            200,
            {
                "token_endpoint": f"{authority}/oauth2/v2.0/token",
                "authorization_endpoint": f"{authority}/oauth2/v2.0/authorize",
                "issuer": f"{authority}/v2.0",
                "device_authorization_endpoint": f"{authority}/oauth2/v2.0/devicecode",
            },
        )

    # -- dispatch -----------------------------------------------------------------------------

    def handle(self, request: GraphRequest) -> GraphResponse:
        """Answer one Graph request, with faults applied, and record it."""
        parts = urlsplit(request.url)
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self._lock:
            fault = self._fault(request.method, parts.path)
            if LargeMessages.is_upload(parts.path) and (fault is None or fault.after):
                response = self._upload(
                    request.method, parts.path, parts.query, headers, request.body
                )
                if fault is not None:
                    response = GraphResponse(
                        status=fault.status,
                        headers=dict(fault.headers),
                        body=fault.body,
                        delay=fault.delay,
                    )
            elif parts.path.endswith("/$batch") and request.method == "POST" and fault is None:
                response = self._batch(request, parts.path, headers)
            elif fault is not None and not fault.after:
                response = GraphResponse(
                    status=fault.status,
                    headers=dict(fault.headers),
                    body=fault.body,
                    delay=fault.delay,
                )
            else:
                try:
                    response = self._dispatch(request, parts.path, parts.query, headers)
                except _Answer as answer:
                    response = answer.response
                if fault is not None:
                    response = GraphResponse(
                        status=fault.status,
                        headers=dict(fault.headers),
                        body=fault.body,
                        delay=fault.delay,
                    )
            if self.latency and not self._batching:
                response = attrs.evolve(response, delay=response.delay + self.latency)
            at = time.monotonic()
            self.requests.append(
                RequestRecord(
                    at=at,
                    answered=at + response.delay,
                    method=request.method,
                    host=parts.netloc,
                    path=unquote(parts.path),
                    query=parts.query,
                    authorized="authorization" in headers,
                    prefer=headers.get("prefer"),
                    status=response.status,
                )
            )
            return response

    def _batch(self, request: GraphRequest, path: str, headers: Mapping[str, str]) -> GraphResponse:
        try:
            self._authorize(headers, [])
        except _Answer as answer:
            return answer.response
        parts = urlsplit(request.url)
        root = f"{parts.scheme}://{parts.netloc}{path.removesuffix('/$batch')}"
        # The batch is held back as a whole, not each of its requests.
        self._batching += 1
        try:
            return run_batch(request.body, request.headers, root, self.handle)
        finally:
            self._batching -= 1

    def peak_in_flight(self, address: str) -> int:
        """The most requests to ``address``'s mailbox that were in flight at once, from the
        request record."""
        with self._lock:
            marker = f"/users/{address.lower()}/"
            events = sorted(
                (moment, step)
                for r in self.requests
                if marker in r.path.lower()
                for moment, step in ((r.at, 1), (r.answered, -1))
            )
        peak = current = 0
        for _, step in events:
            current += step
            peak = max(peak, current)
        return peak

    def _fault(self, method: str, path: str) -> GraphFault | None:
        for n, fault in enumerate(self._faults):
            if fault.method not in (None, method) or not re.search(fault.path, unquote(path)):
                continue
            if fault.times <= 1:
                del self._faults[n]
            else:
                self._faults[n] = attrs.evolve(fault, times=fault.times - 1)
            return fault
        return None

    def _dispatch(
        self, request: GraphRequest, path: str, query: str, headers: Mapping[str, str]
    ) -> GraphResponse:
        segments = [unquote(s) for s in path.strip("/").split("/")]
        if len(segments) < 2 or segments[0] not in ("v1.0", "beta"):
            return _error(404, "NotFound", "unknown path")
        if segments[1] == "subscriptions":
            self._authorize(headers, segments[:2])  # the path names no mailbox
            return self.subscriptions.handle(request.method, segments[2:], headers, request.body)
        self._authorize(headers, segments)
        if segments[1] != "users" or len(segments) < 3:
            return _error(400, "BadRequest", "only /users/{id}/... is served")
        box = self._mailboxes.get(segments[2].lower())
        if box is None:
            return _error(
                404, "ErrorInvalidUser", f"The requested user '{segments[2]}' is invalid."
            )
        if box.on_premises:
            return _error(
                404,
                "MailboxNotEnabledForRESTAPI",
                "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
            )
        throttled = self._throttle(box)
        if throttled is not None:
            return throttled
        if len(request.body) > MAX_REQUEST_BYTES:
            return _error(413, "RequestEntityTooLarge", "The request is larger than 4 MB.")
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        base = self._base(request.url)
        rest = segments[3:]
        method = request.method
        body = request.body
        if rest[:1] == ["mailFolders"]:
            return self._folders(box, method, rest[1:], params, headers, base, body)
        if rest[:1] == ["messages"]:
            return self._messages(box, method, rest[1:], params, headers, body, base)
        if rest[:1] and rest[0] in ITEM_RESOURCES:
            status, value, extra = self.items.handle(
                box.address, method, rest, params, headers, base, body
            )
            if value is None:
                return GraphResponse(status=status, headers=extra)
            return _json(status, value, **extra)
        return _error(400, "BadRequest", "unsupported resource")

    def _throttle(self, box: _Mailbox) -> GraphResponse | None:
        if self._budget is None:
            return None
        count, per = self._budget
        now = time.monotonic()
        spent = [t for t in self._spent.get(box.address, []) if t > now - per]
        if len(spent) >= count:
            self._spent[box.address] = spent
            wait = max(1, math.ceil(spent[0] + per - now))
            return _error(
                429,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
                **{"Retry-After": str(wait)},
            )
        self._spent[box.address] = [*spent, now]
        return None

    def _base(self, url: str) -> str:
        parts = urlsplit(url)
        host = self._link_host or parts.netloc
        return f"{parts.scheme}://{host}/{parts.path.strip('/').split('/')[0]}"

    def _authorize(self, headers: Mapping[str, str], segments: list[str]) -> None:
        value = headers.get("authorization", "")
        token = value[7:] if value.lower().startswith("bearer ") else ""
        grant = self._grants.get(token)
        if grant is None or grant.expires < time.monotonic():
            raise _Answer(
                _error(
                    401,
                    "InvalidAuthenticationToken",
                    "Access token has expired or is not yet valid.",
                )
            )
        if grant.client_id is not None and not self._apps[grant.client_id].consented:
            raise _Answer(
                _error(
                    403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
                )
            )
        if grant.user is not None and len(segments) > 2 and segments[2].lower() != grant.user:
            raise _Answer(_error(403, "ErrorAccessDenied", "Access is denied."))

    # -- folders ------------------------------------------------------------------------------

    def _resolve(self, box: _Mailbox, name: str) -> str:
        folder_id = box.well_known.get(name.lower(), name)
        if folder_id not in box.folders:
            raise _Answer(_error(404, "ErrorItemNotFound", "The specified object was not found."))
        return folder_id

    def _folder_json(self, box: _Mailbox, folder: _Folder) -> dict[str, Any]:
        children = sum(1 for f in box.folders.values() if f.parent_id == folder.id)
        return {
            "id": folder.id,
            "displayName": folder.name,
            "parentFolderId": folder.parent_id,
            "childFolderCount": children,
        }

    def _folders(
        self,
        box: _Mailbox,
        method: str,
        rest: list[str],
        params: Mapping[str, str],
        headers: Mapping[str, str],
        base: str,
        body: bytes,
    ) -> GraphResponse:
        if not rest:
            root = box.well_known["msgfolderroot"]
            return self._children(box, root, params)
        if rest == ["delta"] and method == "GET":
            size_match = _MAX_PAGE.search(headers.get("prefer", ""))
            status, page = self._folder_deltas.page(
                box.address,
                {
                    f.id: self._folder_json(box, f)
                    for f in box.folders.values()
                    if f.id != box.well_known["msgfolderroot"]
                },
                params,
                int(size_match.group(1)) if size_match else None,
                f"{base}/users/{quote(box.address, safe='@')}/mailFolders/delta",
            )
            return _json(status, page)
        folder_id = self._resolve(box, rest[0])
        if len(rest) == 1 and method == "GET":
            return _json(200, self._folder_json(box, box.folders[folder_id]))
        if rest[1:] == ["childFolders"] and method == "GET":
            return self._children(box, folder_id, params)
        if rest[1:] == ["childFolders"] and method == "POST":
            name = str(json.loads(body or b"{}").get("displayName") or "")
            if any(f.parent_id == folder_id and f.name == name for f in box.folders.values()):
                return _error(
                    409, "ErrorFolderExists", "A folder with the specified name already exists."
                )
            new = _Folder(id=self._new_id("folder"), name=name, parent_id=folder_id)
            box.folders[new.id] = new
            return _json(201, self._folder_json(box, new))
        if rest[1:] == ["messages", "delta"] and method == "GET":
            return self._delta(box, folder_id, params, headers, base)
        if rest[1:] == ["messages"] and method == "GET":
            return self._list_messages(box, folder_id, params)
        return _error(405, "ErrorInvalidRequest", "unsupported folder request")

    def _children(self, box: _Mailbox, parent_id: str, params: Mapping[str, str]) -> GraphResponse:
        found = [f for f in box.folders.values() if f.parent_id == parent_id]
        condition = params.get("$filter")
        if condition:
            match = _EQ_FILTER.match(condition)
            if match is None or match.group(1) != "displayName":
                return _error(400, "ErrorInvalidUrlQueryFilter", "unsupported filter")
            name = match.group(2).replace("''", "'")
            found = [f for f in found if f.name == name]
        return _json(200, {"value": [self._folder_json(box, f) for f in found]})

    def _list_messages(
        self, box: _Mailbox, folder_id: str, params: Mapping[str, str]
    ) -> GraphResponse:
        found = [m for m in box.messages.values() if m.folder_id == folder_id]
        condition = params.get("$filter", "")
        if condition:
            prop = _PROP_FILTER.match(condition)
            equal = _EQ_FILTER.match(condition)
            if prop is not None:
                prop_id = prop.group(1).replace("''", "'")
                value = prop.group(2).replace("''", "'").lower()
                found = [
                    m
                    for m in found
                    if any(
                        k.lower() == prop_id.lower() and v.lower() == value
                        for k, v in m.extended.items()
                    )
                ]
            elif equal is not None and equal.group(1) == "internetMessageId":
                wanted = equal.group(2).replace("''", "'")
                found = [m for m in found if m.internet_message_id == wanted]
            else:
                return _error(400, "ErrorInvalidUrlQueryFilter", "unsupported filter")
        top = int(params.get("$top", "10"))
        select = params.get("$select", "")
        return _json(200, {"value": [self._row(box, m, select) for m in found[:top]]})

    # -- delta --------------------------------------------------------------------------------

    def _delta(
        self,
        box: _Mailbox,
        folder_id: str,
        params: Mapping[str, str],
        headers: Mapping[str, str],
        base: str,
    ) -> GraphResponse:
        size_match = _MAX_PAGE.search(headers.get("prefer", ""))
        size = int(size_match.group(1)) if size_match else _DEFAULT_PAGE
        if "$skiptoken" in params or "$deltatoken" in params:
            token = params.get("$skiptoken") or params.get("$deltatoken") or ""
            known = self._rounds.get(token)
            if known is None or known.folder_id != folder_id:
                return _error(
                    410,
                    "SyncStateNotFound",
                    "The sync state generation is not found; generation=1;[highest=2][2].",
                )
            if "$deltatoken" in params:
                ids, removed = self._changes(box, known)
                current = _Round(
                    address=box.address,
                    folder_id=folder_id,
                    select=known.select,
                    change_type=known.change_type,
                    ids=ids,
                    removed=removed,
                    position=len(box.log),
                )
            else:
                current = known
        else:
            change_type = params.get("changeType", "")
            ids = sorted(
                (m.id for m in box.messages.values() if m.folder_id == folder_id),
                key=lambda i: box.messages[i].received,
            )
            current = _Round(
                address=box.address,
                folder_id=folder_id,
                select=params.get("$select", ""),
                change_type=change_type,
                ids=ids,
                position=len(box.log),
            )
        everything = [*current.ids, *("-" + r for r in current.removed)]
        page = everything[current.offset : current.offset + size]
        rows: list[dict[str, Any]] = []
        for entry in page:
            if entry.startswith("-"):
                rows.append({"id": entry[1:], "@removed": {"reason": "deleted"}})
            elif entry in box.messages:
                rows.append(self._row(box, box.messages[entry], current.select))
        path = f"{base}/users/{quote(box.address, safe='@')}/mailFolders/{folder_id}/messages/delta"
        token = secrets.token_urlsafe(18)
        if current.offset + size < len(everything):
            self._rounds[token] = attrs.evolve(current, offset=current.offset + size)
            link = {"@odata.nextLink": f"{path}?$skiptoken={token}"}
        else:
            self._rounds[token] = attrs.evolve(current, ids=[], removed=[], offset=0)
            link = {"@odata.deltaLink": f"{path}?$deltatoken={token}"}
        return _json(
            200, {"@odata.context": f"{base}/$metadata#Collection(message)", "value": rows, **link}
        )

    def _changes(self, box: _Mailbox, since: _Round) -> tuple[list[str], list[str]]:
        created: dict[str, None] = {}
        updated: dict[str, None] = {}
        removed: dict[str, None] = {}
        for folder_id, kind, message_id in box.log[since.position :]:
            if folder_id != since.folder_id:
                continue
            if kind == "created":
                created[message_id] = None
                removed.pop(message_id, None)
            elif kind == "updated" and message_id not in created:
                updated[message_id] = None
            elif kind == "deleted":
                created.pop(message_id, None)
                updated.pop(message_id, None)
                removed[message_id] = None
        wanted = since.change_type
        ids: list[str] = []
        if wanted in ("", "created"):
            ids += [i for i in created if i in box.messages]
        if wanted in ("", "updated"):
            ids += [i for i in updated if i in box.messages]
        gone = list(removed) if wanted in ("", "deleted") else []
        return ids, gone

    # -- messages -----------------------------------------------------------------------------

    def _row(self, box: _Mailbox, m: FakeMessage, select: str) -> dict[str, Any]:
        parsed = m.parsed()
        sent = parsed.get("date")
        try:
            sent_at = parsedate_to_datetime(str(sent)) if sent else m.received
        except (TypeError, ValueError):
            sent_at = m.received
        index = parsed.get("thread-index")
        full: dict[str, Any] = {
            "id": m.id,
            "@odata.etag": f'W/"CQAAABYAAAA{m.change}"',
            "changeKey": f"CQAAABYAAAA{m.change}",
            "internetMessageId": m.internet_message_id,
            "conversationId": "AAQk"
            + base64.urlsafe_b64encode((m.internet_message_id or m.id).encode()).decode()[:24],
            "conversationIndex": str(index) if index else None,
            "subject": str(parsed.get("subject") or ""),
            "from": next(iter(_recipients(parsed, "from")), None),
            "sender": next(
                iter(_recipients(parsed, "sender") or _recipients(parsed, "from")), None
            ),
            "toRecipients": _recipients(parsed, "to"),
            "ccRecipients": _recipients(parsed, "cc"),
            "bccRecipients": _recipients(parsed, "bcc") + [_recipient(b) for b in m.bcc],
            "replyTo": _recipients(parsed, "reply-to"),
            "receivedDateTime": _iso(m.received),
            "sentDateTime": _iso(sent_at if sent_at.tzinfo else sent_at.replace(tzinfo=UTC)),
            "isDraft": m.is_draft,
            "parentFolderId": m.folder_id,
            "categories": list(m.categories),
        }
        if m.transported:
            full["internetMessageHeaders"] = [
                {"name": name, "value": str(value)} for name, value in parsed.items()
            ]
        if not select:
            full.pop("internetMessageHeaders", None)  # only under $select
            return full
        wanted = {s.strip() for s in select.split(",")} | {"id"}
        return {k: v for k, v in full.items() if k in wanted or k.startswith("@odata")}

    def _mapi(self, m: FakeMessage, ids: Iterable[str]) -> list[dict[str, str]]:
        parsed = m.parsed()
        known = {
            "string 0x1035": parsed.get("message-id"),
            "string 0x1039": parsed.get("references"),
            "string 0x1042": parsed.get("in-reply-to"),
        }
        out = []
        for prop in ids:
            value = known.get(prop.lower()) or next(
                (v for k, v in m.extended.items() if k.lower() == prop.lower()), None
            )
            if value:
                out.append({"id": prop, "value": " ".join(str(value).split())})
        return out

    def _message(self, box: _Mailbox, message_id: str) -> FakeMessage:
        m = box.messages.get(message_id)
        if m is None:
            raise _Answer(
                _error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            )
        return m

    def _messages(
        self,
        box: _Mailbox,
        method: str,
        rest: list[str],
        params: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
        base: str,
    ) -> GraphResponse:
        if not rest and method == "POST":
            return self._create(box, headers, body)
        if not rest:
            return _error(405, "ErrorInvalidRequest", "unsupported")
        m = self._message(box, rest[0])
        action = rest[1:]
        if not action and method == "GET":
            row = self._row(box, m, params.get("$select", ""))
            expand = params.get("$expand", "")
            if expand.startswith("singleValueExtendedProperties"):
                row["singleValueExtendedProperties"] = self._mapi(m, _EXPAND_IDS.findall(expand))
            return _json(200, row)
        if not action and method == "PATCH":
            return self._patch(box, m, body)
        if action == ["$value"] and method == "GET":
            return GraphResponse(status=200, headers={"Content-Type": "text/plain"}, body=m.mime)
        if action == ["send"] and method == "POST":
            return self._send(box, m)
        if not action and method == "DELETE":
            self._move(box, m, box.well_known["deleteditems"])
            self._large.drafts.pop(m.id, None)
            return GraphResponse(status=204)
        if action[:1] == ["attachments"] and method == "POST":
            return self._attach(box, m, action[1:], body, base)
        if action == ["move"] and method == "POST":
            target = str(json.loads(body or b"{}").get("destinationId") or "")
            self._move(box, m, self._resolve(box, target))
            return _json(201, self._row(box, m, ""))
        return _error(405, "ErrorInvalidRequest", "unsupported message request")

    def _create(self, box: _Mailbox, headers: Mapping[str, str], body: bytes) -> GraphResponse:
        if headers.get("content-type", "").startswith("application/json"):
            return self._create_json(box, body)
        if not headers.get("content-type", "").startswith("text/plain"):
            return _error(400, "ErrorInvalidRequest", "a draft is JSON or base64 MIME")
        try:
            mime = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return _error(
                400,
                "ErrorMimeContentInvalidBase64String",
                "Invalid base64 string for MIME content.",
            )
        drafts = box.well_known["drafts"]
        m = FakeMessage(
            id=self._new_id("msg"),
            folder_id=drafts,
            mime=mime,
            received=self._now(),
            is_draft=True,
            transported=False,
        )
        m.internet_message_id = _message_id(m.parsed())
        box.messages[m.id] = m
        box.log.append((drafts, "created", m.id))
        return _json(201, self._row(box, m, ""))

    def _create_json(self, box: _Mailbox, body: bytes) -> GraphResponse:
        state = self._large.draft(box.address, body)
        if isinstance(state, str):
            return _error(400, "ErrorInvalidRequest", state)
        drafts = box.well_known["drafts"]
        m = FakeMessage(
            id=self._new_id("msg"),
            folder_id=drafts,
            mime=b"",
            received=self._now(),
            is_draft=True,
            transported=False,
        )
        for prop in state.message.get("singleValueExtendedProperties") or ():
            m.extended[str(prop["id"])] = str(prop["value"])
        m.bcc = [
            str(r["emailAddress"]["address"]) for r in state.message.get("bccRecipients") or ()
        ]
        self._large.drafts[m.id] = state
        self._rewrite(m)
        box.messages[m.id] = m
        box.log.append((drafts, "created", m.id))
        return _json(201, self._row(box, m, ""))

    def _rewrite(self, m: FakeMessage) -> None:
        """A JSON draft's MIME again, after its properties or attachments changed."""
        state = self._large.drafts.get(m.id)
        if state is not None:
            m.mime = draft_mime(state, now=self._now())
            m.internet_message_id = _message_id(m.parsed())

    def _attach(
        self, box: _Mailbox, m: FakeMessage, rest: list[str], body: bytes, base: str
    ) -> GraphResponse:
        state = self._large.drafts.get(m.id)
        if not m.is_draft or state is None:
            return _error(400, "ErrorInvalidRequest", "attachments are added to JSON drafts")
        if not rest:
            attachment = self._large.attachment(body)
            if isinstance(attachment, str):
                return _error(400, "ErrorInvalidRequest", attachment)
            state.attachments.append(attachment)
            self._rewrite(m)
            return _json(201, {"id": attachment.id, "name": attachment.name})
        if rest == ["createUploadSession"]:
            session = self._large.open_session(box.address, m.id, body)
            if isinstance(session, str):
                return _error(400, "ErrorInvalidRequest", session)
            return _json(
                201,
                {
                    "uploadUrl": self._large.upload_url(session, base),
                    "expirationDateTime": _iso(self._now() + self._large.session_lifetime),
                    "nextExpectedRanges": session.next_expected(),
                },
            )
        return _error(405, "ErrorInvalidRequest", "unsupported attachment request")

    def _upload(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> GraphResponse:
        if method != "PUT":
            return _error(405, "ErrorInvalidRequest", "upload ranges are PUT")
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        answer, done = self._large.put(path, params, headers, body)
        extra: dict[str, str] = {}
        if done is not None:
            box = self._mailboxes.get(done.address.lower())
            m = box.messages.get(done.message_id) if box else None
            state = self._large.drafts.get(done.message_id)
            if m is None or state is None or not m.is_draft:
                return _error(404, "ErrorItemNotFound", "The draft is gone.")
            attachment = FakeAttachment(
                id=self._new_id("att"),
                name=done.name,
                content_type=done.content_type,
                data=bytes(done.received),
                is_inline=done.is_inline,
                content_id=done.content_id,
            )
            state.attachments.append(attachment)
            self._rewrite(m)
            extra["Location"] = (
                f"https://graph.microsoft.com/v1.0/users('{done.address}')"
                f"/messages('{m.id}')/attachments('{attachment.id}')"
            )
        if answer["json"] is None:
            return GraphResponse(status=answer["status"], headers=extra)
        return _json(answer["status"], answer["json"], **extra)

    def _patch(self, box: _Mailbox, m: FakeMessage, body: bytes) -> GraphResponse:
        changes = json.loads(body or b"{}")
        if "categories" in changes:
            m.categories = [str(c) for c in changes["categories"]]
        for prop in changes.get("singleValueExtendedProperties") or ():
            m.extended[str(prop["id"])] = str(prop["value"])
        if "bccRecipients" in changes:
            if not m.is_draft:
                return _error(400, "ErrorInvalidPropertyUpdateSentMessage", "sent message")
            m.bcc = [str(r["emailAddress"]["address"]) for r in changes["bccRecipients"]]
        if "internetMessageId" in changes:
            if not m.is_draft:
                return _error(400, "ErrorInvalidPropertyUpdateSentMessage", "sent message")
            m.internet_message_id = str(changes["internetMessageId"])
            if m.id in self._large.drafts:
                self._large.drafts[m.id].message["internetMessageId"] = m.internet_message_id
        m.change += 1
        box.log.append((m.folder_id, "updated", m.id))
        return _json(200, self._row(box, m, ""))

    def _send(self, box: _Mailbox, m: FakeMessage) -> GraphResponse:
        if not m.is_draft:
            return _error(400, "ErrorInvalidRequest", "The item has already been sent.")
        parsed = m.parsed()
        values = [str(v) for name in ("to", "cc", "bcc") for v in parsed.get_all(name) or ()]
        recipients = [a for _, a in getaddresses(values) if a] + list(m.bcc)
        if not recipients:
            return _error(400, "ErrorInvalidRecipients", "At least one recipient is not valid.")
        self.sent.append(
            SentMail(
                mailbox=box.address,
                recipients=tuple(dict.fromkeys(recipients)),
                mime=m.mime,
                message_id=m.internet_message_id,
            )
        )
        m.is_draft = False
        target = box.well_known["outbox" if self.hold_in_outbox else "sentitems"]
        self._move(box, m, target)
        for address in dict.fromkeys(r.lower() for r in recipients):
            other = self._mailboxes.get(address)
            if other is not None and other is not box:
                self.deliver(other.address, _without_bcc(m.mime))
        return GraphResponse(status=202)

    def _move(self, box: _Mailbox, m: FakeMessage, target: str) -> None:
        if m.folder_id == target:
            return
        box.log.append((m.folder_id, "deleted", m.id))
        m.folder_id = target
        m.change += 1
        box.log.append((target, "created", m.id))


class _Answer(Exception):
    def __init__(self, response: GraphResponse) -> None:
        super().__init__(response.status)
        self.response = response


def _authenticated(app: _App, form: Mapping[str, str], audience: str) -> bool:
    """The client secret matches, or the client assertion is signed by the app's
    certificate (with its SHA-256 thumbprint) for this token endpoint."""
    if app.secret is not None and form.get("client_secret") is not None:
        return secrets.compare_digest(form["client_secret"], app.secret)
    assertion = form.get("client_assertion")
    if app.certificate is None or not assertion:
        return False
    import jwt
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    certificate = x509.load_pem_x509_certificate(app.certificate.encode())
    thumbprint = base64.urlsafe_b64encode(certificate.fingerprint(hashes.SHA256()))
    try:
        header = jwt.get_unverified_header(assertion)
        claims = jwt.decode(
            assertion,
            certificate.public_key(),  # type: ignore[arg-type]
            algorithms=["PS256", "RS256"],
            audience=audience,
        )
    except jwt.PyJWTError:
        return False
    return bool(
        str(header.get("x5t#S256", "")).rstrip("=") == thumbprint.decode().rstrip("=")
        and claims.get("iss") == claims.get("sub")
    )


def _message_id(message: EmailMessage) -> str | None:
    value = message.get("message-id")
    return " ".join(str(value).split()) if value else None


def _without_bcc(mime: bytes) -> bytes:
    head, sep, rest = mime.partition(b"\r\n\r\n")
    if not sep:
        return mime
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"bcc:")]
    return b"\r\n".join(lines) + sep + rest


def format_http_date(moment: datetime) -> str:
    """``moment`` as an HTTP date, for ``Retry-After``."""
    return format_datetime(moment.astimezone(UTC), usegmt=True)
