"""The one exception hierarchy of serversync.

Adapters translate library exceptions into these (``raise ... from exc``); the engine
classifies them; nothing else catches broadly. Whether a failure is worth retrying is the
class (transient or permanent); how far it reaches is the ``scope`` attribute.

::

    SyncError
    ├── TransientError                 retry later; the same input may succeed
    │   ├── ConnectionFailedError      (also ConnectionError)
    │   ├── OperationTimeoutError      (also TimeoutError)
    │   ├── ServerBusyError            .retry_after (EWS ErrorServerBusy, SMTP 421,
    │   │                              IMAP [UNAVAILABLE])
    │   ├── DeliveryUncertainError     a send was cut off after the message was handed over
    │   ├── LeaseLostError             another engine took the mailbox or the claim
    │   ├── EngineStoppingError        the engine was asked to stop; work stops between items
    │   └── StorageConflictError       a repository write raced with another writer
    └── PermanentError                 fails again until configuration or data changes
        ├── AuthenticationError        wrong password, revoked token
        ├── ConfigurationError         no profile, unsupported server type, missing credentials
        │   ├── DuplicateMailboxError      .existing: the user or queue already has a mailbox
        │   └── EmailAddressNotApprovedError  the organisation requires an approved address
        ├── MessageRejectedError       .server_code, .server_message (SMTP 5xx, EWS item errors)
        │   └── MessageTooLargeError   .size, .limit: over the configured message size limit
        ├── RecipientsRefusedError     .recipients (every recipient refused)
        └── MalformedMessageError      .reason (a message that cannot be parsed)

Every error carries keyword attributes (``mailbox_id``, ``server_code``, ``retry_after``,
``scope``), keeps ``args`` so it pickles, and never includes a secret in its message.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "ConnectionFailedError",
    "DeliveryUncertainError",
    "DuplicateMailboxError",
    "EmailAddressNotApprovedError",
    "EngineStoppingError",
    "ErrorScope",
    "LeaseLostError",
    "MalformedMessageError",
    "MessageRejectedError",
    "MessageTooLargeError",
    "OperationTimeoutError",
    "PermanentError",
    "RecipientsRefusedError",
    "ServerBusyError",
    "StorageConflictError",
    "SyncError",
    "TransientError",
]


class ErrorScope(enum.StrEnum):
    """How far a failure reaches: one message, one mailbox workload, or the whole engine."""

    ITEM = "item"
    MAILBOX = "mailbox"
    ENGINE = "engine"


class SyncError(Exception):
    """Base of every error serversync raises.

    ``transient`` tells whether the same call may succeed later; ``scope`` tells the engine
    whether to skip a message, park a mailbox workload or stop.
    """

    transient: bool = False
    default_scope: ErrorScope = ErrorScope.MAILBOX

    def __init__(
        self,
        message: str,
        *,
        mailbox_id: str | None = None,
        server_code: str | None = None,
        scope: ErrorScope | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.mailbox_id = mailbox_id
        self.server_code = server_code
        self.scope = scope if scope is not None else self.default_scope

    def _extra(self) -> Mapping[str, Any]:
        return {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors do not survive the default Exception pickling.
        kwargs: dict[str, Any] = {
            "mailbox_id": self.mailbox_id,
            "server_code": self.server_code,
            "scope": self.scope,
            **self._extra(),
        }
        return (_rebuild, (type(self), self.message, kwargs))

    def __str__(self) -> str:
        parts = [self.message]
        if self.server_code is not None:
            parts.append(f"(server code {self.server_code})")
        if self.mailbox_id is not None:
            parts.append(f"[mailbox {self.mailbox_id}]")
        return " ".join(parts)


def _rebuild(cls: type[SyncError], message: str, kwargs: dict[str, Any]) -> SyncError:
    return cls(message, **kwargs)


class TransientError(SyncError):
    """A failure that may go away on its own: retry later with back-off."""

    transient = True


class PermanentError(SyncError):
    """A failure that repeats until configuration or data changes: do not retry blindly."""

    transient = False


class ConnectionFailedError(TransientError, ConnectionError):
    """The server could not be reached, or dropped the connection."""


class OperationTimeoutError(TransientError, TimeoutError):
    """A network or storage call did not finish within its deadline."""


class ServerBusyError(TransientError):
    """The server asked us to slow down; ``retry_after`` says for how long, when it said."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: timedelta | None = None,
        mailbox_id: str | None = None,
        server_code: str | None = None,
        scope: ErrorScope | None = None,
    ) -> None:
        super().__init__(message, mailbox_id=mailbox_id, server_code=server_code, scope=scope)
        self.retry_after = retry_after

    def _extra(self) -> Mapping[str, Any]:
        return {"retry_after": self.retry_after}


