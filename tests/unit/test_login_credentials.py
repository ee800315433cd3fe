"""An application's client secret or certificate is never sent to a mail server as a
password: the IMAP, POP3, SMTP and EWS transports refuse it before connecting."""

from __future__ import annotations

import pytest

from serversync import ConfigurationError, CredentialKind, Credentials, Secret, ServerType
from serversync.adapters.transports import ImapTransport, Pop3Transport
from serversync.adapters.transports._connection import login_credentials
from serversync.model import ServerEndpoint
from serversync.testing import a_mailbox, a_profile

APPLICATION_KINDS = [CredentialKind.OAUTH2_CLIENT_SECRET, CredentialKind.OAUTH2_CLIENT_CERTIFICATE]


def _application(kind: CredentialKind) -> Credentials:
    return Credentials(username="client-id", secret=Secret("s3cr3t-value"), kind=kind)


@pytest.mark.parametrize("kind", APPLICATION_KINDS)
def test_application_secrets_are_no_login(kind: CredentialKind) -> None:
    with pytest.raises(ConfigurationError) as refused:
        login_credentials(_application(kind), protocol="IMAP")
    assert "IMAP logs in with a password or an OAuth 2.0 access token" in str(refused.value)
    assert "s3cr3t" not in str(refused.value)


@pytest.mark.parametrize("kind", [CredentialKind.PASSWORD, CredentialKind.OAUTH2_ACCESS_TOKEN])
def test_passwords_and_access_tokens_log_in(kind: CredentialKind) -> None:
    credentials = Credentials(username="u", secret=Secret("x"), kind=kind)
    assert login_credentials(credentials, protocol="SMTP") is credentials


@pytest.mark.parametrize("kind", APPLICATION_KINDS)
@pytest.mark.parametrize(
    ("transport", "server_type"),
    [(ImapTransport(), ServerType.IMAP_SMTP), (Pop3Transport(), ServerType.OTHER_POP3_SMTP)],
)
async def test_incoming_transports_refuse_them_before_connecting(
    kind: CredentialKind, transport: ImapTransport | Pop3Transport, server_type: ServerType
) -> None:
    # Port 9 on loopback: nothing listens, so a connection attempt would fail differently.
    profile = a_profile(server_type=server_type, incoming=ServerEndpoint(host="127.0.0.1", port=9))
    with pytest.raises(ConfigurationError, match="not with an application's client"):
        async with transport.open(a_mailbox("a@contoso.example"), profile, _application(kind)):
            pass
