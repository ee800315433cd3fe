"""A scripted IMAP server on 127.0.0.1 that misbehaves on purpose (stalls, drops, BYE).

Each command is answered from a table: command name → lines with ``{tag}`` filled in, the
string ``"stall"`` (never answer) or ``"drop"`` (close the connection). Commands not in the
table get a tagged OK. It speaks just enough IMAP for aioimaplib's greeting and CAPABILITY.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

__all__ = ["CAPABILITY", "SELECTED", "fake_imap"]

CAPABILITY = ["* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR\r\n", "{tag} OK done\r\n"]
SELECTED = [
    "* 1 EXISTS\r\n",
    "* OK [UIDVALIDITY 7] ok\r\n",
    "* OK [UIDNEXT 2] ok\r\n",
    "{tag} OK [READ-WRITE] done\r\n",
]


@asynccontextmanager
async def fake_imap(
    answers: Mapping[str, list[str] | str],
    *,
    greeting: str = "* OK fake IMAP ready\r\n",
    record: list[str] | None = None,
) -> AsyncIterator[int]:
    """Serve on a free port (yielded) until the block ends; each command received, without
    its tag, is appended to ``record`` when given."""
    table = {"CAPABILITY": CAPABILITY, **answers}
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            writer.write(greeting.encode())
            while line := await reader.readline():
                tag, _, rest = line.decode().strip().partition(" ")
                if record is not None:
                    record.append(rest)
                name = rest.split(" ", 1)[0].upper()
                answer = table.get(name, ["{tag} OK done\r\n"])
                if answer == "stall":
                    continue
                if answer == "drop":
                    break
                for item in answer:
                    writer.write(item.format(tag=tag).encode())
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            handlers.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        for task in list(handlers):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
