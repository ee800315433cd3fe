"""One EWS connection: exchangelib's Account for one mailbox, its own HTTP protocol object,
and the one worker thread every call runs in.

exchangelib blocks, so each call runs in the connection's worker thread, one at a time and in
order, under a deadline from :class:`~serversync.settings.Timeouts`; exchangelib's socket
timeout for that call is the same deadline plus a second, so the deadline is what the caller
sees. A call that misses its deadline, or is cancelled, goes on in its thread until that
socket timeout: the connection then refuses further calls, and closes its HTTP sessions in
the same thread once the stray call has returned.

exchangelib keeps protocols (HTTP sessions, TLS settings) in a process-wide cache keyed by
endpoint and credentials, and configures TLS through class attributes. A connection instead
gets a protocol of its own, built outside that cache, whose sessions carry this profile's TLS
settings and read responses in large chunks; nothing global is changed.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import os
import re
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import timedelta
from typing import Any, Final, TypeVar, final
from urllib.parse import urlsplit

import attrs
import requests
import requests.adapters
from exchangelib import (  # type: ignore[import-untyped]
    DELEGATE,
    IMPERSONATION,
    UTC,
    Account,
    Configuration,
    FolderCollection,
    OAuth2AuthorizationCodeCredentials,
)
from exchangelib import Credentials as PasswordCredentials
from exchangelib.fields import FieldPath  # type: ignore[import-untyped]
from exchangelib.folders import (  # type: ignore[import-untyped]
    DeletedItems,
    Drafts,
    Folder,
    Inbox,
    JunkEmail,
    MsgFolderRoot,
    Root,
    SentItems,
)
from exchangelib.properties import (  # type: ignore[import-untyped]
    DistinguishedFolderId,
)
from exchangelib.properties import Mailbox as EwsMailbox
from exchangelib.protocol import (  # type: ignore[import-untyped]
    CachingProtocol,
    FailFast,
    Protocol,
)
from exchangelib.transport import BASIC, NTLM, OAUTH2  # type: ignore[import-untyped]
from exchangelib.version import EXCHANGE_2013_SP1, Version  # type: ignore[import-untyped]
from oauthlib.oauth2 import OAuth2Token  # type: ignore[import-untyped]

from serversync.adapters.transports._connection import login_credentials
from serversync.adapters.transports._ews_errors import translate
from serversync.adapters.transports._ews_stats import EwsStats
from serversync.errors import ConfigurationError, ConnectionFailedError, OperationTimeoutError
from serversync.model import (
    AuthenticationProtocol,
    CredentialKind,
    Credentials,
    ServerEndpoint,
    TlsMode,
)
from serversync.settings import Timeouts

__all__ = [
    "EWS_PATH",
    "READ_CHUNK",
    "EwsConnection",
    "EwsLogin",
    "WellKnownFolders",
    "ews_url",
    "tls_verification",
]

T = TypeVar("T")

EWS_PATH: Final = "/EWS/Exchange.asmx"
# exchangelib parses every response from requests' iter_content(), whose chunk size defaults
# to one byte: one Python iteration per byte of XML, which makes MIME downloads 20 to 30 times
# slower (exchangelib issue 869). Responses are read in chunks of this size instead.
READ_CHUNK: Final = 64 * 1024
# The oldest Exchange still supported on premises; newer servers answer older requests, and
# exchangelib moves to the version a server reports.
_REQUEST_VERSION: Final = EXCHANGE_2013_SP1
_OPERATION = re.compile(rb"<s:Body><m:(\w+)")
_FOLDER_FIELDS: Final = ("name", "parent_folder_id", "folder_class")
# How much longer than a call's deadline its socket may wait (see _run_in_thread).
_SOCKET_GRACE_SECONDS: Final = 1.0


def ews_url(endpoint: ServerEndpoint, *, mailbox_id: str | None = None) -> str:
    """The EWS URL of an endpoint whose ``host`` is the URL, or a host (name[:port][/path])
    served at ``https://host/EWS/Exchange.asmx``.

    Plain ``http`` only when the profile asks for it with ``TlsMode.NONE``.
    """
    host = endpoint.host.strip()
    if "://" not in host:
        scheme = "http" if endpoint.tls is TlsMode.NONE else "https"
        netloc, slash, path = host.partition("/")
        if endpoint.port is not None and ":" not in netloc:
            netloc = f"{netloc}:{endpoint.port}"
        return f"{scheme}://{netloc}{slash + path if path else EWS_PATH}"
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"{host!r} is not an EWS URL", mailbox_id=mailbox_id)
    if parts.scheme == "http" and endpoint.tls is not TlsMode.NONE:
        raise ConfigurationError(
            f"the EWS URL {host} is plain HTTP but the profile asks for TLS; "
            "use https, or TlsMode.NONE to allow plain text",
            mailbox_id=mailbox_id,
        )
    netloc = parts.netloc
    if endpoint.port is not None and parts.port is None:
        netloc = f"{netloc}:{endpoint.port}"
    return parts._replace(netloc=netloc, path=parts.path or EWS_PATH).geturl()


def tls_verification(endpoint: ServerEndpoint, mailbox_id: str) -> bool | str | None:
    """requests' ``verify`` for this endpoint, or None for requests' own trust store."""
    if not endpoint.verify_certificate:
        return False
    if endpoint.ca_file is None:
        return None
    if not os.path.exists(endpoint.ca_file):
        raise ConfigurationError(
            f"cannot load the CA file {endpoint.ca_file!r}: no such file", mailbox_id=mailbox_id
        )
    return endpoint.ca_file


class _ClosingAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter whose ``close()`` closes the sockets it keeps for reuse.

    Since urllib3 2, a pool manager that forgets its pools no longer closes them: a pool, and
    the idle connection in it, lives on as long as any response that refers to it (until
    garbage collection, for a response in a reference cycle). Closing the session must end
    the connection now.
    """

    def close(self) -> None:
        pools = self.poolmanager.pools
        # keys() takes a copy under the container's lock; iterating it directly is refused.
        for key in pools.keys():  # noqa: SIM118
            with suppress(KeyError):  # forgotten in the meantime: nothing left to close
                pools[key].close()
        super().close()


