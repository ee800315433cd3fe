"""The Graph client's pure parts: error mapping (the brief's table D6), Retry-After, links
to other hosts, redaction, and header blocks written from message properties."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from serversync.adapters.transports.graph._client import origin, redact
from serversync.adapters.transports.graph._errors import (
    SyncStateLostError,
    error_codes,
    error_from_response,
    parse_retry_after,
)
from serversync.adapters.transports.graph._headers import header_block
from serversync.errors import (
    AuthenticationError,
    ConfigurationError,
    ErrorScope,
    MessageRejectedError,
    PermanentError,
    ServerBusyError,
    StorageConflictError,
    SyncError,
    TransientError,
)
from serversync.mime import parse_headers
from serversync.model import MessageId


def body(code: str, inner: str | None = None) -> bytes:
    error: dict[str, object] = {"code": code, "message": f"{code} happened"}
    if inner is not None:
        error["innerError"] = {"code": inner, "date": "2026-03-02T09:00:00"}
    return json.dumps({"error": error}).encode()


def mapped(
    status: int, content: bytes = b"", *, item: bool = False, headers: dict[str, str] | None = None
) -> SyncError:
    return error_from_response(
        status, headers or {}, content, what="reading", mailbox_id="m", item=item
    )


@pytest.mark.parametrize(
    ("status", "content", "kind"),
    [
        (410, body("SyncStateNotFound"), SyncStateLostError),
        (400, body("BadRequest", "syncStateNotFound"), SyncStateLostError),
        (400, body("resyncRequired"), SyncStateLostError),
        (401, body("InvalidAuthenticationToken"), AuthenticationError),
        (403, body("ErrorAccessDenied"), ConfigurationError),
        (403, body("Authorization_RequestDenied"), ConfigurationError),
        (404, body("MailboxNotEnabledForRESTAPI"), ConfigurationError),
        (404, body("ErrorInvalidUser"), ConfigurationError),
        (429, body("ApplicationThrottled"), ServerBusyError),
        (503, b"<html><body>Service Unavailable</body></html>", ServerBusyError),
        (504, b"", ServerBusyError),
        (400, b"", TransientError),
        (507, body("ErrorQuotaExceeded"), PermanentError),
        (302, b"", ConfigurationError),
        (412, body("ErrorIrresolvableConflict"), StorageConflictError),
    ],
)
def test_graph_answers_map_to_the_error_tree(
    status: int, content: bytes, kind: type[SyncError]
) -> None:
    error = mapped(status, content)
    assert type(error) is kind
    assert error.mailbox_id == "m"


def test_codes_are_walked_through_inner_errors_without_case() -> None:
    assert error_codes(body("BadRequest", "SyncStateNotFound")) == (
        "badrequest",
        "syncstatenotfound",
    )
    assert error_codes(b"<html>") == ()


def test_per_message_refusals_fail_the_message_alone() -> None:
    gone = mapped(404, body("ErrorItemNotFound"))
    assert isinstance(gone, MessageRejectedError)
    assert gone.scope is ErrorScope.ITEM
    send_as = mapped(403, body("ErrorSendAsDenied"), item=True)
    assert isinstance(send_as, MessageRejectedError)
    assert "Send As" in str(send_as)
    assert isinstance(mapped(413, body("RequestEntityTooLarge"), item=True), MessageRejectedError)


def test_retry_after_is_seconds_or_an_http_date() -> None:
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert parse_retry_after("120") == timedelta(seconds=120)
    later = format_datetime(now + timedelta(minutes=3), usegmt=True)
    assert parse_retry_after(later, now=now) == timedelta(minutes=3)
    past = format_datetime(now - timedelta(minutes=3), usegmt=True)
    assert parse_retry_after(past, now=now) == timedelta(0)
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    busy = mapped(429, body("ApplicationThrottled"), headers={"retry-after": "7"})
    assert isinstance(busy, ServerBusyError)
    assert busy.retry_after == timedelta(seconds=7)


def test_links_are_compared_by_origin_and_redacted_of_their_tokens() -> None:
    assert origin("https://graph.microsoft.com/v1.0/x") == origin(
        "HTTPS://Graph.Microsoft.com:443/y"
    )
    assert origin("https://graph.microsoft.com/") != origin("https://graph.microsoft.com.evil/")
    assert origin("http://127.0.0.1:8080/v1.0") != origin("http://127.0.0.1:8081/v1.0")
    url = (
        "https://graph.microsoft.com/v1.0/users/a/mailFolders/inbox/messages/delta?$skiptoken=s3cr"
    )
    assert "s3cr" not in redact(url)
    assert redact(url).endswith("/messages/delta?…")


def test_a_header_block_is_written_from_properties_when_transport_headers_are_missing() -> None:
    row = {
        "id": "AAk1",
        "internetMessageId": "<sent-1@contoso.example>",
        "subject": "Grüße",
        "from": {"emailAddress": {"name": "Alice", "address": "alice@contoso.example"}},
        "toRecipients": [{"emailAddress": {"name": "", "address": "jane@fabrikam.example"}}],
        "sentDateTime": "2026-03-02T09:00:00Z",
        "singleValueExtendedProperties": [
            {"id": "String 0x1042", "value": "<order-1@fabrikam.example>"},
            {
                "id": "String 0x1039",
                "value": "<order-0@fabrikam.example> <order-1@fabrikam.example>",
            },
        ],
    }
    parsed = parse_headers(header_block(row))
    assert parsed.message_id == MessageId("<sent-1@contoso.example>")
    assert parsed.subject == "Grüße"
    assert parsed.sender is not None
    assert parsed.sender.address == "alice@contoso.example"
    assert [a.address for a in parsed.to] == ["jane@fabrikam.example"]
    assert parsed.in_reply_to == (MessageId("<order-1@fabrikam.example>"),)
    assert len(parsed.references) == 2


def test_transport_headers_win_and_cannot_inject_lines() -> None:
    row = {
        "internetMessageHeaders": [
            {"name": "Message-ID", "value": "<x@y>"},
            {"name": "Subject", "value": "one\r\nBcc: victim@example.com"},
        ],
        "internetMessageId": "<ignored@y>",
    }
    block = header_block(row)
    assert parse_headers(block).message_id == MessageId("<x@y>")
    assert b"\r\nBcc:" not in block


def test_a_stale_change_key_is_a_conflict_even_for_one_item() -> None:
    error = mapped(412, body("ErrorIrresolvableConflict"), item=True)
    assert type(error) is StorageConflictError, "the engine reads the item again next cycle"
    assert error.transient
