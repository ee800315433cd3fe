"""What the IMAP and POP3 adapters share when they connect: the endpoint and credential
checks, TLS contexts, and socket-error translation."""

from __future__ import annotations

import os
import ssl

from serversync.errors import (
    ConfigurationError,
    ConnectionFailedError,
    OperationTimeoutError,
    SyncError,
)
from serversync.model import (
    CredentialKind,
    Credentials,
    EmailServerProfile,
    ServerEndpoint,
    TlsMode,
)

__all__ = ["incoming_server", "login_credentials", "network_error", "tls_context"]

# What a mail server accepts at login; application secrets are for a token source.
_LOGIN_KINDS = frozenset({CredentialKind.PASSWORD, CredentialKind.OAUTH2_ACCESS_TOKEN})

# Handshake failures that repeat until someone fixes the profile (TLS on a plain port, a
# server stuck on an old protocol), unlike a reset in the middle of a handshake.
_PERMANENT_TLS_REASONS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "UNSUPPORTED_PROTOCOL",
        "NO_PROTOCOLS_AVAILABLE",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "HTTP_REQUEST",
        "PACKET_LENGTH_TOO_LONG",
    }
)


def incoming_server(
    profile: EmailServerProfile,
    credentials: Credentials | None,
    *,
    protocol: str,
    mailbox_id: str | None = None,
) -> tuple[ServerEndpoint, Credentials]:
    """The profile's incoming server and the credentials for it; both must be there."""
    endpoint = profile.incoming
    if endpoint is None:
        raise ConfigurationError(
            f"profile {profile.name!r} has no incoming server", mailbox_id=mailbox_id
        )
    if credentials is None:
        raise ConfigurationError(
            f"{protocol} needs credentials, and the profile's credential source gave none",
            mailbox_id=mailbox_id,
        )
    return endpoint, login_credentials(credentials, protocol=protocol, mailbox_id=mailbox_id)


def login_credentials(
    credentials: Credentials, *, protocol: str, mailbox_id: str | None = None
) -> Credentials:
    """``credentials`` when a server login can use them: a password or an access token.

    An application's client secret or certificate is exchanged for tokens by a token source
    (Microsoft Graph's); sent as a password it would only fail the login, or leak.
    """
    if credentials.kind not in _LOGIN_KINDS:
        raise ConfigurationError(
            f"{protocol} logs in with a password or an OAuth 2.0 access token, not with "
            f"an application's {credentials.kind.value.removeprefix('oauth2_').replace('_', ' ')}",
            mailbox_id=mailbox_id,
        )
    return credentials


def tls_context(
    endpoint: ServerEndpoint, *, mailbox_id: str | None = None
) -> ssl.SSLContext | None:
    """A client context that verifies the server unless the profile says otherwise, or
    ``None`` for a plain-text endpoint.

    ``ca_file`` replaces the system's trust store; ``verify_certificate=False`` turns off
    both chain and host name checks (a profile must ask for that explicitly).
    """
    if endpoint.tls is TlsMode.NONE:
        return None
    # Building a context (and reading its CA file) cost about 1 ms of CPU a connection, most
    # of an idle poll's TLS setup: contexts are shared between connections, one for each CA
    # file as it is on disk (a replaced file gets a new context).
    key = (endpoint.ca_file, endpoint.verify_certificate, _file_version(endpoint.ca_file))
    context = _contexts.get(key)
    if context is not None:
        return context
    try:
        context = ssl.create_default_context(cafile=endpoint.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"cannot load the CA file {endpoint.ca_file!r}: {exc}", mailbox_id=mailbox_id
        ) from exc
    if not endpoint.verify_certificate:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if len(_contexts) >= _MAX_CONTEXTS:
        _contexts.clear()
    _contexts[key] = context
    return context


_ContextKey = tuple[str | None, bool, tuple[int, int, int] | None]
_contexts: dict[_ContextKey, ssl.SSLContext] = {}
_MAX_CONTEXTS = 64


def _file_version(path: str | None) -> tuple[int, int, int] | None:
    """What tells one version of a CA file from another: its inode, size and change time."""
    if path is None:
        return None
    try:
        found = os.stat(path)
    except OSError:
        return None  # reading it fails too, with the error the caller reports
    return (found.st_ino, found.st_size, found.st_mtime_ns)


def network_error(exc: OSError, what: str, *, mailbox_id: str | None = None) -> SyncError:
    """The serversync error for a socket or TLS failure while doing ``what``."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        # Permanent, and a configuration matter rather than bad credentials: retrying cannot
        # make an untrusted certificate trusted, and whoever fixes it (a CA file in the
        # profile, a new server certificate) is the administrator, not the mailbox owner.
        return ConfigurationError(
            f"{what}: the server's certificate is not trusted ({exc.verify_message})",
            mailbox_id=mailbox_id,
        )
    if isinstance(exc, ssl.SSLError) and exc.reason in _PERMANENT_TLS_REASONS:
        return ConfigurationError(
            f"{what}: the TLS handshake failed ({exc.reason}); check the port and TLS mode",
            mailbox_id=mailbox_id,
        )
    if isinstance(exc, TimeoutError):
        return OperationTimeoutError(f"{what}: timed out", mailbox_id=mailbox_id)
    detail = exc.strerror or str(exc) or type(exc).__name__
    return ConnectionFailedError(f"{what}: {detail}", mailbox_id=mailbox_id)