class _TlsAdapter(_ClosingAdapter):
    """Verifies servers against the profile's CA file (or not at all, when the profile says
    so), whatever the session, the request or ``REQUESTS_CA_BUNDLE`` say."""

    def __init__(self, verify: bool | str) -> None:
        self._verify = verify
        # As exchangelib's own adapter: one connection, and no retries below exchangelib.
        super().__init__(pool_connections=1, pool_maxsize=1, max_retries=0, pool_block=True)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        super().cert_verify(conn, url, self._verify, cert)

    def get_connection_with_tls_context(
        self,
        request: requests.PreparedRequest,
        verify: Any,
        proxies: dict[str, str] | None = None,
        cert: Any = None,
    ) -> Any:
        return super().get_connection_with_tls_context(
            request, self._verify, proxies=proxies, cert=cert
        )


def _read(
    response: requests.Response, stats: EwsStats, chunk_size: int | None = None
) -> Iterator[bytes]:
    """``response.iter_content()``: large chunks, counted, when exchangelib parses a
    response (it passes no chunk size); as requests has it otherwise (loading ``content``)."""
    if chunk_size is not None:
        yield from requests.Response.iter_content(response, chunk_size)
        return
    for chunk in requests.Response.iter_content(response, READ_CHUNK):
        stats._count_read(len(chunk))
        yield chunk


