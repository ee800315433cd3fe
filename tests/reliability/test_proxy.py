"""The fault proxy does what its faults say, seen from both ends of a small line server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.reliability.proxy import Action, Fault, FaultProxy, Stages

FULL_REPLY = b"+OK CMD one" + b"." * 27 + b"\r\n"


class _CommandStages(Stages):
    def client_line(self, line: bytes) -> tuple[str, bool] | None:
        return ("command", False) if line.startswith(b"CMD") else None


class _LineServer:
    """Greets, then answers each line with a 40-byte reply; remembers what it received."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK line server ready for the proxy tests\r\n")
        try:
            while line := await reader.readline():
                self.received.append(line)
                writer.write(b"+OK " + line.strip().ljust(34, b".") + b"\r\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> _LineServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def proxied() -> AsyncIterator[tuple[_LineServer, FaultProxy]]:
    async with _LineServer() as server, FaultProxy(server.port, _CommandStages) as proxy:
        yield server, proxy


async def _exchange(proxy: FaultProxy, *lines: bytes) -> bytes:
    """Connect, send ``lines`` one by one, and read whatever comes within 0.3 s each."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    received = b""
    try:
        for line in (b"", *lines):
            writer.write(line)
            await writer.drain()
            try:
                async with asyncio.timeout(0.3):
                    received += await reader.readline()
            except TimeoutError:
                break
    finally:
        writer.transport.abort()
    return received


async def test_without_a_fault_everything_passes(
    proxied: tuple[_LineServer, FaultProxy],
) -> None:
    server, proxy = proxied

    received = await _exchange(proxy, b"CMD one\r\n", b"CMD two\r\n")

    assert received.count(b"+OK CMD") == 2
    assert server.received == [b"CMD one\r\n", b"CMD two\r\n"]
    assert proxy.injected == {}
    assert proxy.stages_seen["command"] == 2


async def test_drop_resets_before_the_command_reaches_the_server(
    proxied: tuple[_LineServer, FaultProxy],
) -> None:
    server, proxy = proxied
    proxy.arm(Fault("command", Action.DROP, skip=1))

    received = await _exchange(proxy, b"CMD one\r\n", b"CMD two\r\n")

    assert received.startswith(b"* OK")
    assert received.count(b"+OK CMD") == 1, "the first command passed (skip=1)"
    assert server.received == [b"CMD one\r\n"]
    assert proxy.injected == {("command", Action.DROP): 1}


async def test_drop_at_the_greeting_closes_before_any_byte(
    proxied: tuple[_LineServer, FaultProxy],
) -> None:
    _, proxy = proxied
    proxy.arm(Fault("greeting", Action.DROP))

    assert await _exchange(proxy) == b""
    assert await proxy.wait_idle(seconds=1)


async def test_stall_forwards_the_command_and_withholds_the_reply(
    proxied: tuple[_LineServer, FaultProxy],
) -> None:
    server, proxy = proxied
    proxy.arm(Fault("command", Action.STALL))

    received = await _exchange(proxy, b"CMD one\r\n")

    assert b"+OK" not in received
    assert server.received == [b"CMD one\r\n"], "the server got the command"
    assert await proxy.wait_idle(seconds=1), "the client's hang-up ends the stalled link"


async def test_truncate_passes_half_the_reply_then_closes(
    proxied: tuple[_LineServer, FaultProxy],
) -> None:
    _, proxy = proxied
    proxy.arm(Fault("command", Action.TRUNCATE))

    received = await _exchange(proxy, b"CMD one\r\n")

    reply = received.split(b"\r\n", 1)[1]
    assert reply == FULL_REPLY[:20], "the first half of the 40-byte reply, then the end"


async def test_lag_delivers_the_whole_reply_in_pieces(
    proxied: tuple[_LineServer, FaultProxy],
) -> None:
    _, proxy = proxied
    proxy.arm(Fault("command", Action.LAG))
    started = time.monotonic()

    received = await _exchange(proxy, b"CMD one\r\n")

    assert received.endswith(FULL_REPLY)
    assert time.monotonic() - started >= 0.09, "three pauses of 30 ms at least"
