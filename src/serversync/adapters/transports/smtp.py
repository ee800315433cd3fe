"""The SMTP outgoing transport, on aiosmtplib.

One session is one SMTP connection: opened (TLS, EHLO, AUTH) once per mailbox run and reused
for every email the run sends. Every step runs under a deadline from
:class:`~serversync.settings.Timeouts`, and aiosmtplib gets its own ``timeout=`` too, so a
stuck socket dies in the library and not only in the wrapper. Library exceptions are
translated in one place, :func:`_map_errors`:

=======================================  ===============================================
aiosmtplib / OS                          serversync
=======================================  ===============================================
every recipient refused, all 5xx         :class:`RecipientsRefusedError` (item)
every recipient refused, some 4xx        :class:`TransientError` (item)
4xx on MAIL, RCPT or DATA                :class:`TransientError` (item)
5xx on MAIL, RCPT or DATA                :class:`MessageRejectedError` (item)
421 anywhere                             :class:`ServerBusyError` (mailbox)
530/534/535/538, failed AUTH             :class:`AuthenticationError` (mailbox)
disconnect, refused connection, OSError  :class:`ConnectionFailedError` (mailbox)
timeout                                  :class:`OperationTimeoutError` (mailbox)
certificate verification failed          :class:`ConfigurationError` (mailbox)
=======================================  ===============================================

After a timeout, a cancellation or a lost connection in the middle of a command the session
is broken: it is closed at once and every later ``send`` raises
:class:`ConnectionFailedError`, because a reply that arrives late would be paired with the
next command. When that happens from the DATA command on, the server may have taken the
message before the connection failed: ``send`` raises :class:`DeliveryUncertainError`
instead, and the engine does not resend blindly.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, NoReturn, final

import aiosmtplib

from serversync.adapters.transports._connection import login_credentials
from serversync.engine import SystemClock
from serversync.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionFailedError,
    DeliveryUncertainError,
    ErrorScope,
    MessageRejectedError,
    OperationTimeoutError,
    RecipientsRefusedError,
    ServerBusyError,
    SyncError,
    TransientError,
)
from serversync.model import (
    CredentialKind,
    Credentials,
    EmailServerProfile,
    Mailbox,
    OutgoingMessage,
    ServerEndpoint,
    TlsMode,
)
from serversync.model.outcomes import SendReceipt
from serversync.ports import Clock, OutgoingMailSession, OutgoingMailTransport
from serversync.settings import Timeouts

__all__ = ["SmtpTransport"]

logger = logging.getLogger(__name__)

_DEFAULT_PORTS = {TlsMode.IMPLICIT: 465, TlsMode.STARTTLS: 587, TlsMode.NONE: 25}
_AUTH_CODES = frozenset({530, 534, 535, 538})
_SERVER_CLOSING = 421


class _Stage(enum.Enum):
    """Which part of the conversation failed; it decides how far an error reaches."""

    CONNECT = "connecting to"
    AUTH = "authenticating with"
    SEND = "sending through"


def _certificate_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate error behind ``exc``: aiosmtplib wraps it for SMTPS, not for STARTTLS."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _from_reply(
    code: int, text: str, stage: _Stage, *, auth: bool, where: str, mailbox_id: str | None
) -> SyncError:
    reply = f"{code} {text}".strip()
    server_code = str(code)
    if code == _SERVER_CLOSING:
        return ServerBusyError(
            f"{where} is closing the connection: {reply}",
            server_code=server_code,
            mailbox_id=mailbox_id,
        )
    if 400 <= code < 500:
        if stage is _Stage.SEND and not auth:
            # About this message only (greylisting, a full mailbox, a busy queue):
            # retry the email later, the session and the other emails go on.
            return TransientError(
                f"{where} deferred the message: {reply}",
                server_code=server_code,
                mailbox_id=mailbox_id,
                scope=ErrorScope.ITEM,
            )
        return ServerBusyError(
            f"{where} is temporarily unavailable: {reply}",
            server_code=server_code,
            mailbox_id=mailbox_id,
        )
    if 500 <= code < 600:
        if auth or code in _AUTH_CODES:
            return AuthenticationError(
                f"{where} refused the credentials: {reply}",
                server_code=server_code,
                mailbox_id=mailbox_id,
            )
        if stage is _Stage.SEND:
            return MessageRejectedError(
                f"{where} rejected the message: {reply}",
                server_code=server_code,
                server_message=text,
                mailbox_id=mailbox_id,
            )
        return ConfigurationError(
            f"{where} refused the session: {reply}", server_code=server_code, mailbox_id=mailbox_id
        )
    # A reply code out of place: the conversation is out of step, so give up on it.
    return ConnectionFailedError(
        f"unexpected reply from {where}: {reply}", server_code=server_code, mailbox_id=mailbox_id
    )


def _all_refused(
    exc: aiosmtplib.SMTPRecipientsRefused, *, where: str, mailbox_id: str | None
) -> SyncError:
    replies = {r.recipient: f"{r.code} {r.message}".strip() for r in exc.recipients}
    codes = [r.code for r in exc.recipients]
    listing = "; ".join(f"{address}: {reply}" for address, reply in replies.items())
    if _SERVER_CLOSING in codes:
        return ServerBusyError(
            f"{where} is closing the connection: {listing}",
            server_code=str(_SERVER_CLOSING),
            mailbox_id=mailbox_id,
        )
    deferred = [code for code in codes if 400 <= code < 500]
    if deferred:
        # A retry may reach the deferred recipients; failing the email for good would lose them.
        return TransientError(
            f"{where} deferred every recipient: {listing}",
            server_code=str(deferred[0]),
            mailbox_id=mailbox_id,
            scope=ErrorScope.ITEM,
        )
    return RecipientsRefusedError(
        f"{where} refused every recipient: {listing}",
        recipients=replies,
        server_code=str(codes[0]) if codes else None,
        mailbox_id=mailbox_id,
    )


def _translate(exc: Exception, stage: _Stage, *, where: str, mailbox_id: str | None) -> SyncError:
    verb = f"{stage.value} {where}"
    certificate = _certificate_failure(exc)
    if certificate is not None:
        # Permanent: retrying cannot make an untrusted certificate trusted, and treating it
        # as a passing outage would keep offering credentials to a possible impostor. An
        # administrator has to fix the CA file, the host name or the server's certificate.
        return ConfigurationError(
            f"the certificate of {where} failed verification: {certificate.verify_message}",
            mailbox_id=mailbox_id,
        )
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return _all_refused(exc, where=where, mailbox_id=mailbox_id)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        auth = isinstance(exc, aiosmtplib.SMTPAuthenticationError) or stage is _Stage.AUTH
        return _from_reply(
            exc.code, exc.message, stage, auth=auth, where=where, mailbox_id=mailbox_id
        )
    # Before the connection errors: SMTPConnectTimeoutError is both.
    if isinstance(exc, TimeoutError):
        return OperationTimeoutError(f"timed out {verb}", mailbox_id=mailbox_id)
    if isinstance(exc, ssl.SSLError):
        return ConnectionFailedError(
            f"TLS failed {verb} (check the port and TLS mode): {exc}", mailbox_id=mailbox_id
        )
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPConnectError | OSError):
        return ConnectionFailedError(f"connection lost {verb}: {exc}", mailbox_id=mailbox_id)
    if stage is _Stage.SEND and isinstance(exc, aiosmtplib.SMTPNotSupported | ValueError):
        # Raised before the envelope reached the server (an address it cannot carry).
        return MessageRejectedError(f"cannot send through {where}: {exc}", mailbox_id=mailbox_id)
    # STARTTLS or AUTH not offered, bad host name: the server is not what the profile says.
    return ConfigurationError(f"failed {verb}: {exc}", mailbox_id=mailbox_id)


@contextmanager
def _map_errors(stage: _Stage, *, where: str, mailbox_id: str | None) -> Iterator[None]:
    """Turn aiosmtplib, ssl and socket errors into serversync errors (httpx style)."""
    try:
        yield
    except SyncError:
        raise
    except (aiosmtplib.SMTPException, OSError, TimeoutError, ValueError) as exc:
        raise _translate(exc, stage, where=where, mailbox_id=mailbox_id) from exc


def _build_tls_context(endpoint: ServerEndpoint) -> ssl.SSLContext:
    if not endpoint.verify_certificate:
        # The profile asked for it (a lab server): encrypted, but the server is not identified.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    # With ca_file only that bundle is trusted, not the system store.
    return ssl.create_default_context(cafile=endpoint.ca_file)


class _Smtp(aiosmtplib.SMTP):
    """aiosmtplib's client, noting when a message's DATA command starts: from then on a
    connection cut off before the server's answer leaves it unknown whether the server took
    the message. (The window before the server's 354 is one round trip; it is counted in.)"""

    in_data = False

    async def data(self, message: str | bytes, /, **kwargs: Any) -> aiosmtplib.SMTPResponse:
        self.in_data = True
        return await super().data(message, **kwargs)


class _State(enum.Enum):
    OPEN = "open"
    BROKEN = "broken"
    CLOSED = "closed"


@final
class _SmtpSession(OutgoingMailSession):
    """One authenticated SMTP connection; every send of the session goes over it."""

    def __init__(
        self,
        smtp: _Smtp,
        *,
        timeouts: Timeouts,
        clock: Clock,
        where: str,
        mailbox_id: str,
    ) -> None:
        self._smtp = smtp
        self._timeouts = timeouts
        self._clock = clock
        self._where = where
        self._mailbox_id = mailbox_id
        self._state = _State.OPEN
        self._broken_because = ""

    def _break(self, reason: str) -> None:
        if self._state is _State.OPEN:
            self._state = _State.BROKEN
            self._broken_because = reason
        _abort(self._smtp)

    def _require_usable(self) -> None:
        if self._state is _State.OPEN and self._smtp.is_connected:
            return
        if self._state is _State.OPEN:
            self._break("the server closed the connection")
        why = "it is closed" if self._state is _State.CLOSED else self._broken_because
        raise ConnectionFailedError(
            f"the SMTP session with {self._where} cannot be used: {why}",
            mailbox_id=self._mailbox_id,
        )

    def _mail_options(self, message: OutgoingMessage) -> list[str]:
        options = []
        if not all(a.isascii() for a in (message.sender, *message.recipients)):
            if not self._smtp.supports_extension("smtputf8"):
                raise MessageRejectedError(
                    f"{self._where} does not offer SMTPUTF8, needed for a non-ASCII address",
                    mailbox_id=self._mailbox_id,
                )
            options.append("SMTPUTF8")
        if not message.data.isascii() and self._smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        return options

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        self._require_usable()
        if not message.recipients:
            raise MessageRejectedError("the message has no recipients", mailbox_id=self._mailbox_id)
        seconds = self._timeouts.send.total_seconds()
        with _map_errors(_Stage.SEND, where=self._where, mailbox_id=self._mailbox_id):
            options = self._mail_options(message)
            self._smtp.in_data = False
            try:
                async with asyncio.timeout(seconds):
                    refused, reply = await self._smtp.sendmail(
                        message.sender,
                        list(message.recipients),
                        message.data,
                        mail_options=options,
                        timeout=seconds,
                    )
            except aiosmtplib.SMTPResponseException as exc:
                # A whole reply arrived and aiosmtplib reset the envelope: the session is in
                # step and goes on, unless the server hung up or is about to (421).
                if exc.code == _SERVER_CLOSING or not self._smtp.is_connected:
                    self._break(f"the server closed the connection ({exc.code} {exc.message})")
                raise
            except aiosmtplib.SMTPRecipientsRefused:
                if not self._smtp.is_connected:
                    self._break("the server closed the connection while refusing recipients")
                raise
            except (aiosmtplib.SMTPNotSupported, ValueError):
                raise  # refused locally, before anything was sent
            except BaseException as exc:
                # Timed out, cancelled or disconnected mid-command: a late reply would be
                # taken for the next command's, so this connection is done.
                self._break(f"{type(exc).__name__} while sending {message.message_id}")
                if self._smtp.in_data and isinstance(exc, Exception):
                    cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                    raise DeliveryUncertainError(
                        f"the connection to {self._where} failed after {message.message_id} "
                        f"was handed over, before the server's answer ({cause}); the server "
                        "may have accepted it",
                        mailbox_id=self._mailbox_id,
                    ) from exc
                raise
        return SendReceipt(
            message_id=message.message_id,
            accepted_at=self._clock.now(),
            # aiosmtplib returns only the text; DATA succeeds on 250 alone.
            server_reply=f"{int(aiosmtplib.SMTPStatus.completed)} {reply}".strip(),
            refused=tuple(
                (address, f"{response.code} {response.message}".strip())
                for address, response in refused.items()
            ),
        )

    async def aclose(self) -> None:
        """Say QUIT when the connection is healthy, then close it; idempotent."""
        if self._state is _State.CLOSED:
            return
        polite = self._state is _State.OPEN and self._smtp.is_connected
        self._state = _State.CLOSED
        seconds = self._timeouts.close.total_seconds()
        # QUIT closes the connection, but over TLS only starts the TLS shutdown, which waits
        # (up to 30 s) for the server's close_notify; keep the transport to finish it now.
        transport = self._smtp.transport
        try:
            if polite:
                async with asyncio.timeout(seconds):
                    await self._smtp.quit(timeout=seconds)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # The sends are over and recorded; a failed goodbye changes nothing.
            logger.debug("QUIT to %s failed: %s", self._where, exc)
        finally:
            await _discard(self._smtp, transport)


def _abort(smtp: aiosmtplib.SMTP, transport: asyncio.BaseTransport | None = None) -> None:
    """Drop the connection at once, unsent data included.

    A plain close waits for the write buffer to drain (never, with a stalled server or after
    a failed STARTTLS) or for the peer's TLS close_notify; the socket would then outlive the
    session. ``transport`` is the connection's transport if ``smtp`` already let go of it.
    """
    transport = transport or smtp.transport
    smtp.close()
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()


async def _discard(smtp: aiosmtplib.SMTP, transport: asyncio.BaseTransport | None = None) -> None:
    """Drop the connection and let the loop run its connection_lost before we return."""
    _abort(smtp, transport)
    await asyncio.sleep(0)


@final
class SmtpTransport(OutgoingMailTransport):
    """Sends mail over SMTP (submission) with aiosmtplib.

    The server is ``profile.outgoing_endpoint``: implicit TLS (SMTPS, port 465 by default),
    STARTTLS (587; the upgrade is required, never skipped) or, only when the profile says
    ``TlsMode.NONE``, plain text (25). Certificates are verified unless the endpoint turns
    that off; ``ca_file`` replaces the system's trusted CAs. Password credentials use AUTH
    PLAIN (or LOGIN when the server offers only that), OAuth 2.0 access tokens use XOAUTH2,
    and ``None`` sends without AUTH.

    ``timeouts`` bound connecting (``connect``: TCP, TLS, EHLO and AUTH together), each
    command (``command``), each message (``send``) and QUIT (``close``). ``clock`` stamps
    receipts; ``local_hostname`` is the EHLO name (default: this machine's FQDN).
    """

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        clock: Clock | None = None,
        local_hostname: str | None = None,
    ) -> None:
        self._timeouts = timeouts or Timeouts()
        self._clock: Clock = clock or SystemClock()
        self._local_hostname = local_hostname

    @asynccontextmanager
    async def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AsyncIterator[OutgoingMailSession]:
        endpoint = profile.outgoing_endpoint
        if endpoint is None:
            raise ConfigurationError(
                f"profile {profile.name!r} has no outgoing server", mailbox_id=mailbox.id
            )
        session = await self._connect(mailbox, endpoint, credentials)
        try:
            yield session
        finally:
            await session.aclose()

    async def _tls_context(self, endpoint: ServerEndpoint, mailbox: Mailbox) -> ssl.SSLContext:
        try:
            # Reading CA files is blocking I/O.
            return await asyncio.to_thread(_build_tls_context, endpoint)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"cannot load the CA file {endpoint.ca_file!r}: {exc}", mailbox_id=mailbox.id
            ) from exc

    async def _connect(
        self, mailbox: Mailbox, endpoint: ServerEndpoint, credentials: Credentials | None
    ) -> _SmtpSession:
        port = endpoint.port or _DEFAULT_PORTS[endpoint.tls]
        where = f"{endpoint.host}:{port}"
        tls_context = None
        if endpoint.tls is not TlsMode.NONE:
            tls_context = await self._tls_context(endpoint, mailbox)
        connect_seconds = self._timeouts.connect.total_seconds()
        with _map_errors(_Stage.CONNECT, where=where, mailbox_id=mailbox.id):
            smtp = _Smtp(
                hostname=endpoint.host,
                port=port,
                local_hostname=self._local_hostname,
                timeout=self._timeouts.command.total_seconds(),
                use_tls=endpoint.tls is TlsMode.IMPLICIT,
                # True makes a missing STARTTLS an error instead of a silent plain session.
                start_tls=endpoint.tls is TlsMode.STARTTLS,
                tls_context=tls_context,
            )
        try:
            async with asyncio.timeout(connect_seconds):
                with _map_errors(_Stage.CONNECT, where=where, mailbox_id=mailbox.id):
                    await smtp.connect(timeout=connect_seconds)
                    if smtp.is_ehlo_or_helo_needed:
                        # STARTTLS forgets the first EHLO; AUTH and SMTPUTF8 need the new one.
                        await smtp.ehlo()
                with _map_errors(_Stage.AUTH, where=where, mailbox_id=mailbox.id):
                    await self._authenticate(smtp, credentials, where=where, mailbox=mailbox)
        except TimeoutError as exc:
            await _discard(smtp)
            if isinstance(exc, SyncError):
                raise
            raise OperationTimeoutError(
                f"connecting to {where} took longer than {connect_seconds:g} s",
                mailbox_id=mailbox.id,
            ) from exc
        except BaseException:
            await _discard(smtp)
            raise
        return _SmtpSession(
            smtp, timeouts=self._timeouts, clock=self._clock, where=where, mailbox_id=mailbox.id
        )

    async def _authenticate(
        self,
        smtp: aiosmtplib.SMTP,
        credentials: Credentials | None,
        *,
        where: str,
        mailbox: Mailbox,
    ) -> None:
        if credentials is None:
            return  # anonymous; a server that wants AUTH answers MAIL with 530
        login_credentials(credentials, protocol="SMTP", mailbox_id=mailbox.id)
        offered = smtp.server_auth_methods
        secret = credentials.secret.reveal()
        if credentials.kind is CredentialKind.OAUTH2_ACCESS_TOKEN:
            if "xoauth2" not in offered:
                _not_offered(where, "XOAUTH2", offered, mailbox)
            # aiosmtplib answers the server's error challenge, so a refused token fails
            # at once with 535 instead of hanging until the timeout.
            await smtp.auth_xoauth2(credentials.username, secret)
        elif "plain" in offered:
            # One mechanism only: retrying a refused password with LOGIN doubles the failed
            # logins that count towards the server's lockout.
            await smtp.auth_plain(credentials.username, secret)
        elif "login" in offered:
            await smtp.auth_login(credentials.username, secret)
        else:
            _not_offered(where, "PLAIN or LOGIN", offered, mailbox)


def _not_offered(where: str, wanted: str, offered: list[str], mailbox: Mailbox) -> NoReturn:
    have = " ".join(offered).upper() or "no AUTH at all"
    raise ConfigurationError(
        f"{where} does not offer AUTH {wanted} (it offers {have}; servers often hide AUTH "
        "until TLS is on)",
        mailbox_id=mailbox.id,
    )
