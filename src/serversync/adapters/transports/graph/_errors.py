"""Microsoft Graph answers to serversync errors.

Graph's error bodies are OData: ``{"error": {"code", "message", "innerError": {...}}}``.
Microsoft says to branch on ``code`` (walking nested inner errors) and never on ``message``;
codes come in both ``SyncStateNotFound`` and ``syncStateNotFound`` spellings, so they are
compared without case. Bodies that are no JSON (an HTML 503 from a gateway, an empty 400)
are expected too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Final

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

__all__ = [
    "SyncStateLostError",
    "error_codes",
    "error_from_response",
    "parse_retry_after",
]

_SYNC_STATE_CODES: Final = frozenset({"syncstatenotfound", "resyncrequired", "syncstateinvalid"})
_NOT_IN_EXCHANGE_ONLINE: Final = frozenset(
    {"mailboxnotenabledforrestapi", "mailboxnotsupportedforrestapi"}
)
_ITEM_GONE: Final = frozenset({"erroritemnotfound", "itemnotfound"})
_BUSY_STATUSES: Final = frozenset({429, 500, 502, 503, 504, 509})
# Server messages are quoted in errors for diagnosis, cut to this length.
_QUOTE: Final = 200


class SyncStateLostError(TransientError):
    """Graph no longer knows a delta token (410 Gone, ``syncStateNotFound``,
    ``resyncRequired``): the folder's round starts again from the beginning."""


def _body(content: bytes) -> Mapping[str, Any]:
    try:
        parsed = json.loads(content) if content else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _errors(error: Any) -> Iterator[Mapping[str, Any]]:
    while isinstance(error, dict):
        yield error
        error = error.get("innerError", error.get("innererror"))


def error_codes(content: bytes) -> tuple[str, ...]:
    """Every ``code`` of an OData error body, outermost first, lower-cased."""
    return tuple(
        str(e["code"]).lower() for e in _errors(_body(content).get("error")) if e.get("code")
    )


def _message(content: bytes) -> str:
    error = _body(content).get("error")
    text = error.get("message") if isinstance(error, dict) else None
    return " ".join(str(text).split())[:_QUOTE] if text else ""


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> timedelta | None:
    """``Retry-After`` as a duration: delay seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return timedelta(seconds=int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when - (now or datetime.now(UTC)), timedelta(0))


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    *,
    what: str,
    mailbox_id: str | None,
    item: bool = False,
) -> SyncError:
    """The serversync error for a Graph answer that is no success (the brief's table D6).

    ``item`` says the request concerned one message (fetching, tagging, sending it): a
    refusal of that message then fails the message alone, not the mailbox.
    """
    codes = error_codes(content)
    code = next(iter(codes), None)
    quoted = _message(content)
    detail = f"{what}: HTTP {status}" + (f" {quoted}" if quoted else "")
    found = set(codes)
    scope = ErrorScope.ITEM if item else None

    if status == 410 or found & _SYNC_STATE_CODES:
        return SyncStateLostError(detail, mailbox_id=mailbox_id, server_code=code)
    if status == 412:
        # ErrorIrresolvableConflict: the item changed since its change key was read.
        return StorageConflictError(
            f"{detail} (the item changed since it was read)",
            mailbox_id=mailbox_id,
            server_code=code,
        )
    if status == 401:
        return AuthenticationError(
            f"{detail} (Microsoft Graph refused the access token)",
            mailbox_id=mailbox_id,
            server_code=code,
        )
    if status == 403:
        if "errorsendasdenied" in found:
            return MessageRejectedError(
                f"{detail} (no Send As right on this mailbox)",
                mailbox_id=mailbox_id,
                server_code=code,
                server_message=quoted or None,
            )
        if "errorquotaexceeded" in found:
            return PermanentError(
                f"{detail} (the mailbox is full)", mailbox_id=mailbox_id, server_code=code
            )
        # ErrorAccessDenied ("Access to OData is disabled"), Authorization_RequestDenied,
        # extensionError: consent revoked, or RBAC / an application access policy leaves the
        # mailbox out. Only an administrator fixes it.
        return ConfigurationError(
            f"{detail} (the application may not access this mailbox: check its consent and "
            "its Exchange RBAC scope or application access policy)",
            mailbox_id=mailbox_id,
            server_code=code,
        )
    if status == 404:
        if found & _NOT_IN_EXCHANGE_ONLINE:
            return ConfigurationError(
                f"{detail} (the mailbox is not in Exchange Online, or inactive: use an EWS "
                "profile for mailboxes on premises)",
                mailbox_id=mailbox_id,
                server_code=code,
            )
        if item or found & _ITEM_GONE:
            return MessageRejectedError(
                f"{detail} (the message is gone)",
                mailbox_id=mailbox_id,
                server_code=code,
                server_message=quoted or None,
                scope=ErrorScope.ITEM,
            )
        return ConfigurationError(detail, mailbox_id=mailbox_id, server_code=code)
    if status in _BUSY_STATUSES:
        return ServerBusyError(
            detail,
            retry_after=parse_retry_after(headers.get("retry-after")),
            mailbox_id=mailbox_id,
            server_code=code,
        )
    if status == 424:
        # A batch item whose dependency failed: nothing wrong with it, worth a later try.
        return TransientError(
            f"{detail} (a request it depends on failed)", mailbox_id=mailbox_id, server_code=code
        )
    if status == 400 and not content.strip():
        # An empty 400 has been seen from overloaded front ends: worth a later try.
        return TransientError(detail, mailbox_id=mailbox_id, server_code=code)
    if status in (507,):
        return PermanentError(
            f"{detail} (the mailbox is full)", mailbox_id=mailbox_id, server_code=code
        )
    if 300 <= status < 400:
        return ConfigurationError(
            f"{detail} (Graph answered with a redirect, which serversync does not follow: "
            "check the Graph URL of the profile)",
            mailbox_id=mailbox_id,
            server_code=code,
        )
    if item and 400 <= status < 500:
        return MessageRejectedError(
            detail,
            mailbox_id=mailbox_id,
            server_code=code,
            server_message=quoted or None,
            scope=scope,
        )
    if 400 <= status < 500:
        return ConfigurationError(detail, mailbox_id=mailbox_id, server_code=code)
    return ServerBusyError(detail, mailbox_id=mailbox_id, server_code=code)
