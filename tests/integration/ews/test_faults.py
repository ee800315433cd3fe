"""Injected faults as exchangelib meets them: ErrorServerBusy honoured by its retry policy,
HTTP errors, SOAP faults, dropped connections, slow answers, unknown operations."""

from __future__ import annotations

import time

import pytest
from exchangelib.errors import (  # type: ignore[import-untyped]
    ErrorInvalidOperation,
    ErrorServerBusy,
    ErrorTimeoutExpired,
    RateLimitError,
)
from exchangelib.protocol import FaultTolerance  # type: ignore[import-untyped]

from serversync.testing.ews import (
    Delay,
    DropConnection,
    EwsFault,
    EwsTestServer,
    HttpError,
    ServerBusy,
)
from tests.integration.ews.conftest import ALICE, Connect, raw_message

pytestmark = pytest.mark.integration


def test_server_busy_is_retried_after_the_back_off(ews: EwsTestServer, connect: Connect) -> None:
    ews.deliver(ALICE, raw_message(1))
    account = connect(retry_policy=FaultTolerance(max_wait=5))
    [listed] = account.inbox.all().only("subject")
    ews.clear_requests()
    ews.inject(ServerBusy(back_off_ms=150), times=2, operation="GetItem")

    started = time.monotonic()
    [fetched] = account.fetch(ids=[listed], only_fields=["mime_content"])
    elapsed = time.monotonic() - started

    assert fetched.mime_content == raw_message(1)
    assert [(r.operation, r.status, r.error) for r in ews.requests] == [
        ("GetItem", 500, "ErrorServerBusy"),
        ("GetItem", 500, "ErrorServerBusy"),
        ("GetItem", 200, None),
    ]
    assert 0.3 <= elapsed < 3  # two back-offs of 150 ms, and nothing longer
    assert ews.pending_faults == 0


def test_fail_fast_reports_the_back_off(ews: EwsTestServer, connect: Connect) -> None:
    account = connect()
    ews.inject(ServerBusy(back_off_ms=2500))

    with pytest.raises(ErrorServerBusy) as busy:
        account.inbox  # noqa: B018

    assert busy.value.back_off == 2.5


def test_a_back_off_beyond_max_wait_gives_up_at_once(ews: EwsTestServer, connect: Connect) -> None:
    account = connect(retry_policy=FaultTolerance(max_wait=1))
    ews.inject(ServerBusy(back_off_ms=60_000), times=5)

    started = time.monotonic()
    with pytest.raises(RateLimitError):
        account.inbox  # noqa: B018
    assert time.monotonic() - started < 2
    assert ews.pending_faults == 4


def test_http_errors_soap_faults_and_dropped_connections(
    ews: EwsTestServer, connect: Connect
) -> None:
    account = connect()
    inbox = account.inbox

    # exchangelib treats both as "busy, retry later"; failing fast, it raises that.
    ews.inject(HttpError(503))
    with pytest.raises(ErrorServerBusy, match="HTTP 503"):
        list(inbox.all())

    ews.inject(EwsFault("ErrorInternalServerTransientError"), operation="FindItem")
    with pytest.raises(ErrorServerBusy, match="ErrorInternalServerTransientError"):
        list(inbox.all())

    ews.inject(DropConnection())
    with pytest.raises(ErrorTimeoutExpired):
        list(inbox.all())

    assert list(inbox.all()) == []  # and the next request is answered normally
    assert [r.error for r in ews.requests[-4:]] == [
        "HTTP 503",
        "ErrorInternalServerTransientError",
        "DropConnection",
        None,
    ]


def test_a_fault_for_one_operation_spares_the_others(ews: EwsTestServer, connect: Connect) -> None:
    ews.deliver(ALICE, raw_message(1))
    account = connect()
    ews.inject(HttpError(500), operation="SyncFolderItems")

    assert [m.subject for m in account.inbox.all()] == ["hello 1"]
    assert ews.pending_faults == 1
    with pytest.raises(Exception, match="500"):
        list(account.inbox.sync_items())
    assert ews.pending_faults == 0


def test_a_delay_slows_the_answer(ews: EwsTestServer, connect: Connect) -> None:
    account = connect()
    inbox = account.inbox
    ews.inject(Delay(0.3))

    started = time.monotonic()
    assert list(inbox.all()) == []
    assert time.monotonic() - started >= 0.3


def test_an_unknown_operation_is_named_in_the_fault(ews: EwsTestServer, connect: Connect) -> None:
    account = connect()

    with pytest.raises(ErrorInvalidOperation, match="does not implement GetUserOofSettings"):
        account.oof_settings  # noqa: B018

    [record] = ews.requests
    assert (record.operation, record.status, record.error) == (
        "GetUserOofSettings",
        500,
        "ErrorInvalidOperation",
    )