class DeliveryUncertainError(TransientError):
    """A send was cut off (connection lost, deadline passed) after the message was handed to
    the server and before its answer: the server may or may not have taken it. The engine
    does not resend it blindly; ``RetryPolicy.expired_claim_policy`` decides, as for a claim
    that expired while Sending."""


class LeaseLostError(TransientError):
    """Another engine holds the mailbox lease or the email's send claim."""


class EngineStoppingError(TransientError):
    """The engine was asked to stop: a running workload stops before its next message or
    email, with everything before it recorded, and runs again on the next start."""


class StorageConflictError(TransientError):
    """A repository write raced with another writer; reading again and retrying is safe."""


class AuthenticationError(PermanentError):
    """The server refused the credentials (wrong password, revoked or expired token)."""


class ConfigurationError(PermanentError):
    """The mailbox or profile cannot work as configured (no profile, no credentials, ...)."""


class DuplicateMailboxError(ConfigurationError):
    """The user or queue already has a mailbox (one mailbox per user or queue); ``existing``
    is the id of that mailbox."""

    def __init__(
        self,
        message: str,
        *,
        existing: str,
        mailbox_id: str | None = None,
        server_code: str | None = None,
        scope: ErrorScope | None = None,
    ) -> None:
        super().__init__(message, mailbox_id=mailbox_id, server_code=server_code, scope=scope)
        self.existing = existing

    def _extra(self) -> Mapping[str, Any]:
        return {"existing": self.existing}


class EmailAddressNotApprovedError(ConfigurationError):
    """The organisation processes email only for approved addresses, and the mailbox's is not
    approved: its workloads are disabled until it is approved and tested again."""


class MessageRejectedError(PermanentError):
    """The server refused a message for good (SMTP 5xx, an EWS item error)."""

    default_scope = ErrorScope.ITEM

    def __init__(
        self,
        message: str,
        *,
        server_message: str | None = None,
        mailbox_id: str | None = None,
        server_code: str | None = None,
        scope: ErrorScope | None = None,
    ) -> None:
        super().__init__(message, mailbox_id=mailbox_id, server_code=server_code, scope=scope)
        self.server_message = server_message

    def _extra(self) -> Mapping[str, Any]:
        return {"server_message": self.server_message}


class RecipientsRefusedError(PermanentError):
    """Every recipient was refused; ``recipients`` maps each address to the server's reply."""

    default_scope = ErrorScope.ITEM

    def __init__(
        self,
        message: str,
        *,
        recipients: Mapping[str, str],
        mailbox_id: str | None = None,
        server_code: str | None = None,
        scope: ErrorScope | None = None,
    ) -> None:
        super().__init__(message, mailbox_id=mailbox_id, server_code=server_code, scope=scope)
        self.recipients = dict(recipients)

    def _extra(self) -> Mapping[str, Any]:
        return {"recipients": self.recipients}


class MalformedMessageError(PermanentError):
    """A message that cannot be parsed; ``reason`` says why and the raw copy stays on the server."""

    default_scope = ErrorScope.ITEM

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        mailbox_id: str | None = None,
        server_code: str | None = None,
        scope: ErrorScope | None = None,
    ) -> None:
        super().__init__(message, mailbox_id=mailbox_id, server_code=server_code, scope=scope)
        self.reason = reason

    def _extra(self) -> Mapping[str, Any]:
        return {"reason": self.reason}


class MessageTooLargeError(MessageRejectedError):
    """A message is larger than the configured limit (``size`` and ``limit`` in bytes; ``size``
    may be the size the server announced). It fails alone: it is not downloaded, or not sent."""

    def __init__(
        self,
        message: str,
        *,
        size: int,
        limit: int,
        server_message: str | None = None,
        mailbox_id: str | None = None,
        server_code: str | None = None,
        scope: ErrorScope | None = None,
    ) -> None:
        super().__init__(
            message,
            server_message=server_message,
            mailbox_id=mailbox_id,
            server_code=server_code,
            scope=scope,
        )
        self.size = size
        self.limit = limit

    def _extra(self) -> Mapping[str, Any]:
        return {**super()._extra(), "size": self.size, "limit": self.limit}
