"""exchangelib's exceptions as serversync errors: one translation for every EWS call.

exchangelib runs with its fail-fast retry policy, so every throttling answer, outage and
refusal reaches this module at once and the engine decides when to try again:

=============================================  ============================================
exchangelib                                    serversync
=============================================  ============================================
``UnauthorizedError`` (HTTP 401)               :class:`AuthenticationError` (mailbox)
``ErrorServerBusy`` (``BackOffMilliseconds``)  :class:`ServerBusyError` with ``retry_after``
other "try later" codes, HTTP 503, CAS errors  :class:`ServerBusyError` / transient (mailbox)
``ErrorTimeoutExpired`` (socket errors)        :class:`ConnectionFailedError` or
                                               :class:`OperationTimeoutError` (mailbox)
certificate not trusted, TLS misconfigured     :class:`ConfigurationError` (mailbox)
impersonation refused, no such mailbox,        :class:`ConfigurationError` (mailbox)
wrong URL (HTTP 4xx, redirects)
an item's own error (not found, corrupt,       :class:`MessageRejectedError` (item)
too large, refused recipients)
any other EWS response code                    :class:`TransientError` (mailbox): retried,
                                               and disabled after the engine's limit
=============================================  ============================================
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from datetime import timedelta
from typing import Final, TypeVar

import requests
from exchangelib import errors as ews_errors  # type: ignore[import-untyped]
from oauthlib.oauth2 import (  # type: ignore[import-untyped]
    InsecureTransportError,
    OAuth2Error,
)

from serversync.adapters.transports._connection import network_error
from serversync.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionFailedError,
    ErrorScope,
    MessageRejectedError,
    OperationTimeoutError,
    ServerBusyError,
    SyncError,
    TransientError,
)

__all__ = ["is_code", "translate"]

E = TypeVar("E", bound=BaseException)

# Exchange says "not now": throttling, a store or directory outage, a mailbox on the move.
_BUSY: Final = frozenset(
    {
        "ErrorServerBusy",
        "ErrorTooManyObjectsOpened",
        "ErrorExceededConnectionCount",
        "ErrorInternalServerTransientError",
        "ErrorConnectionFailedTransientError",
        "ErrorMailboxStoreUnavailable",
        "ErrorMailboxMoveInProgress",
        "ErrorMailboxFailover",
        "ErrorADUnavailable",
        "ErrorInsufficientResources",
        "ErrorNotEnoughMemory",
        "ErrorBatchProcessingStopped",
    }
)
# Repeats until an administrator changes something: rights, the mailbox, the URL, versions.
_CONFIGURATION: Final = frozenset(
    {
        "ErrorImpersonateUserDenied",
        "ErrorImpersonationDenied",
        "ErrorImpersonationFailed",
        "ErrorInvalidExchangeImpersonationHeaderData",
        "ErrorNonExistentMailbox",
        "ErrorAccessDenied",
        "ErrorNotDelegate",
        "ErrorMailboxConfiguration",
        "ErrorMailboxLogonFailed",
        "ErrorInvalidServerVersion",
        "ErrorIncorrectSchemaVersion",
        "ErrorInvalidSchemaVersionForMailboxVersion",
        "ErrorWrongServerVersion",
        "ErrorWrongServerVersionDelegate",
        "ErrorInvalidLicense",
        "ErrorUserNotAllowedByPolicy",
    }
)
# The account itself is refused (a disabled or expired login), like a wrong password.
_AUTHENTICATION: Final = frozenset(
    {"ErrorAccountDisabled", "ErrorPasswordExpired", "ErrorPasswordChangeRequired"}
)
# About one message only: the others and the session go on.
_ITEM: Final = frozenset(
    {
        "ErrorItemNotFound",
        "ErrorItemCorrupt",
        "ErrorCorruptData",
        "ErrorMimeContentConversionFailed",
        "ErrorMimeContentInvalid",
        "ErrorMimeContentInvalidBase64String",
        "ErrorContentConversionFailed",
        "ErrorUnsupportedMimeConversion",
        "ErrorMessageSizeExceeded",
        "ErrorAttachmentSizeLimitExceeded",
        "ErrorInvalidRecipients",
        "ErrorMissingRecipients",
        "ErrorMailRecipientNotFound",
        "ErrorInvalidSmtpAddress",
        "ErrorSendAsDenied",
        "ErrorItemSave",
        "ErrorItemSavePropertyError",
        "ErrorInvalidIdMalformed",
        "ErrorInvalidId",
        "ErrorInvalidChangeKey",
        "ErrorIrresolvableConflict",
        "ErrorStaleObject",
        "ErrorVirusDetected",
        "ErrorVirusMessageDeleted",
    }
)
_HTTP_STATUS = re.compile(r"Code: (\d{3})")
_SOAP_FAULT = re.compile(r"SOAP error code: (?:[\w-]+:)?(Error\w+) string: (.*?) actor:", re.S)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception behind it: causes, contexts, and the exceptions that
    requests and urllib3 keep in ``args`` and ``reason``."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked += list(current.args)
        todo += [e for e in linked if isinstance(e, BaseException)]


def _behind(exc: BaseException, kind: type[E]) -> E | None:
    return next((e for e in _chain(exc) if isinstance(e, kind)), None)


def is_code(exc: BaseException, code: str) -> bool:
    """Whether ``exc`` is exchangelib's exception for the EWS response code ``code``."""
    return type(exc).__name__ == code and isinstance(exc, ews_errors.EWSError)


