"""An EWS test server per test, and unmodified exchangelib accounts pointed at it.

exchangelib caches one Protocol (with its HTTP sessions) per endpoint and credentials for
the whole process; ``connect`` closes them all when the test ends, before the server stops,
so that no socket outlives its test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from exchangelib import (  # type: ignore[import-untyped]
    DELEGATE,
    Account,
    Configuration,
    Credentials,
    close_connections,
)
from exchangelib.protocol import FailFast  # type: ignore[import-untyped]
from exchangelib.transport import BASIC  # type: ignore[import-untyped]
from exchangelib.version import EXCHANGE_2016, Version  # type: ignore[import-untyped]

from serversync.testing.ews import EwsTestServer

ALICE = "alice@contoso.example"
BOB = "bob@contoso.example"
PASSWORD = "correct horse"

Connect = Callable[..., Any]
"""connect(address=ALICE, *, credentials=None, auth_type=BASIC, access_type=DELEGATE,
retry_policy=None, endpoint=None) -> exchangelib.Account"""


def raw_message(
    n: int,
    *,
    to: str = ALICE,
    subject: str | None = None,
    sender: str = "Bob Fabrikam <bob@fabrikam.example>",
    body: str | None = None,
) -> bytes:
    """A small RFC 5322 message."""
    return (
        f"From: {sender}\r\n"
        f"To: {to}\r\n"
        f"Subject: {subject if subject is not None else f'hello {n}'}\r\n"
        f"Message-ID: <{n}.test@fabrikam.example>\r\n"
        f"Date: Mon, 05 Jan 2026 09:{n % 60:02d}:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\n'
        "\r\n"
        f"{body if body is not None else f'body {n}'}\r\n"
    ).encode()


@pytest.fixture
def ews() -> Iterator[EwsTestServer]:
    """A running server with two mailboxes, alice and bob."""
    with EwsTestServer() as server:
        server.add_mailbox(ALICE, password=PASSWORD, display_name="Alice Contoso")
        server.add_mailbox(BOB, password=PASSWORD, display_name="Bob Contoso")
        yield server


@pytest.fixture
def connect(ews: EwsTestServer) -> Iterator[Connect]:
    """Build exchangelib accounts on the test server: no autodiscover, version pinned."""

    def make(
        address: str = ALICE,
        *,
        credentials: Any = None,
        auth_type: str = BASIC,
        access_type: str = DELEGATE,
        retry_policy: Any = None,
        endpoint: str | None = None,
    ) -> Any:
        config = Configuration(
            service_endpoint=endpoint or ews.url,
            credentials=credentials if credentials is not None else Credentials(ALICE, PASSWORD),
            auth_type=auth_type,
            version=Version(build=EXCHANGE_2016),
            retry_policy=retry_policy if retry_policy is not None else FailFast(),
        )
        return Account(address, config=config, autodiscover=False, access_type=access_type)

    try:
        yield make
    finally:
        close_connections()
