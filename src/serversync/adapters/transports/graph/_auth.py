"""Where Graph access tokens come from: the credential provider's token, a host callback
(delegated tokens the host refreshes), or MSAL client credentials with its token cache."""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any, Final, Protocol, final

import msal  # type: ignore[import-untyped]

from serversync.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionFailedError,
    OperationTimeoutError,
    TransientError,
)
from serversync.model import CredentialKind, Credentials, Mailbox

__all__ = [
    "GRAPH_DEFAULT_SCOPE",
    "AccessTokenCredentials",
    "GraphTokenSource",
    "MsalClientCredentials",
    "TokenCallback",
]

GRAPH_DEFAULT_SCOPE: Final = "https://graph.microsoft.com/.default"
"""The scope of application permissions on Microsoft Graph (client credentials)."""

# Token endpoint errors an administrator has to fix (RFC 6749 §5.2, Entra ID's AADSTS codes:
# 7000215 wrong secret, 7000222 expired secret, 65001 no consent).
_REFUSED: Final = frozenset(
    {"invalid_client", "invalid_grant", "unauthorized_client", "invalid_scope", "invalid_request"}
)
_AADSTS: Final = re.compile(r"AADSTS\d+")
_PEM: Final = re.compile(r"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.DOTALL)
_CLIENT_KINDS: Final = (
    CredentialKind.OAUTH2_CLIENT_SECRET,
    CredentialKind.OAUTH2_CLIENT_CERTIFICATE,
)


def _client_credential(credentials: Credentials, mailbox: Mailbox) -> str | dict[str, str]:
    """What MSAL takes as ``client_credential``: the secret, or the certificate's private
    key and certificate (MSAL signs its assertion with PS256 and the SHA-256 thumbprint)."""
    secret = credentials.secret.reveal()
    if credentials.kind is CredentialKind.OAUTH2_CLIENT_SECRET:
        return secret
    blocks = {m.group(1): m.group(0) for m in _PEM.finditer(secret)}
    key = next((v for k, v in blocks.items() if k.endswith("PRIVATE KEY")), None)
    certificate = blocks.get("CERTIFICATE")
    if key is None or certificate is None:
        raise ConfigurationError(
            "a client certificate credential needs PEM text with the private key and the "
            "certificate",
            mailbox_id=mailbox.id,
        )
    return {"private_key": key, "public_certificate": certificate}


class GraphTokenSource(Protocol):
    """Gives the Graph transports an access token for a mailbox.

    ``credentials`` is what the engine's credential provider resolved for the mailbox.
    ``refresh`` is true when Graph refused the last token (401): return a new one, or raise
    :class:`~serversync.errors.AuthenticationError` when there is none.
    """

    async def token(
        self, mailbox: Mailbox, credentials: Credentials | None, *, refresh: bool
    ) -> str:
        """An access token for ``mailbox``."""
        ...


@final
class AccessTokenCredentials:
    """The access token the credential provider resolved
    (:attr:`CredentialKind.OAUTH2_ACCESS_TOKEN`), as it is; the default token source.

    The host refreshes it in its credential provider; a token Graph refuses raises
    :class:`AuthenticationError`.
    """

    async def token(
        self, mailbox: Mailbox, credentials: Credentials | None, *, refresh: bool
    ) -> str:
        """The credentials' token."""
        if credentials is None or credentials.kind is not CredentialKind.OAUTH2_ACCESS_TOKEN:
            raise ConfigurationError(
                "Microsoft Graph needs an OAuth 2.0 access token (CredentialKind."
                "OAUTH2_ACCESS_TOKEN) or a token source such as MsalClientCredentials",
                mailbox_id=mailbox.id,
            )
        if refresh:
            raise AuthenticationError(
                "Microsoft Graph refused the access token (expired or revoked)",
                mailbox_id=mailbox.id,
            )
        return credentials.secret.reveal()


@final
class TokenCallback:
    """Tokens from a host callback, ``callback(mailbox, refresh)``: for delegated tokens the
    host keeps (an authorization-code flow and its refresh tokens live in the host).

    The callback raises :class:`AuthenticationError` when the user's grant is gone.
    """

    def __init__(self, callback: Callable[[Mailbox, bool], Awaitable[str]]) -> None:
        self._callback = callback

    async def token(
        self, mailbox: Mailbox, credentials: Credentials | None, *, refresh: bool
    ) -> str:
        """The callback's token."""
        return await self._callback(mailbox, refresh)


def _reason(result: Mapping[str, Any]) -> str:
    error = str(result.get("error", "error"))
    description = str(result.get("error_description") or "")
    code = _AADSTS.search(description)
    return f"{error} ({code.group(0)})" if code else error


@final
class MsalClientCredentials:
    """Application tokens through MSAL's client-credentials flow, with MSAL's token cache.

    The credential provider resolves ``Credentials(username=<application (client) id>,
    secret=<client secret>, kind=CredentialKind.OAUTH2_CLIENT_SECRET)``, or with
    ``kind=CredentialKind.OAUTH2_CLIENT_CERTIFICATE`` a secret of PEM text holding the
    certificate's private key and the certificate; ``authority`` is
    ``https://login.microsoftonline.com/<tenant>``. MSAL serves tokens from its cache until
    they near expiry; when Graph refuses one the cached token is dropped and a new one is
    asked for. ``token_cache`` (an ``msal.TokenCache``, or a ``SerializableTokenCache`` the
    host persists) is shared by every application; by default each client id and secret
    has its own in-memory cache. ``http_client`` is handed to MSAL (tests point it at a fake
    token endpoint); every token request runs in a thread under ``timeout``.

    A refused client (wrong or expired secret, consent revoked) raises
    :class:`AuthenticationError` naming Entra ID's error code, never the secret.
    """

    def __init__(
        self,
        *,
        authority: str,
        scopes: tuple[str, ...] = (GRAPH_DEFAULT_SCOPE,),
        http_client: Any = None,
        token_cache: Any = None,
        timeout: timedelta = timedelta(seconds=30),
    ) -> None:
        self._authority = authority
        self._scopes = list(scopes)
        self._http_client = http_client
        self._cache = token_cache
        self._timeout = timeout
        self._apps: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def _app(self, client_id: str, secret: str, credential: str | dict[str, str]) -> Any:
        # Keyed by a digest: the secret itself is kept only inside MSAL's application.
        key = (client_id, hashlib.sha256(secret.encode()).hexdigest())
        with self._lock:
            app = self._apps.get(key)
            if app is None:
                extra: dict[str, Any] = {}
                if self._http_client is not None:
                    extra["http_client"] = self._http_client
                app = msal.ConfidentialClientApplication(
                    client_id,
                    client_credential=credential,
                    authority=self._authority,
                    # One cache per secret unless the host shares one: a token cached for
                    # the right secret is not handed out for a wrong one.
                    token_cache=self._cache if self._cache is not None else msal.TokenCache(),
                    **extra,
                )
                self._apps[key] = app
            return app

    def _acquire(
        self, client_id: str, secret: str, credential: str | dict[str, str], refresh: bool
    ) -> Mapping[str, Any]:
        app = self._app(client_id, secret, credential)
        if refresh:
            cache = app.token_cache
            for token in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
                if token.get("client_id") == client_id:
                    cache.remove_at(token)
        result: Mapping[str, Any] = app.acquire_token_for_client(scopes=self._scopes)
        return result

    async def token(
        self, mailbox: Mailbox, credentials: Credentials | None, *, refresh: bool
    ) -> str:
        """A token for the application the credentials name."""
        if credentials is None or credentials.kind not in _CLIENT_KINDS:
            raise ConfigurationError(
                "MSAL client credentials need the application's client id and its secret or "
                "certificate (CredentialKind.OAUTH2_CLIENT_SECRET, OAUTH2_CLIENT_CERTIFICATE)",
                mailbox_id=mailbox.id,
            )
        credential = _client_credential(credentials, mailbox)
        seconds = self._timeout.total_seconds()
        try:
            async with asyncio.timeout(seconds):
                result = await asyncio.to_thread(
                    self._acquire,
                    credentials.username,
                    credentials.secret.reveal(),
                    credential,
                    refresh,
                )
        except TimeoutError as exc:
            raise OperationTimeoutError(
                f"no token from {self._authority} within {seconds:g} s", mailbox_id=mailbox.id
            ) from exc
        except ValueError as exc:
            # The message is left out: it could quote the key MSAL failed to read.
            raise ConfigurationError(
                f"MSAL refused the authority {self._authority} or the client credential "
                f"({type(exc).__name__})",
                mailbox_id=mailbox.id,
            ) from exc
        except OSError as exc:  # requests' errors are OSErrors
            raise ConnectionFailedError(
                f"cannot reach the token endpoint of {self._authority}: {type(exc).__name__}",
                mailbox_id=mailbox.id,
            ) from exc
        token = result.get("access_token")
        if isinstance(token, str) and token:
            return token
        reason = _reason(result)
        if str(result.get("error")) in _REFUSED:
            raise AuthenticationError(
                f"Entra ID refused the application {credentials.username}: {reason}",
                mailbox_id=mailbox.id,
                server_code=str(result.get("error")),
            )
        raise TransientError(
            f"no token from Entra ID for the application {credentials.username}: {reason}",
            mailbox_id=mailbox.id,
            server_code=str(result.get("error")),
        )
