"""TLS client contexts are built once for each CA file as it is on disk and shared between
connections; a replaced CA file gets a new context, a missing one a clear error."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pytest

from serversync.adapters.transports._connection import tls_context
from serversync.errors import ConfigurationError
from serversync.model import ServerEndpoint, TlsMode
from tests.integration.pki import make_pki


def _endpoint(ca_file: Path, *, verify: bool = True) -> ServerEndpoint:
    return ServerEndpoint(
        host="127.0.0.1",
        port=993,
        tls=TlsMode.IMPLICIT,
        ca_file=str(ca_file),
        verify_certificate=verify,
    )


def test_connections_to_one_endpoint_share_a_context(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    first = tls_context(_endpoint(pki.ca_file))
    assert first is not None
    assert tls_context(_endpoint(pki.ca_file)) is first
    assert first.verify_mode is ssl.CERT_REQUIRED
    assert first.check_hostname
    unverified = tls_context(_endpoint(pki.ca_file, verify=False))
    assert unverified is not None
    assert unverified is not first
    assert unverified.verify_mode is ssl.CERT_NONE
    assert first.verify_mode is ssl.CERT_REQUIRED, "the shared context is left as it was"


def test_a_replaced_ca_file_gets_a_new_context(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    trusted = tmp_path / "trusted.pem"
    shutil.copy(pki.ca_file, trusted)
    before = tls_context(_endpoint(trusted))
    assert before is not None
    shutil.copy(pki.other_ca_file, tmp_path / "next.pem")
    (tmp_path / "next.pem").replace(trusted)
    after = tls_context(_endpoint(trusted))
    assert after is not None
    assert after is not before
    issuers = {c["subject"] for c in after.get_ca_certs()}
    assert issuers != {c["subject"] for c in before.get_ca_certs()}


def test_a_missing_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    moved = tmp_path / "moved.pem"
    shutil.copy(pki.ca_file, moved)
    assert tls_context(_endpoint(moved)) is not None
    moved.unlink()
    with pytest.raises(ConfigurationError, match="cannot load the CA file"):
        tls_context(_endpoint(moved))
