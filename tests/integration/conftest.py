"""Session-wide servers for the integration tests.

``dovecot`` is one real Dovecot 2.3 (IMAP, IMAPS, POP3, POP3S on free 127.0.0.1 ports, with
its own test CA) for the whole session; tests take fresh accounts from it with
``dovecot.add_user()``. It also accepts OAuth 2.0 tokens issued by ``oauth_tokens``.
``scripts/test.sh`` installs the Debian packages; the tests never skip when they are missing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.dovecot import Dovecot, TokenEndpoint


@pytest.fixture(scope="session")
def oauth_tokens() -> Iterator[TokenEndpoint]:
    """The OAuth 2.0 token introspection endpoint Dovecot checks XOAUTH2 tokens with."""
    with TokenEndpoint() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def dovecot(oauth_tokens: TokenEndpoint) -> Iterator[Dovecot]:
    """A running Dovecot for the whole session."""
    with Dovecot(oauth2_url=oauth_tokens.url, users=300) as server:
        yield server
