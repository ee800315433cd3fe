"""The server's own life: it stops promptly with clients still connected, leaves no thread
behind, and runs the same under asyncio."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from exchangelib import (  # type: ignore[import-untyped]
    DELEGATE,
    Account,
    Configuration,
    Credentials,
    close_connections,
)
from exchangelib.errors import ErrorTimeoutExpired  # type: ignore[import-untyped]
from exchangelib.transport import BASIC  # type: ignore[import-untyped]
from exchangelib.version import EXCHANGE_2016, Version  # type: ignore[import-untyped]

from serversync.testing.ews import Delay, EwsTestServer
from tests.integration.ews.conftest import ALICE, PASSWORD, raw_message

pytestmark = pytest.mark.integration


def account_on(server: EwsTestServer) -> Account:
    config = Configuration(
        service_endpoint=server.url,
        credentials=Credentials(ALICE, PASSWORD),
        auth_type=BASIC,
        version=Version(build=EXCHANGE_2016),
    )
    return Account(ALICE, config=config, autodiscover=False, access_type=DELEGATE)


def server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ews-test-server")]


def test_stop_closes_kept_alive_connections_and_joins_every_thread() -> None:
    before = set(server_threads())
    server = EwsTestServer().start()
    server.add_mailbox(ALICE, password=PASSWORD)
    server.deliver(ALICE, raw_message(1))
    try:
        account = account_on(server)
        assert [m.subject for m in account.inbox.all()] == ["hello 1"]
        # exchangelib keeps its connection open; the server must not wait for it.
        assert len(set(server_threads()) - before) == 2  # the listener and the connection

        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 1
        assert set(server_threads()) <= before
    finally:
        close_connections()


def test_stop_interrupts_a_delayed_answer() -> None:
    server = EwsTestServer().start()
    server.add_mailbox(ALICE, password=PASSWORD)
    outcome: list[BaseException | None] = []
    try:
        account = account_on(server)
        inbox = account.inbox
        server.inject(Delay(30))

        def list_inbox() -> None:
            try:
                list(inbox.all())
                outcome.append(None)
            except ErrorTimeoutExpired as error:
                outcome.append(error)

        client = threading.Thread(target=list_inbox)
        client.start()
        deadline = time.monotonic() + 5
        while server.pending_faults and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        server.stop()
        client.join(5)
        assert time.monotonic() - started < 2
        assert not client.is_alive()
        assert len(outcome) == 1
        assert isinstance(outcome[0], ErrorTimeoutExpired)  # the connection was closed on it
    finally:
        server.stop()
        close_connections()


async def test_async_tests_use_it_through_worker_threads() -> None:
    async with EwsTestServer() as server:
        server.add_mailbox(ALICE, password=PASSWORD)
        server.deliver(ALICE, raw_message(1))
        try:
            account = await asyncio.to_thread(account_on, server)
            subjects = await asyncio.to_thread(lambda: [m.subject for m in account.inbox.all()])
        finally:
            await asyncio.to_thread(close_connections)
    assert subjects == ["hello 1"]


def test_host_helpers_refuse_what_does_not_exist() -> None:
    with EwsTestServer() as server:
        server.add_mailbox(ALICE, password=PASSWORD)
        with pytest.raises(KeyError):
            server.deliver("nobody@contoso.example", raw_message(1))
        with pytest.raises(KeyError):
            server.items(ALICE, "no-such-folder")
        with pytest.raises(ValueError, match="already exists"):
            server.add_mailbox(ALICE.upper())
        assert server.item("no-such-item") is None
        folder = server.create_folder(ALICE, "Projects")
        assert server.folder(ALICE, folder.id).parent_id == server.folder(ALICE, "inbox").id
