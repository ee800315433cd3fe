"""Servers for the reliability trials: one Dovecot with a large pool of accounts.

The trials use fresh accounts for every crash trial and every network fault, more than the
integration tests' Dovecot keeps in its pool, so this folder starts its own (about a second).
PostgreSQL comes from ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.dovecot import Dovecot, TokenEndpoint


@pytest.fixture(scope="session")
def trial_dovecot() -> Iterator[Dovecot]:
    """A running Dovecot with 400 accounts for the reliability trials."""
    with TokenEndpoint() as tokens, Dovecot(oauth2_url=tokens.url, users=400) as server:
        yield server
