"""The POP3 transport keeps the incoming transport contract against a real Dovecot."""

from __future__ import annotations

import asyncio

import attrs
import pytest

from serversync.adapters.transports import Pop3Transport
from serversync.model import Credentials, Secret, ServerType, TlsMode
from serversync.testing import a_mailbox, a_profile
from serversync.testing.contracts import MailboxFixture, check_incoming_transport
from tests.integration.dovecot import Dovecot, DovecotUser

pytestmark = pytest.mark.integration


@attrs.define
class Pop3Harness:
    """Fresh Dovecot accounts read over POP3; mail is delivered with IMAP APPEND."""

    dovecot: Dovecot
    tls: TlsMode
    transport: Pop3Transport
    users: dict[str, DovecotUser] = attrs.Factory(dict)

    async def new_mailbox(self) -> MailboxFixture:
        user = self.dovecot.add_user()
        self.users[user.address] = user
        return MailboxFixture(
            mailbox=a_mailbox(user.address),
            profile=a_profile(
                server_type=ServerType.OTHER_POP3_SMTP,
                incoming=self.dovecot.endpoint("pop3", self.tls),
            ),
            credentials=Credentials(username=user.address, secret=Secret(user.password)),
            wrong_credentials=Credentials(username=user.address, secret=Secret("not-it")),
        )

    async def deliver(self, fixture: MailboxFixture, data: bytes) -> None:
        user = self.users[fixture.mailbox.email_address]
        await asyncio.to_thread(self.dovecot.append, user, data)


@pytest.mark.parametrize(
    "tls",
    [
        pytest.param(TlsMode.STARTTLS, id="stls"),
        pytest.param(TlsMode.IMPLICIT, id="pop3s"),
    ],
)
async def test_pop3_transport_keeps_the_incoming_contract(dovecot: Dovecot, tls: TlsMode) -> None:
    transport = Pop3Transport()
    await check_incoming_transport(Pop3Harness(dovecot, tls, transport))
    assert transport.stats.messages_fetched == 1, "the contract fetches one whole message"
    assert transport.stats.commands["RETR"] == 1
