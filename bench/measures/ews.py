"""EWS incoming MIME fetch: serversync's EWS session (list the Inbox, then the messages'
MIME content with ``fetch_messages`` 100 at a time, as the engine asks for a group of tracked
mail) against exchangelib doing the same job
its own way (FindItem, then GetItem with MIME in chunks of 100), with responses read in
64 KiB chunks; and against stock exchangelib, which reads responses a byte at a time.

The EWS test server runs in a process of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from exchangelib import (  # type: ignore[import-untyped]
    DELEGATE,
    Account,
    Configuration,
)
from exchangelib import Credentials as EwsCredentials
from exchangelib.transport import BASIC  # type: ignore[import-untyped]
from exchangelib.version import EXCHANGE_2016, Version  # type: ignore[import-untyped]

from bench._context import Bench, log, timed
from bench._results import Better, Result, Target, figure
from bench._servers import die_with_parent
from serversync.adapters.transports import EwsTransport
from serversync.model import (
    INBOX,
    Credentials,
    EmailServerProfile,
    RawMessage,
    Secret,
    ServerEndpoint,
    ServerType,
    TlsMode,
)
from serversync.ports import BatchMessageSession
from serversync.testing import a_mailbox, a_profile

__all__ = ["measure"]

_ROOT = Path(__file__).resolve().parent.parent.parent
_USER = "ews@contoso.example"
_PASSWORD = "bench-secret"
_CHUNK = 64 * 1024
# The engine fetches a group of tracked messages' bodies this many at a time.
_GROUP = 100


@contextlib.contextmanager
def _ews_server(bench: Bench) -> Iterator[str]:
    settings = {
        "seed": bench.config.seed + 7,
        "user": _USER,
        "count": bench.config.ews_messages,
        "password": _PASSWORD,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "bench._ews_server", json.dumps(settings)],
        cwd=_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the EWS test server did not start: {url!r}")
        yield url
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        if process.stdout is not None:
            process.stdout.close()


@contextlib.contextmanager
def _read_chunk(size: int | None) -> Iterator[None]:
    """``requests.Response.iter_content`` reading ``size`` bytes at a time when exchangelib
    gives no size (the fix), or as requests has it (``None``: stock, one byte)."""
    if size is None:
        yield
        return
    stock = requests.Response.iter_content

    def iter_content(self: requests.Response, chunk_size: Any = size, **kwargs: Any) -> Any:
        return stock(self, chunk_size, **kwargs)

    requests.Response.iter_content = iter_content  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        requests.Response.iter_content = stock  # type: ignore[method-assign]


def _exchangelib_fetch(url: str) -> tuple[int, int]:
    config = Configuration(
        service_endpoint=url,
        credentials=EwsCredentials(_USER, _PASSWORD),
        auth_type=BASIC,
        version=Version(build=EXCHANGE_2016),
    )
    account = Account(_USER, config=config, autodiscover=False, access_type=DELEGATE)
    ids = [(item.id, item.changekey) for item in account.inbox.all().only("subject")]
    count = size = 0
    for item in account.fetch(ids=ids, only_fields=["mime_content"]):
        count += 1
        size += len(item.mime_content)
    account.protocol.close()
    return count, size


async def _ours(profile: EmailServerProfile, count: int) -> tuple[int, int]:
    transport = EwsTransport().incoming
    login = Credentials(username=_USER, secret=Secret(_PASSWORD))
    size = fetched = 0
    async with transport.open(a_mailbox(_USER), profile, login) as session:
        cursor = None
        while True:
            assert isinstance(session, BatchMessageSession)
            batch = await session.list_new(INBOX, cursor, limit=count)
            for start in range(0, len(batch.refs), _GROUP):
                for message in await session.fetch_messages(batch.refs[start : start + _GROUP]):
                    assert isinstance(message, RawMessage), message
                    size += len(message.data)
                    fetched += 1
            cursor = batch.end
            if not batch.more:
                break
    return fetched, size


async def measure(bench: Bench) -> list[Result]:
    """serversync's EWS MIME fetch against exchangelib with and without the read fix."""
    count = bench.config.ews_messages
    log(f"ews: an EWS test server with {count} messages")
    with _ews_server(bench) as url:
        profile = a_profile(
            server_type=ServerType.EXCHANGE_SERVER,
            incoming=ServerEndpoint(host=url, tls=TlsMode.NONE),
        )

        async def ours() -> tuple[int, int]:
            return await _ours(profile, count)

        async def fixed() -> tuple[int, int]:
            with _read_chunk(_CHUNK):
                return await asyncio.to_thread(_exchangelib_fetch, url)

        async def stock() -> tuple[int, int]:
            with _read_chunk(None):
                return await asyncio.to_thread(_exchangelib_fetch, url)

        log("ews: MIME fetch")
        mine, theirs = await bench.compare(ours, fixed, runs=max(1, bench.config.runs - 2))
        log("ews: stock exchangelib (reads a byte at a time), once")
        slow = await timed(stock)
    us = figure("serversync EWS session: list_new, fetch_messages (100 at a time)", mine)
    them = figure("exchangelib, 64 KiB reads: FindItem + GetItem MIME (chunks of 100)", theirs)
    them_stock = figure("stock exchangelib", [slow])
    assert us.items == count, (us.items, count)
    assert them.items == them_stock.items == count, (them.items, them_stock.items, count)
    return [
        Result(
            id="ews_mime_fetch",
            title="EWS incoming MIME fetch",
            unit="× exchangelib (64 KiB reads) msg/s",
            value=us.rate / them.rate,
            ratio=us.rate / them.rate,
            ratio_means="serversync msg/s ÷ exchangelib-with-the-read-fix msg/s",
            target=Target(value=0.8, better=Better.HIGHER),
            ours=us,
            baseline=them,
            params={
                "messages": count,
                "stock_exchangelib_msg_per_s": round(them_stock.rate, 2),
                "vs_stock_exchangelib": round(us.rate / them_stock.rate, 2),
            },
        )
    ]
