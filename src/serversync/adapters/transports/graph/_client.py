"""A thin async Microsoft Graph client on httpx: one mailbox, one base URL, one token.

What it guarantees, whoever calls it:

- the bearer token goes only to the configured Graph origin (scheme, host and port): a
  ``nextLink`` or ``deltaLink`` elsewhere is refused, and redirects are never followed;
- every request has a deadline, and errors become :mod:`serversync.errors` types whose
  messages never hold the token or a URL's query (delta and skip tokens);
- a 401 is retried once with a fresh token (the request was refused before Graph did
  anything, so even a POST is safe to repeat);
- a request marked idempotent that is throttled (429, 503) with a short ``Retry-After`` is
  repeated after that wait; every other failure, and every POST that may have done
  something, goes back to the caller.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any, Final
from urllib.parse import urlsplit

import attrs
import httpx

from serversync.adapters.transports.graph._errors import error_from_response
from serversync.adapters.transports.graph._stats import GraphStats
from serversync.errors import (
    ConfigurationError,
    ConnectionFailedError,
    OperationTimeoutError,
    ServerBusyError,
    SyncError,
)

__all__ = ["GraphClient", "GraphOptions", "NotConnectedError", "TokenFunction", "origin", "redact"]

logger = logging.getLogger("serversync.adapters.transports.graph")

_IMMUTABLE_IDS: Final = 'IdType="ImmutableId"'
# Throttled idempotent requests are tried at most this many times in a row.
_MAX_THROTTLED_TRIES: Final = 3


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
    place; a longer one is raised as :class:`ServerBusyError` so that the engine postpones
    the mailbox instead.
    """

    base_url: str
    max_inline_wait: timedelta = timedelta(seconds=5)
    page_size: int = 100


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
    ) -> None:
        self._http = http
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
        prefer: tuple[str, ...] = (_IMMUTABLE_IDS,),
        idempotent: bool,
        item: bool = False,
        if_match: str | None = None,
    ) -> httpx.Response:
        """One request, answered with a 2xx response or raised as a serversync error."""
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
            if (
                idempotent
                and isinstance(error, ServerBusyError)
                and response.status_code in (429, 503)
                and error.retry_after is not None
                and error.retry_after <= self._options.max_inline_wait
                and throttled < _MAX_THROTTLED_TRIES - 1
            ):
                throttled += 1
                self.stats._count("waited")
                logger.info(
                    "mailbox %s: %s throttled (HTTP %s); waiting %.1f s as Graph asks",
                    self.mailbox_id,
                    what,
                    response.status_code,
                    error.retry_after.total_seconds(),
                )
                await asyncio.sleep(error.retry_after.total_seconds())
                continue
            raise error

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
    ) -> httpx.Response:
        seconds = deadline.total_seconds()
        try:
            async with asyncio.timeout(seconds):
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
