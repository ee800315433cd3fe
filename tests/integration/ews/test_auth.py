"""Who may do what: Basic and OAuth bearer authentication (a pre-issued token, and the
client credentials grant against the server's token endpoint), impersonation and delegate
access, over HTTPS with a test CA where OAuth needs it."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from exchangelib import (  # type: ignore[import-untyped]
    IMPERSONATION,
    Credentials,
    Identity,
    OAuth2AuthorizationCodeCredentials,
    OAuth2Credentials,
)
from exchangelib.errors import (  # type: ignore[import-untyped]
    ErrorAccessDenied,
    ErrorImpersonateUserDenied,
    ErrorNonExistentMailbox,
    TransportError,
    UnauthorizedError,
)
from exchangelib.transport import OAUTH2  # type: ignore[import-untyped]
from oauthlib.oauth2 import OAuth2Token  # type: ignore[import-untyped]

from serversync.testing.ews import EwsTestServer
from tests.integration.ews.conftest import ALICE, BOB, PASSWORD, Connect, raw_message
from tests.integration.pki import Pki, make_pki

pytestmark = pytest.mark.integration


class LoopbackAppCredentials(OAuth2Credentials):  # type: ignore[misc]
    """Client credentials that ask the test server's token endpoint instead of Entra ID."""

    def __init__(self, token_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._loopback_token_url = token_url

    @property
    def token_url(self) -> str:
        return self._loopback_token_url


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("ews-pki"))


def server_context(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    return context


@pytest.fixture
def https(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> Iterator[EwsTestServer]:
    """The server over HTTPS; requests (under exchangelib) trusts the test CA."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca_file))
    with EwsTestServer(tls=server_context(pki)) as server:
        server.add_mailbox(ALICE, password=PASSWORD)
        yield server


def bearer(token: str) -> Any:
    return OAuth2AuthorizationCodeCredentials(
        access_token=OAuth2Token({"access_token": token, "token_type": "Bearer"})
    )


def test_a_wrong_password_is_refused_with_401(ews: EwsTestServer, connect: Connect) -> None:
    account = connect(credentials=Credentials(ALICE, "wrong"))

    with pytest.raises(UnauthorizedError):
        account.inbox  # noqa: B018

    assert [(r.operation, r.login, r.status) for r in ews.requests] == [("GetFolder", None, 401)]


def test_https_needs_the_right_ca(
    https: EwsTestServer, connect: Connect, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    https.deliver(ALICE, raw_message(1))
    assert [m.subject for m in connect(endpoint=https.url).inbox.all()] == ["hello 1"]
    assert https.url.startswith("https://127.0.0.1:")

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.other_ca_file))
    # Other credentials: exchangelib keeps one connection per endpoint and credentials, and
    # the one above is already verified.
    with pytest.raises(TransportError, match="certificate verify failed"):
        connect(endpoint=https.url, credentials=Credentials(ALICE.upper(), PASSWORD)).inbox  # noqa: B018


def test_a_bearer_token_authenticates_until_revoked(https: EwsTestServer, connect: Connect) -> None:
    token = https.issue_token(ALICE)
    account = connect(endpoint=https.url, credentials=bearer(token), auth_type=OAUTH2)

    assert account.inbox.name == "Inbox"
    assert {r.login for r in https.requests} == {ALICE}

    https.revoke_token(token)
    with pytest.raises(UnauthorizedError):
        list(account.inbox.all())


def test_an_application_token_impersonates_a_mailbox(
    https: EwsTestServer, connect: Connect
) -> None:
    https.add_application("crm-sync", "app secret")
    https.deliver(ALICE, raw_message(1))
    credentials = LoopbackAppCredentials(
        https.token_url,
        client_id="crm-sync",
        client_secret="app secret",
        tenant_id="contoso",
        identity=Identity(primary_smtp_address=ALICE),
    )
    account = connect(
        ALICE,
        endpoint=https.url,
        credentials=credentials,
        auth_type=OAUTH2,
        access_type=IMPERSONATION,
    )

    assert [m.subject for m in account.inbox.all()] == ["hello 1"]
    first, *rest = https.requests
    assert (first.operation, first.login, first.status) == ("token", "crm-sync", 200)
    assert rest
    assert all((r.login, r.impersonated) == ("crm-sync", ALICE) for r in rest)


def test_impersonation_needs_the_right(ews: EwsTestServer, connect: Connect) -> None:
    ews.add_user("svc-crm@contoso.example", password="svc", can_impersonate=True)
    ews.add_user("clerk@contoso.example", password="clerk")
    ews.deliver(BOB, raw_message(1, to=BOB))

    service = connect(
        BOB, credentials=Credentials("svc-crm@contoso.example", "svc"), access_type=IMPERSONATION
    )
    assert [m.subject for m in service.inbox.all()] == ["hello 1"]
    assert {r.impersonated for r in ews.requests} == {BOB}

    clerk = connect(
        BOB, credentials=Credentials("clerk@contoso.example", "clerk"), access_type=IMPERSONATION
    )
    with pytest.raises(ErrorImpersonateUserDenied):
        clerk.inbox  # noqa: B018

    nobody = connect(
        "nobody@contoso.example",
        credentials=Credentials("svc-crm@contoso.example", "svc"),
        access_type=IMPERSONATION,
    )
    with pytest.raises(ErrorNonExistentMailbox):
        nobody.inbox  # noqa: B018


def test_delegate_access_needs_full_access(ews: EwsTestServer, connect: Connect) -> None:
    ews.deliver(BOB, raw_message(1, to=BOB))

    with pytest.raises(ErrorAccessDenied):
        list(connect(BOB).inbox.all())

    ews.grant_full_access(ALICE, BOB)
    assert [m.subject for m in connect(BOB).inbox.all()] == ["hello 1"]


def test_no_path_but_the_ews_endpoint_is_served(ews: EwsTestServer) -> None:
    request = urllib.request.Request(ews.base_url + "/owa/", data=b"", method="POST")
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=5)
    assert answer.value.code == 404
    answer.value.close()
