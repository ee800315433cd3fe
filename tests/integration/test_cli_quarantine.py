"""``serversync quarantine list / retry / discard``, run as an operator would: in subprocesses,
on a SQLite store, against a real Dovecot (IMAPS)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from serversync.testing import an_email
from tests.integration.dovecot import Dovecot

pytestmark = pytest.mark.integration

SERVERSYNC = Path(sys.executable).with_name("serversync")
BROKEN = b"\r\nno header at all\r\n"


class Cli:
    """Runs the console script on one store, with the mailbox password in the environment."""

    def __init__(self, store: Path, password: str) -> None:
        self.store = f"sqlite:///{store}"
        self.env = {**os.environ, "COLUMNS": "250", "SS_TEST_PASSWORD": password}

    def __call__(self, *args: str, expect: int = 0) -> str:
        done = subprocess.run(
            [str(SERVERSYNC), "--store", self.store, *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env,
            check=False,
        )
        output = done.stdout + done.stderr
        assert done.returncode == expect, f"serversync {' '.join(args)}: {output}"
        return output


def _row(output: str, needle: str) -> str:
    return next(line for line in output.splitlines() if needle in line)


def test_an_operator_lists_retries_and_discards_quarantined_messages(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    user = dovecot.add_user()
    cli = Cli(tmp_path / "store.db", user.password)
    cli("init")
    cli(
        "profile",
        "add",
        "office",
        "--incoming",
        f"127.0.0.1:{dovecot.imaps_port}",
        "--tls",
        "implicit",
        "--ca-file",
        str(dovecot.pki.ca_file),
    )
    cli(
        "mailbox",
        "add",
        user.address,
        "--profile",
        "office",
        "--filter",
        "all",
        "--approve",
        "--password-env",
        "SS_TEST_PASSWORD",
    )
    dovecot.append(
        user, BROKEN, an_email(sender="jane@fabrikam.example", to=[user.address], subject="fine")
    )

    ran = cli("run", "--once")
    assert "succeeded" in _row(ran, "incoming"), ran

    listed = cli("quarantine", "list")
    row = _row(listed, user.address)
    assert "INBOX" in row
    assert " 1 " in row, "one attempt so far"
    assert "next try" in row
    assert "MalformedMessageError: unreadable headers" in row
    assert "no quarantined messages" in cli("quarantine", "list", "--mailbox", "x@example.com")
    status = _row(cli("status", "--mailbox", user.address), "incoming")
    assert "1 waiting, next " in status, f"health shows the quarantine: {status}"

    refused = cli("quarantine", "retry", expect=1)
    assert "--mailbox ADDRESS, or every mailbox with --all" in refused
    retried = cli("quarantine", "retry", "--mailbox", user.address, "--now")
    assert "failed" in _row(retried, user.address), retried
    assert "1 message tried again" in retried
    assert " 2 " in _row(cli("quarantine", "list"), user.address), "a second attempt counted"

    queued = cli("quarantine", "retry", "--all", "--id", "1")
    assert "1 message due on the next incoming cycle" in queued

    assert "0 messages discarded" in cli("quarantine", "discard", "--all", "--id", "9")
    discarded = cli("quarantine", "discard", "--mailbox", user.address, "--folder", "INBOX")
    assert "1 message discarded" in discarded
    assert "no quarantined messages" in cli("quarantine", "list")
    cells = [cell.strip() for cell in _row(cli("status"), "incoming").split("│")]
    assert cells[-2] == "0", f"none quarantined now: {cells}"
