"""A real SMTP server for the SMTP adapter's tests: aiosmtpd on 127.0.0.1, in this process.

It speaks plain SMTP, STARTTLS or SMTPS with a certificate from a throw-away test CA, checks
AUTH PLAIN/LOGIN against one user and XOAUTH2 against one token, records every accepted
message with the connection it came on, and misbehaves on request: refuse recipients,
answer DATA with any reply, drop the connection or stall in the middle of DATA.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import socket
import ssl
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from serversync.model import ServerEndpoint, TlsMode
from tests.integration.pki import Pki

__all__ = [
    "PASSWORD",
    "TOKEN",
    "USER",
    "Mode",
    "Received",
    "RecordingHandler",
    "SmtpServer",
]

USER = "crm@contoso.example"
PASSWORD = "correct horse"
TOKEN = "ya29.a-valid-access-token"


class Mode(enum.Enum):
    """How the server secures connections."""

    PLAIN = "plain"
    STARTTLS = "starttls"
    SMTPS = "smtps"


@dataclass(frozen=True)
class Received:
    """One message the server accepted, and the connection (client address) it came on."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    peer: str


class RecordingHandler:
    """aiosmtpd handler: records accepted mail and fails on request.

    Set the public attributes before sending; the server thread only reads them. aiosmtpd
    treats every ``handle_*`` and ``auth_*`` member as a hook, so other names avoid both.
    """

    def __init__(self, *, users: dict[str, str], tokens: dict[str, str], require_auth: bool):
        self.users = users
        self.tokens = tokens
        self.require_auth = require_auth
        self.received: list[Received] = []
        self.refused_recipients: dict[str, str] = {}
        """Recipient (lower-case) → the reply to its RCPT."""
        self.data_replies_by_recipient: dict[str, str] = {}
        """Recipient (lower-case) → the reply to DATA of any message addressed to it."""
        self.drop_in_data = False
        """Close the connection after the message arrived, before answering it."""
        self.stall_in_data: float | None = None
        """Wait this many seconds after the message arrived, before answering it."""

    def authenticator(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """Check AUTH PLAIN and LOGIN against ``users``."""
        ok = (
            isinstance(data, LoginPassword)
            and self.users.get(data.login.decode()) == data.password.decode()
        )
        # handled=False makes aiosmtpd send the 535; otherwise it answers nothing at all.
        return AuthResult(success=ok, handled=False)

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        """XOAUTH2 as Gmail does it: a refused token gets a JSON challenge, then 535."""
        fields: dict[str, str] = {}
        if len(args) == 2:
            decoded = base64.b64decode(args[1]).decode()
            for part in decoded.split("\x01"):
                key, _, value = part.partition("=")
                fields[key] = value
        user = fields.get("user", "")
        token = fields.get("auth", "").removeprefix("Bearer ")
        if user and self.tokens.get(user) == token:
            return AuthResult(success=True, auth_data=user)
        await server.challenge_auth(json.dumps({"status": "401", "schemes": "bearer"}))
        return AuthResult(
            success=False, handled=False, message="535 5.7.8 Username and Password not accepted"
        )

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.require_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        refusal = self.refused_recipients.get(address.lower())
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.drop_in_data:
            assert isinstance(server.transport, asyncio.Transport)
            server.transport.abort()
            await asyncio.sleep(10)  # connection_lost cancels this
        if self.stall_in_data is not None:
            await asyncio.sleep(self.stall_in_data)
        for recipient in envelope.rcpt_tos:
            reply = self.data_replies_by_recipient.get(recipient.lower())
            if reply is not None:
                return reply
        assert envelope.mail_from is not None
        assert isinstance(envelope.original_content, bytes)
        self.received.append(
            Received(
                mail_from=envelope.mail_from,
                rcpt_tos=tuple(envelope.rcpt_tos),
                data=envelope.original_content,
                peer=str(session.peer),
            )
        )
        return "250 2.0.0 Ok: queued as TEST1"


class _CountingController(Controller):
    """Counts the connections the server accepted (the protocol factory runs once each), and
    drops the ones still open when it stops."""

    connections = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._protocols: list[SMTP] = []

    def factory(self) -> SMTP:
        self.connections += 1
        protocol = SMTP(self.handler, **self.SMTP_kwargs)
        self._protocols.append(protocol)
        return protocol

    def stop(self, no_assert: bool = False) -> None:
        # aiosmtpd stops its loop with connections of stalled or dropped sessions still
        # open; their transports would be collected later, in some other test, as leaks.
        async def drop_all() -> None:
            for protocol in self._protocols:
                transport = protocol.transport
                if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
                    transport.abort()
            await asyncio.sleep(0)

        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(drop_all(), self.loop).result(timeout=5)
        super().stop(no_assert)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class SmtpServer:
    """aiosmtpd on a free loopback port, as a context manager.

    ``Mode.STARTTLS`` requires STARTTLS before anything else and offers AUTH only after it;
    ``Mode.SMTPS`` speaks TLS from the first byte. With ``require_auth`` MAIL gets 530 until
    the client authenticated.
    """

    def __init__(
        self,
        pki: Pki | None,
        *,
        mode: Mode = Mode.STARTTLS,
        require_auth: bool = True,
        users: dict[str, str] | None = None,
        tokens: dict[str, str] | None = None,
    ) -> None:
        self.mode = mode
        self.pki = pki
        self.handler = RecordingHandler(
            users=users if users is not None else {USER: PASSWORD},
            tokens=tokens if tokens is not None else {USER: TOKEN},
            require_auth=require_auth,
        )
        self.port = _free_port()
        kwargs: dict[str, Any] = {
            "authenticator": self.handler.authenticator,
            "auth_require_tls": mode is Mode.STARTTLS,
            "server_hostname": "smtp.serversync.test",
        }
        if mode is not Mode.PLAIN:
            assert pki is not None, "TLS needs the test PKI"
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(pki.cert_file, pki.key_file)
            if mode is Mode.STARTTLS:
                kwargs.update(tls_context=context, require_starttls=True)
            else:
                kwargs.update(ssl_context=context)
        self._controller = _CountingController(
            self.handler, hostname="127.0.0.1", port=self.port, **kwargs
        )

    @property
    def received(self) -> list[Received]:
        """Every message accepted so far."""
        return self.handler.received

    @property
    def connections(self) -> int:
        """Connections accepted since the server started."""
        return self._controller.connections

    def endpoint(self, **overrides: Any) -> ServerEndpoint:
        """The endpoint a profile needs to reach this server, with the test CA trusted."""
        tls = {
            Mode.PLAIN: TlsMode.NONE,
            Mode.STARTTLS: TlsMode.STARTTLS,
            Mode.SMTPS: TlsMode.IMPLICIT,
        }[self.mode]
        fields: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "tls": tls,
            "ca_file": str(self.pki.ca_file) if self.pki is not None else None,
        }
        fields.update(overrides)
        return ServerEndpoint(**fields)

    def __enter__(self) -> Self:
        self._controller.start()
        # start() makes one connection of its own to check the server is up.
        self._controller.connections = 0
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._controller.stop()
