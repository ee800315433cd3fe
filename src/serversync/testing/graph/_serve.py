"""Serving the fake Graph: in process through an httpx transport, on a loopback port over
real HTTP, and to MSAL through its injectable HTTP client."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

from serversync.testing.graph._core import GraphRequest, GraphResponse, GraphState

__all__ = ["FakeEntraHttpClient", "LoopbackServer", "in_process_transport"]

_TOKEN_SUFFIX = "/oauth2/v2.0/token"
_OPENID_SUFFIX = "/v2.0/.well-known/openid-configuration"


def _entra(state: GraphState, method: str, url: str, body: bytes) -> GraphResponse | None:
    """The token endpoint and the OpenID discovery document, for any authority host."""
    parts = urlsplit(url)
    authority = f"{parts.scheme}://{parts.netloc}{parts.path.split('/v2.0/')[0]}"
    if parts.path.endswith(_TOKEN_SUFFIX) and method == "POST":
        return state.handle_token(dict(parse_qsl(body.decode("utf-8", "replace"))))
    if parts.path.endswith(_OPENID_SUFFIX) and method == "GET":
        return state.openid_configuration(authority.removesuffix(_OPENID_SUFFIX))
    if parts.path.endswith("/discovery/instance"):
        query = dict(parse_qsl(parts.query))
        endpoint = query.get("authorization_endpoint", "")
        tenant_authority = endpoint.removesuffix("/oauth2/v2.0/authorize")
        body_json = {
            "tenant_discovery_endpoint": f"{tenant_authority}{_OPENID_SUFFIX}",
            "api-version": "1.1",
            "metadata": [],
        }
        return GraphResponse(
            status=200,
            headers={"Content-Type": "application/json"},
            body=json.dumps(body_json).encode(),
        )
    return None


def _answer(
    state: GraphState, method: str, url: str, headers: Mapping[str, str], body: bytes
) -> GraphResponse:
    entra = _entra(state, method, url, body)
    if entra is not None:
        return entra
    return state.handle(GraphRequest(method=method, url=url, headers=headers, body=body))


def in_process_transport(state: GraphState) -> httpx.MockTransport:
    """An httpx transport that answers from ``state`` without sockets."""

    async def handler(request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        args = (state, request.method, str(request.url), dict(request.headers), body)
        if "/subscriptions" in request.url.path:
            # The validation handshake is a blocking POST to the host, which may be served
            # by this very event loop.
            response = await asyncio.to_thread(_answer, *args)
        else:
            response = _answer(*args)
        if response.delay:
            await asyncio.sleep(response.delay)
        return httpx.Response(
            response.status, headers=dict(response.headers), content=response.body
        )

    return httpx.MockTransport(handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return  # the fake keeps its own request record

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle's algorithm holds the
        # body until the client's delayed ACK (about 40 ms per request).
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_address[1]}"
        scheme = "https" if isinstance(self.request, ssl.SSLSocket) else "http"
        url = f"{scheme}://{host}{self.path}"
        headers = dict(self.headers.items())
        response = _answer(self.server.state, self.command, url, headers, body)
        if response.delay:
            time.sleep(response.delay)
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if response.body:
            self.wfile.write(response.body)

    do_GET = _serve
    do_POST = _serve
    do_PATCH = _serve
    do_PUT = _serve
    do_DELETE = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: GraphState) -> None:
        self.state = state
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        super().server_bind()


class LoopbackServer:
    """The fake on ``127.0.0.1`` and a free port, served from a thread; over TLS with
    ``tls`` (a server-side ``ssl.SSLContext``)."""

    def __init__(self, state: GraphState, *, tls: ssl.SSLContext | None = None) -> None:
        self._server = _Server(state)
        self.scheme = "http" if tls is None else "https"
        if tls is not None:
            # Handshakes happen in the handler threads, not in the accepting one.
            self._server.socket = tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-graph:{self.port}",
            daemon=True,
        )

    @property
    def port(self) -> int:
        """The port served."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Start answering."""
        self._thread.start()

    def stop(self) -> None:
        """Stop answering and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _MsalResponse:
    """What MSAL reads from a response (``requests``-like)."""

    def __init__(self, response: GraphResponse) -> None:
        self.status_code = response.status
        self.text = response.body.decode("utf-8", "replace")
        self.headers = dict(response.headers)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise OSError(f"HTTP {self.status_code}")


class FakeEntraHttpClient:
    """An HTTP client for MSAL (``http_client=``) that answers from the fake's token
    endpoint, so that MSAL's client-credentials flow runs offline (MSAL accepts only https
    authorities, such as ``https://login.microsoftonline.com/<tenant>``)."""

    def __init__(self, state: GraphState) -> None:
        self._state = state

    def _url(self, url: str, params: Any) -> str:
        if not params:
            return url
        return url + ("&" if "?" in url else "?") + urlencode(params)

    def post(
        self, url: str, params: Any = None, data: Any = None, headers: Any = None, **kwargs: Any
    ) -> _MsalResponse:
        """A POST, answered from the fake."""
        body = urlencode(data).encode() if isinstance(data, Mapping) else (data or b"")
        if isinstance(body, str):
            body = body.encode()
        return _MsalResponse(
            _answer(self._state, "POST", self._url(url, params), dict(headers or {}), body)
        )

    def get(
        self, url: str, params: Any = None, headers: Any = None, **kwargs: Any
    ) -> _MsalResponse:
        """A GET, answered from the fake."""
        return _MsalResponse(
            _answer(self._state, "GET", self._url(url, params), dict(headers or {}), b"")
        )

    def close(self) -> None:
        """Nothing to close."""
