"""A thin async Microsoft Graph client on httpx: one mailbox, one base URL, one token.

What it guarantees, whoever calls it:

- the bearer token goes only to the configured Graph origin (scheme, host and port): a
  ``nextLink`` or ``deltaLink`` elsewhere is refused, and redirects are never followed;
- every request has a deadline, and errors become :mod:`serversync.errors` types whose
  messages never hold the token or a URL's query (delta and skip tokens);
- a 401 is retried once with a fresh token (the request was refused before Graph did
  anything, so even a POST is safe to repeat);
- a request marked idempotent that is throttled (429, 503) with a short ``Retry-After`` is
  repeated after that wait, and one without ``Retry-After`` (an HTML 503 from a gateway)
  after an exponential, jittered, capped backoff; every other failure, and every POST that
  may have done something, goes back to the caller;
- at most the mailbox's concurrency (4) of its requests are in flight at once, over every
  session of the mailbox, and its request budget (10,000 per 10 minutes) is never
  overspent: a request waits for a slot within its deadline, and for budget only as long
  as ``max_inline_wait`` (a longer wait is raised as :class:`ServerBusyError`);
- upload-session ranges go only to the Graph origin or ``https://outlook.office.com``, and
  without the bearer token (the upload URL is pre-authenticated).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Final
from urllib.parse import urlsplit

import attrs
import httpx

from serversync.adapters.transports.graph._batch import (
    BatchAnswer,
    BatchItem,
    batch_body,
    chunks,
    read_batch,
)
from serversync.adapters.transports.graph._errors import error_from_response
from serversync.adapters.transports.graph._limits import (
    DEFAULT_CONCURRENCY,
    DEFAULT_REQUEST_BUDGET,
    MailboxGate,
    backoff_delay,
)
from serversync.adapters.transports.graph._stats import GraphStats
from serversync.errors import (
    ConfigurationError,
    ConnectionFailedError,
    OperationTimeoutError,
    ServerBusyError,
    SyncError,
    TransientError,
)

__all__ = [
    "IMMUTABLE_IDS",
    "GraphClient",
    "GraphOptions",
    "NotConnectedError",
    "TokenFunction",
    "origin",
    "redact",
]

logger = logging.getLogger("serversync.adapters.transports.graph")

IMMUTABLE_IDS: Final = 'IdType="ImmutableId"'
# Throttled idempotent requests are tried at most this many times in a row.
_MAX_THROTTLED_TRIES: Final = 3
# Upload sessions are served by Outlook's own host as well as by Graph's.
_UPLOAD_HOSTS: Final = frozenset({("https", "outlook.office.com", 443)})


def origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port of ``url``, compared without case."""
    parts = urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def redact(url: str) -> str:
    """``url`` without its query (delta and skip tokens), for messages and logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?…" if parts.query else "")


@attrs.frozen(kw_only=True)
class GraphOptions:
    """How the client talks to Graph.

    ``max_inline_wait`` is the longest ``Retry-After`` an idempotent request waits out in
    place (and the cap of the backoff when Graph gives none); a longer one is raised as
    :class:`ServerBusyError` so that the engine postpones the mailbox instead.
    ``backoff_base`` is the first backoff step.
    """

    base_url: str
    max_inline_wait: timedelta = timedelta(seconds=5)
    page_size: int = 100
    backoff_base: timedelta = timedelta(seconds=1)


TokenFunction = Callable[[bool], Awaitable[str]]
"""Returns an access token; ``True`` asks for a new one (the last was refused)."""


class GraphClient:
    """Requests to one Graph base URL for one mailbox."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        options: GraphOptions,
        token: TokenFunction,
        mailbox_id: str,
        stats: GraphStats | None = None,
        gate: MailboxGate | None = None,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        self._http = http
        self._gate = gate or MailboxGate(DEFAULT_CONCURRENCY, DEFAULT_REQUEST_BUDGET)
        self._random = random_source
        self.stats = stats if stats is not None else GraphStats()
        self._options = options
        self._base = options.base_url.rstrip("/")
        self._origin = origin(self._base)
        self._token = token
        self._current: str | None = None
        self.mailbox_id = mailbox_id

    @property
    def options(self) -> GraphOptions:
        """The client's options."""
        return self._options

    def url(self, path_or_url: str) -> str:
        """An absolute URL for a path under the base URL, or a link Graph gave, checked to
        point at the Graph origin."""
        if "://" not in path_or_url:
            return self._base + "/" + path_or_url.lstrip("/")
        if origin(path_or_url) != self._origin:
            raise ConfigurationError(
                f"Graph gave a link to another host ({redact(path_or_url)}); serversync sends "
                "its token only to the configured Graph host and does not follow it",
                mailbox_id=self.mailbox_id,
            )
        return path_or_url

    async def request(
        self,
        method: str,
        path_or_url: str,
        *,
        what: str,
        deadline: timedelta,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | None = None,
        content_type: str | None = None,
        prefer: tuple[str, ...] = (IMMUTABLE_IDS,),
        idempotent: bool,
        item: bool = False,
        cost: int = 1,
        if_match: str | None = None,
    ) -> httpx.Response:
        """One request, answered with a 2xx response or raised as a serversync error.
        ``cost`` is how many requests Graph counts it as (a batch's items)."""
        url = self.url(path_or_url)
        refreshed = False
        throttled = 0
        while True:
            if self._current is None:
                self._current = await self._token(False)
            headers = {"Authorization": f"Bearer {self._current}", "Accept": "application/json"}
            if prefer:
                headers["Prefer"] = ", ".join(prefer)
            if content_type is not None:
                headers["Content-Type"] = content_type
            await self._spend_budget(what, cost)
            if if_match is not None:
                headers["If-Match"] = if_match
            self.stats.requests[method] += 1
            response = await self._send(
                method,
                url,
                headers=headers,
                params=params,
                json=json,
                content=content,
                what=what,
                deadline=deadline,
                slots=cost,
            )
            if response.is_success:
                return response
            if response.status_code == 401 and not refreshed:
                # Expired or revoked: one fresh token decides which.
                refreshed = True
                self._current = await self._token(True)
                continue
            if response.status_code in (429, 503):
                self.stats._count("throttled")
            error = error_from_response(
                response.status_code,
                response.headers,
                response.content,
                what=what,
                mailbox_id=self.mailbox_id,
                item=item,
            )
            wait = self._throttled_wait(error, response.status_code, throttled, idempotent)
            if wait is None:
                raise error
            throttled += 1
            self.stats._count("waited")
            logger.info(
                "mailbox %s: %s throttled (HTTP %s); waiting %.1f s%s",
                self.mailbox_id,
                what,
                response.status_code,
                wait.total_seconds(),
                " (backoff)" if getattr(error, "retry_after", None) is None else " as Graph asks",
            )
            await asyncio.sleep(wait.total_seconds())

    def _throttled_wait(
        self, error: SyncError, status: int, throttled: int, idempotent: bool
    ) -> timedelta | None:
        """How long to wait before repeating a throttled request in place; ``None`` when it
        goes back to the caller (not safe to repeat, tried enough, or a long wait)."""
        if (
            not idempotent
            or not isinstance(error, ServerBusyError)
            or status not in (429, 503)
            or throttled >= _MAX_THROTTLED_TRIES - 1
        ):
            return None
        if error.retry_after is None:
            # An HTML 503 from a gateway says nothing: back off, capped, with jitter.
            return backoff_delay(
                throttled,
                base=self._options.backoff_base,
                cap=self._options.max_inline_wait,
                random=self._random,
            )
        return error.retry_after if error.retry_after <= self._options.max_inline_wait else None

    async def batch(
        self,
        items: Sequence[BatchItem],
        *,
        what: str,
        deadline: timedelta,
        item: bool = True,
    ) -> dict[str, BatchAnswer | SyncError]:
        """``items`` through ``POST /$batch``, 20 at a time, each answer mapped like a
        single request's: a :class:`BatchAnswer` for a success, else its serversync error.
        Items may only be reads and idempotent writes: throttled ones (429, 503) are sent
        again in a later batch after ``Retry-After`` or a backoff, as single requests are."""
        results: dict[str, BatchAnswer | SyncError] = {}
        pending = list(items)
        tries = 0
        while pending:
            retry: list[BatchItem] = []
            waits: list[timedelta] = []
            for chunk in chunks(pending):
                response = await self.request(
                    "POST",
                    "$batch",
                    what=what,
                    deadline=deadline,
                    json=batch_body(chunk),
                    prefer=(),
                    idempotent=True,
                    cost=len(chunk),
                )
                self.stats._count("batches")
                answers = read_batch(response.json(), (i.id for i in chunk))
                for one in chunk:
                    answer = answers[one.id]
                    if 200 <= answer.status < 300:
                        results[one.id] = answer
                        continue
                    error = error_from_response(
                        answer.status,
                        answer.headers,
                        answer.content,
                        what=f"{what} ({one.method} {one.url.split('?')[0]})",
                        mailbox_id=self.mailbox_id,
                        item=item,
                    )
                    if answer.status in (429, 503):
                        self.stats._count("throttled")
                    wait = self._throttled_wait(error, answer.status, tries, True)
                    if wait is None:
                        results[one.id] = error
                    else:
                        retry.append(one)
                        waits.append(wait)
            if retry:
                tries += 1
                self.stats._count("waited")
                await asyncio.sleep(max(waits).total_seconds())
            pending = retry
        return results

    async def _spend_budget(self, what: str, cost: int = 1) -> None:
        """Wait for the mailbox's request budget, as long as ``max_inline_wait`` at most."""
        while True:
            wait = self._gate.wait_for_budget()
            if wait <= 0:
                self._gate.spend(cost)
                return
            if wait > self._options.max_inline_wait.total_seconds():
                self.stats._count("throttled")
                raise ServerBusyError(
                    f"{what}: the mailbox's Graph request budget is spent; more in {wait:.0f} s",
                    retry_after=timedelta(seconds=wait),
                    mailbox_id=self.mailbox_id,
                )
            await asyncio.sleep(wait)

    def upload_url(self, url: str) -> str:
        """An upload session's ``uploadUrl``, checked to point at the Graph origin or at
        Outlook's host (over https)."""
        if origin(url) != self._origin and origin(url) not in _UPLOAD_HOSTS:
            raise ConfigurationError(
                f"Graph gave an upload URL on another host ({redact(url)}); serversync "
                "uploads only to the configured Graph host and https://outlook.office.com",
                mailbox_id=self.mailbox_id,
            )
        return url

    async def upload(
        self,
        url: str,
        chunk: bytes,
        *,
        first: int,
        total: int,
        what: str,
        deadline: timedelta,
    ) -> httpx.Response:
        """One byte range of an upload session: a ``PUT`` to the pre-authenticated
        ``uploadUrl`` with no ``Authorization`` header (Graph documents that sending one
        may fail the upload). Never repeated here: a failure goes back to the caller."""
        url = self.upload_url(url)
        last = first + len(chunk) - 1
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"bytes {first}-{last}/{total}",
        }
        await self._spend_budget(what)
        self.stats.requests["PUT"] += 1
        response = await self._send(
            "PUT",
            url,
            headers=headers,
            params=None,
            json=None,
            content=chunk,
            what=what,
            deadline=deadline,
        )
        if response.is_success:
            return response
        if response.status_code in (429, 503):
            self.stats._count("throttled")
        if response.status_code == 404:
            # The session expired or was dropped: a new attempt opens a new one.
            raise TransientError(
                f"{what}: the upload session is gone (HTTP 404, expired?)",
                mailbox_id=self.mailbox_id,
            )
        raise error_from_response(
            response.status_code,
            response.headers,
            response.content,
            what=what,
            mailbox_id=self.mailbox_id,
            item=True,
        )

    async def _send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        params: Mapping[str, str] | None,
        json: Any,
        content: bytes | None,
        what: str,
        deadline: timedelta,
        slots: int = 1,
    ) -> httpx.Response:
        seconds = deadline.total_seconds()
        try:
            # Waiting for one of the mailbox's slots counts against the deadline too.
            async with asyncio.timeout(seconds), self._gate.slot(slots):
                return await self._http.request(
                    method,
                    url,
                    headers=headers,
                    params=params,
                    json=json,
                    content=content,
                    timeout=httpx.Timeout(seconds),
                    follow_redirects=False,
                )
        except SyncError:
            raise
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise OperationTimeoutError(
                f"{what}: no answer from Microsoft Graph within {seconds:g} s",
                mailbox_id=self.mailbox_id,
            ) from exc
        except httpx.ConnectError as exc:
            if _tls_failure(exc):
                raise ConfigurationError(
                    f"{what}: the TLS connection to {redact(url)} failed "
                    f"({_tls_failure(exc)}): check the profile's ca_file and the Graph URL",
                    mailbox_id=self.mailbox_id,
                ) from exc
            raise NotConnectedError(
                f"{what}: cannot connect to {redact(url)}: {type(exc).__name__}",
                mailbox_id=self.mailbox_id,
            ) from exc
        except httpx.TransportError as exc:
            raise ConnectionFailedError(
                f"{what}: the connection to Microsoft Graph failed: {type(exc).__name__}",
                mailbox_id=self.mailbox_id,
            ) from exc


def _tls_failure(exc: BaseException) -> str | None:
    """The TLS error behind a failed connection (an untrusted certificate, a wrong host
    name), which no retry fixes."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message or "certificate verify failed"
        if isinstance(seen, ssl.SSLError):
            return type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return None


class NotConnectedError(ConnectionFailedError):
    """No connection was made: the request never reached Graph."""