class _UncachedProtocolType(CachingProtocol):  # type: ignore[misc]
    """Builds protocols outside exchangelib's process-wide cache: each connection owns one
    and closes it."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return type.__call__(cls, *args, **kwargs)


class _SessionProtocol(Protocol, metaclass=_UncachedProtocolType):  # type: ignore[misc]
    """exchangelib's protocol with this connection's TLS settings and chunked reads."""

    # exchangelib mounts an adapter of this class for the EWS endpoint in every session.
    HTTP_ADAPTER_CLS = _ClosingAdapter

    def __init__(self, *, config: Any, verify: bool | str | None, stats: EwsStats) -> None:
        super().__init__(config=config)
        self._verify = verify
        self._stats = stats

    def create_session(self) -> Any:
        session = super().create_session()
        if self._verify is not None:
            session.mount(self.service_endpoint, _TlsAdapter(self._verify))
        session.hooks["response"].append(self._on_response)
        return session

    def _on_response(
        self, response: requests.Response, *args: object, **kwargs: object
    ) -> requests.Response:
        body = response.request.body
        found = _OPERATION.search(body[:4096]) if isinstance(body, bytes) else None
        self._stats._count_request(found.group(1).decode() if found else "unknown")
        # The instance attribute shadows the method for this response only; it refers to the
        # response weakly, so the response is no reference cycle and is freed with its last use.
        reader = functools.partial(_read, weakref.proxy(response), self._stats)
        response.__dict__["iter_content"] = reader
        return response


class _PasswordCredentials(PasswordCredentials):  # type: ignore[misc]
    # Compared by identity: exchangelib's protocol cache is keyed by credentials, and a key
    # of this connection's own never meets another's (or the host's own exchangelib use).
    __eq__ = object.__eq__
    __hash__ = object.__hash__


class _TokenCredentials(OAuth2AuthorizationCodeCredentials):  # type: ignore[misc]
    __eq__ = object.__eq__
    __hash__ = object.__hash__


@attrs.frozen(kw_only=True)
class EwsLogin:
    """Who connects, to which mailbox, and how."""

    address: str
    url: str
    credentials: Credentials = attrs.field(repr=False)
    authentication: AuthenticationProtocol
    impersonation: bool
    verify: bool | str | None


def _exchangelib_credentials(login: EwsLogin, mailbox_id: str) -> tuple[Any, str]:
    credentials = login_credentials(login.credentials, protocol="EWS", mailbox_id=mailbox_id)
    secret = credentials.secret.reveal()
    if credentials.kind is CredentialKind.OAUTH2_ACCESS_TOKEN:
        token = OAuth2Token({"access_token": secret, "token_type": "Bearer"})
        return _TokenCredentials(access_token=token), OAUTH2
    if login.authentication is AuthenticationProtocol.OAUTH:
        raise ConfigurationError(
            "the profile authenticates with OAuth, but the credentials are a password; "
            "supply an OAuth 2.0 access token",
            mailbox_id=mailbox_id,
        )
    if login.authentication in (AuthenticationProtocol.NTLM, AuthenticationProtocol.NEGOTIATE):
        return _PasswordCredentials(credentials.username, secret), NTLM
    # Basic for Basic and for Auto Detect: detecting would cost a request outside this
    # connection's TLS settings.
    return _PasswordCredentials(credentials.username, secret), BASIC


@attrs.frozen(kw_only=True)
class WellKnownFolders:
    """The distinguished folders of the mailbox, as exchangelib folder objects."""

    root: Any
    inbox: Any
    sent: Any
    top: Any
    special: dict[str, str]
    """Folder id -> RFC 6154 special use, for the folders Exchange names (Sent, Drafts...)."""


_SPECIAL_USE: Final = {
    SentItems: "\\Sent",
    Drafts: "\\Drafts",
    DeletedItems: "\\Trash",
    JunkEmail: "\\Junk",
}


class _State(enum.Enum):
    OPEN = "open"
    BROKEN = "broken"
    CLOSED = "closed"


@final
class EwsConnection:
    """One mailbox's exchangelib Account, and the worker thread its calls run in."""

    def __init__(self, login: EwsLogin, *, mailbox_id: str, timeouts: Timeouts, stats: EwsStats):
        self.login = login
        self.mailbox_id = mailbox_id
        self._timeouts = timeouts
        self._stats = stats
        # One thread: exchangelib gets one HTTP connection per connection, and calls keep
        # their order (the close after a stray call runs once that call has returned).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serversync-ews")
        self._state = _State.OPEN
        self._why_broken = ""
        self._protocol: Any = None
        self.account: Any = None
        self.folders: WellKnownFolders | None = None

    @classmethod
    async def open(
        cls, login: EwsLogin, *, mailbox_id: str, timeouts: Timeouts, stats: EwsStats
    ) -> EwsConnection:
        """Build the account and fetch the well-known folders (which also checks the
        credentials and, with impersonation, the right to impersonate)."""
        connection = cls(login, mailbox_id=mailbox_id, timeouts=timeouts, stats=stats)
        try:
            await connection.call(
                f"connecting to {login.url} for {login.address}",
                connection._connect_in_thread,
                limit=timeouts.connect,
            )
        except BaseException:
            await connection.aclose()
            raise
        stats._count("connections")
        return connection

    @property
    def well_known(self) -> WellKnownFolders:
        """The distinguished folders, fetched when the connection opened."""
        assert self.folders is not None, "the connection is not open"
        return self.folders

    # -- in the worker thread ---------------------------------------------------------------

    def _connect_in_thread(self) -> None:
        login = self.login
        credentials, auth_type = _exchangelib_credentials(login, self.mailbox_id)
        config = Configuration(
            service_endpoint=login.url,
            credentials=credentials,
            auth_type=auth_type,
            version=Version(build=_REQUEST_VERSION),
            # exchangelib would otherwise sleep and retry on throttling inside the call;
            # the engine decides when to come back (ServerBusyError.retry_after).
            retry_policy=FailFast(),
            max_connections=1,
        )
        account = Account(
            login.address,
            config=config,
            autodiscover=False,
            access_type=IMPERSONATION if login.impersonation else DELEGATE,
            default_timezone=UTC,
        )
        # Account() registered a protocol in exchangelib's process-wide cache; the key is
        # this connection's own (credentials compare by identity), so the entry is dropped
        # and the account uses a protocol that belongs to this connection alone.
        with CachingProtocol._protocol_cache_lock, suppress(KeyError):
            del Protocol[config]
        self._protocol = _SessionProtocol(config=config, verify=login.verify, stats=self._stats)
        self._protocol.TIMEOUT = self._timeouts.connect.total_seconds()
        account.protocol = self._protocol
        self.account = account
        self.folders = self._fetch_folders(account)

    def _fetch_folders(self, account: Any) -> WellKnownFolders:
        owner = EwsMailbox(email_address=account.primary_smtp_address)
        root = Root(
            account=account, _distinguished_id=DistinguishedFolderId(id="root", mailbox=owner)
        )
        kinds = (Inbox, SentItems, MsgFolderRoot, Drafts, DeletedItems, JunkEmail)
        wanted = [
            kind(
                root=root,
                _distinguished_id=DistinguishedFolderId(
                    id=kind.DISTINGUISHED_FOLDER_ID, mailbox=owner
                ),
            )
            for kind in kinds
        ]
        fields = {FieldPath(field=Folder.get_field_by_fieldname(f)) for f in _FOLDER_FIELDS}
        found = list(FolderCollection(account=account, folders=wanted).get_folders(fields))
        inbox, sent, top = found[:3]
        for required in (inbox, sent, top):
            if isinstance(required, Exception):
                raise required
        special = {
            folder.id: _SPECIAL_USE[type(folder)]
            for folder in found
            if not isinstance(folder, Exception) and type(folder) in _SPECIAL_USE
        }
        return WellKnownFolders(root=root, inbox=inbox, sent=sent, top=top, special=special)

    def _run_in_thread(self, what: str, call: Callable[[], T], seconds: float, item: bool) -> T:
        if self._protocol is not None:
            # exchangelib's socket timeout for this call: a stray thread ends with it. This
            # thread may send its request before the event loop starts the deadline, and a
            # busy loop notices the deadline late; the grace lets the deadline fire first, so
            # a call still running at it ends the session.
            self._protocol.TIMEOUT = seconds + _SOCKET_GRACE_SECONDS
        try:
            return call()
        except Exception as exc:
            raise translate(exc, what, mailbox_id=self.mailbox_id, item=item) from exc

    def _close_in_thread(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            with suppress(Exception):  # the work is done; a failed close loses only sockets
                protocol.close()

    # -- on the event loop ------------------------------------------------------------------

    async def call(
        self, what: str, call: Callable[[], T], *, limit: timedelta, item: bool = False
    ) -> T:
        """Run ``call`` in the worker thread under ``limit``, its errors translated.

        ``item`` says the call concerns one message (its errors fail that message only).
        """
        if self._state is not _State.OPEN:
            why = "it is closed" if self._state is _State.CLOSED else self._why_broken
            raise ConnectionFailedError(
                f"the EWS connection cannot be used: {why}", mailbox_id=self.mailbox_id
            )
        seconds = limit.total_seconds()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            self._executor, self._run_in_thread, what, call, seconds, item
        )
        try:
            async with asyncio.timeout(seconds):
                return await future
        except TimeoutError as exc:
            if future.done() and not future.cancelled():
                # The call ended as the deadline passed (the event loop was late to notice):
                # its own outcome, already translated, is the answer.
                error = future.exception()
                if error is None:
                    return future.result()
                raise error from None
            raise OperationTimeoutError(
                f"EWS {what} did not finish within {seconds:g} s", mailbox_id=self.mailbox_id
            ) from exc
        finally:
            if not future.done() or future.cancelled():
                self._state = _State.BROKEN
                self._why_broken = f"an earlier call ({what}) was interrupted"

    async def aclose(self) -> None:
        """Close the HTTP sessions and let the worker thread end. Idempotent."""
        if self._state is _State.CLOSED:
            return
        broken = self._state is _State.BROKEN
        self._state = _State.CLOSED
        loop = asyncio.get_running_loop()
        closing = loop.run_in_executor(self._executor, self._close_in_thread)
        self._executor.shutdown(wait=False)
        if broken:
            return  # runs once the stray call returns; nothing to wait for here
        with suppress(TimeoutError):
            async with asyncio.timeout(self._timeouts.close.total_seconds()):
                await closing