def _code(exc: BaseException) -> tuple[str | None, str]:
    """The EWS response code of ``exc`` (if it has one) and what the server said."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, ews_errors.ResponseMessageError) and type(exc).__name__.startswith("Error"):
        return type(exc).__name__, detail
    if isinstance(exc, ews_errors.SOAPError):
        # A fault with a code exchangelib has no class for.
        found = _SOAP_FAULT.search(detail)
        if found is not None:
            return found.group(1), found.group(2)
    return None, detail


def _network(exc: BaseException, what: str, mailbox_id: str | None) -> SyncError:
    """A socket or TLS failure found behind an exchangelib or requests exception."""
    found = _behind(exc, ssl.SSLError) or _behind(exc, OSError)
    if found is not None and not isinstance(found, requests.RequestException):
        return network_error(found, what, mailbox_id=mailbox_id)
    if _behind(exc, requests.Timeout) is not None:
        return OperationTimeoutError(f"{what}: timed out", mailbox_id=mailbox_id)
    return ConnectionFailedError(f"{what}: {exc}", mailbox_id=mailbox_id)


def translate(
    exc: BaseException, what: str, *, mailbox_id: str | None, item: bool = False
) -> SyncError:
    """The serversync error for ``exc``, raised while doing ``what``.

    ``item`` says the call concerned one message, so that an item's own error (not found,
    corrupt, refused) fails that message only.
    """
    if isinstance(exc, SyncError):
        return exc
    code, detail = _code(exc)
    message = f"{what}: {code + ': ' if code else ''}{detail}"
    box = mailbox_id
    if isinstance(exc, ews_errors.UnauthorizedError):
        return AuthenticationError(
            f"{what}: the server refused the credentials (HTTP 401)",
            mailbox_id=box,
            server_code="HTTP 401",
        )
    if isinstance(exc, ews_errors.ErrorServerBusy):
        back_off = getattr(exc, "back_off", None)
        retry_after = timedelta(seconds=back_off) if back_off else None
        return ServerBusyError(
            message, retry_after=retry_after, mailbox_id=box, server_code="ErrorServerBusy"
        )
    if isinstance(exc, ews_errors.RateLimitError):
        return ServerBusyError(
            message, retry_after=timedelta(seconds=exc.wait), mailbox_id=box, server_code=code
        )
    if isinstance(exc, ews_errors.ErrorTimeoutExpired | ews_errors.ErrorClientDisconnected):
        # exchangelib re-raises requests' connection errors (refused, reset, dropped, timed
        # out) as ErrorTimeoutExpired; what happened is behind it.
        return _network(exc, what, box)
    if code in _BUSY:
        return ServerBusyError(message, mailbox_id=box, server_code=code)
    if code in _AUTHENTICATION:
        return AuthenticationError(message, mailbox_id=box, server_code=code)
    if code in _CONFIGURATION:
        return ConfigurationError(message, mailbox_id=box, server_code=code)
    if code in _ITEM:
        if item:
            return MessageRejectedError(
                message, server_message=detail, mailbox_id=box, server_code=code
            )
        # Outside one message's call (the folder or session is concerned): not now.
        return TransientError(message, mailbox_id=box, server_code=code)
    if code is not None:
        # Not in the lists above: the engine retries, and disables the workload after its
        # limit of consecutive failures, as Dynamics does with unknown server errors.
        scope = ErrorScope.ITEM if item else None
        return TransientError(message, mailbox_id=box, server_code=code, scope=scope)
    return _library_error(exc, what, message, box, item=item)


def _library_error(
    exc: BaseException, what: str, message: str, box: str | None, *, item: bool
) -> SyncError:
    """Errors that carry no EWS response code: HTTP, TLS, sockets, OAuth, bad input."""
    if isinstance(exc, ews_errors.RedirectError):
        return ConfigurationError(
            f"{what}: the server redirects to {exc.url}; put that URL in the profile",
            mailbox_id=box,
        )
    if isinstance(exc, ews_errors.CASError):
        return ServerBusyError(message, mailbox_id=box, server_code=exc.cas_error)
    if isinstance(exc, ews_errors.MalformedResponseError):
        status = _HTTP_STATUS.search(str(exc))
        if status is not None and status.group(1).startswith("4"):
            # 403, 404, 405 ...: not an EWS endpoint, or not one this account may use.
            return ConfigurationError(
                f"{what}: the server answered HTTP {status.group(1)}; check the EWS URL",
                mailbox_id=box,
                server_code=f"HTTP {status.group(1)}",
            )
        return ConnectionFailedError(message, mailbox_id=box)
    if isinstance(exc, ews_errors.TransportError | requests.RequestException | OSError):
        # TLS failures (exchangelib's TransportError), socket errors, SOAP that cannot be read.
        return _network(exc, what, box)
    oauth = _oauth_error(exc, what, box)
    if oauth is not None:
        return oauth
    if isinstance(exc, ValueError | TypeError) and item:
        # exchangelib refused the input before sending it (an address it cannot carry).
        return MessageRejectedError(f"{what}: {exc}", server_message=str(exc), mailbox_id=box)
    if isinstance(exc, ews_errors.EWSError | ValueError | TypeError | AttributeError):
        return ConfigurationError(message, mailbox_id=box)
    raise exc


def _oauth_error(exc: BaseException, what: str, box: str | None) -> SyncError | None:
    if isinstance(exc, InsecureTransportError):
        return ConfigurationError(
            f"{what}: OAuth 2.0 tokens are only sent over HTTPS; the EWS URL is plain HTTP",
            mailbox_id=box,
        )
    if isinstance(exc, OAuth2Error):
        return AuthenticationError(f"{what}: {exc.description or exc}", mailbox_id=box)
    return None
