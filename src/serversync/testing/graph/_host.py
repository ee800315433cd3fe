"""A minimal HTTP/1.1 server on loopback for an ASGI app (FastAPI, Starlette, a bare
callable), so that tests and examples can let the fake Graph POST its notifications to a
host's app without an ASGI server dependency.

It serves what a webhook needs and no more: requests with a ``Content-Length`` body (no
chunked uploads), keep-alive, one request at a time per connection, no lifespan events. Not
for production: mount the app in the host's own server there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, Final
from urllib.parse import unquote

__all__ = ["AsgiApp", "serve_asgi"]

AsgiApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]
"""An ASGI 3 application."""

_IDLE: Final = 30.0  # seconds a kept-alive connection may wait for its next request
_REQUEST: Final = 30.0  # seconds to read one request and answer it
_MAX_BODY: Final = 10_000_000
_REASONS: Final = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found"}


class _Refused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, list[tuple[bytes, bytes]], bytes] | None:
    async with asyncio.timeout(_IDLE):
        line = await reader.readline()
    if not line.strip():
        return None
    async with asyncio.timeout(_REQUEST):
        try:
            method, target, _version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        except ValueError:
            raise _Refused(400) from None
        headers: list[tuple[bytes, bytes]] = []
        while True:
            raw = await reader.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers.append((name.strip().lower().encode("latin-1"), value.strip().encode()))
        found = dict(headers)
        if b"transfer-encoding" in found:
            raise _Refused(411)
        length = int(found.get(b"content-length", b"0") or 0)
        if length > _MAX_BODY:
            raise _Refused(413)
        body = await reader.readexactly(length) if length else b""
    return method, target, headers, body


async def _call(
    app: AsgiApp,
    request: tuple[str, str, list[tuple[bytes, bytes]], bytes],
    *,
    port: int,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    method, target, headers, body = request
    path, _, query = target.partition("?")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method.upper(),
        "scheme": "http",
        "path": unquote(path),
        "raw_path": path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", port),
    }
    sent_body = False
    status = 500
    out_headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []
    finished = asyncio.Event()

    async def receive() -> MutableMapping[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status, out_headers
        if message["type"] == "http.response.start":
            status = int(message["status"])
            out_headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                finished.set()

    async with asyncio.timeout(_REQUEST):
        await app(scope, receive, send)
    finished.set()
    return status, out_headers, b"".join(chunks)


def _response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    reason = _REASONS.get(status, "Status")
    lines = [f"HTTP/1.1 {status} {reason}".encode()]
    for name, value in headers:
        if name.lower() not in (b"content-length", b"connection", b"transfer-encoding"):
            lines.append(name + b": " + value)
    lines.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@contextlib.asynccontextmanager
async def serve_asgi(app: AsgiApp) -> AsyncIterator[str]:
    """Serve ``app`` on ``127.0.0.1`` and a free port; yields the base URL
    (``http://127.0.0.1:…``)."""
    port = 0
    open_writers: set[asyncio.StreamWriter] = set()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        open_writers.add(writer)
        try:
            while True:
                try:
                    request = await _read_request(reader)
                except _Refused as refused:
                    writer.write(_response(refused.status, [], b""))
                    await writer.drain()
                    return
                if request is None:
                    return
                answer = await _call(app, request, port=port)
                writer.write(_response(*answer))
                await writer.drain()
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            return
        finally:
            open_writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(1):
                    await writer.wait_closed()

    server = await asyncio.start_server(connection, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in list(open_writers):  # kept-alive connections end with the server
            writer.close()
        await server.wait_closed()
