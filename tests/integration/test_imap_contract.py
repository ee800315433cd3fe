"""The IMAP transport keeps the incoming transport contract against a real Dovecot."""

from __future__ import annotations

import asyncio

import attrs
import pytest

from serversync.adapters.transports import ImapTransport
from serversync.model import Credentials, Secret, ServerType, TlsMode
from serversync.testing import a_mailbox, a_profile
from serversync.testing.contracts import MailboxFixture, check_incoming_transport
from tests.integration.dovecot import Dovecot, DovecotUser

pytestmark = pytest.mark.integration


@attrs.define
class ImapHarness:
    """Fresh Dovecot accounts behind one endpoint; mail is delivered with IMAP APPEND."""

    dovecot: Dovecot
    tls: TlsMode
    transport: ImapTransport
    users: dict[str, DovecotUser] = attrs.Factory(dict)

    async def new_mailbox(self) -> MailboxFixture:
        user = self.dovecot.add_user()
        self.users[user.address] = user
        return MailboxFixture(
            mailbox=a_mailbox(user.address),
            profile=a_profile(
                server_type=ServerType.IMAP_SMTP, incoming=self.dovecot.endpoint("imap", self.tls)
            ),
            credentials=Credentials(username=user.address, secret=Secret(user.password)),
            wrong_credentials=Credentials(username=user.address, secret=Secret("not-it")),
        )

    async def deliver(self, fixture: MailboxFixture, data: bytes) -> None:
        user = self.users[fixture.mailbox.email_address]
        await asyncio.to_thread(self.dovecot.append, user, data)


@pytest.mark.parametrize(
    ("tls", "sasl_plain"),
    [
        pytest.param(TlsMode.STARTTLS, True, id="starttls-authenticate-plain"),
        pytest.param(TlsMode.IMPLICIT, False, id="imaps-login"),
        pytest.param(TlsMode.NONE, True, id="plain-text"),
    ],
)
async def test_imap_transport_keeps_the_incoming_contract(
    dovecot: Dovecot, tls: TlsMode, sasl_plain: bool
) -> None:
    transport = ImapTransport(sasl_plain=sasl_plain)
    await check_incoming_transport(ImapHarness(dovecot, tls, transport))
    commands = transport.stats.commands
    assert commands["LOGIN" if not sasl_plain else "AUTHENTICATE"] >= 1
    assert (
        commands["STARTTLS"] == (1 if tls is TlsMode.STARTTLS else 0) * transport.stats.connections
    )
    # One message through fetch_message, then two and two (of three asked for, one missing)
    # through fetch_messages.
    assert transport.stats.messages_fetched == 5, "the contract fetches five whole messages"
