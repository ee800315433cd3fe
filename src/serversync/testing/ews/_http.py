"""HTTP/1.1 on loopback, one thread per connection, with optional TLS, and a stop that
closes every open connection and joins every thread it started."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs

__all__ = ["HttpServer", "Reply"]

_HANDSHAKE_TIMEOUT = 10.0
_IDLE_TIMEOUT = 60.0


@attrs.frozen
class Reply:
    """What to answer; ``drop`` closes the connection without answering."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = attrs.field(factory=dict)
    drop: bool = False


App = Callable[[str, Message, bytes], Reply]
"""(path, headers, body) of a POST to the answer."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = _IDLE_TIMEOUT
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the server records requests itself."""

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        content_type = reply.headers.get("Content-Type", "text/xml; charset=utf-8")
        self.send_header("Content-Type", content_type)
        # Always a Content-Length: exchangelib reads until it has the whole body.
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            if name != "Content-Type":
                self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length")
        if length is None:
            self._send(Reply(411, b"Length Required", {"Content-Type": "text/plain"}))
            self.close_connection = True
            return
        body = self.rfile.read(int(length))
        reply = self.server.app(self.path, self.headers, body)
        if reply.drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(reply)

    def do_GET(self) -> None:
        self._send(
            Reply(405, b"Method Not Allowed", {"Content-Type": "text/plain", "Allow": "POST"})
        )


class _Server(ThreadingHTTPServer):
    # Handler threads are joined on close (no daemon threads left behind).
    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], app: App, tls: ssl.SSLContext | None) -> None:
        self.app = app
        self.tls = tls
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._closing = False
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        threading.current_thread().name = f"ews-test-server:{self.server_address[1]} connection"
        connection: socket.socket = request
        # Headers and body go out in two writes; without this, Nagle's algorithm holds the
        # body until the client's delayed ACK (about 40 ms per request).
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            request.settimeout(_HANDSHAKE_TIMEOUT)
            try:
                connection = self.tls.wrap_socket(request, server_side=True)
            except OSError:
                return  # a failed handshake; wrap_socket closed the socket
        with self._open_lock:
            if self._closing:
                connection.close()
                return
            self._open.add(connection)
        try:
            super().finish_request(connection, client_address)
        except OSError:
            pass  # the peer went away, or stop() closed the connection
        finally:
            with self._open_lock:
                self._open.discard(connection)
            if connection is not request:
                connection.close()

    def close_connections(self) -> None:
        """Wake every handler waiting on a kept-alive connection."""
        with self._open_lock:
            self._closing = True
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                connection.shutdown(socket.SHUT_RDWR)


class HttpServer:
    """The listening socket and its serving thread."""

    def __init__(self, app: App, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        self._server = _Server((host, port), app, tls)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ews-test-server:{self.port}",
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.close_connections()
        self._server.server_close()  # joins the connection threads
