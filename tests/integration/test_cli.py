"""The ``serversync`` console script, run in subprocesses against a SQLite store, a real
Dovecot (IMAPS) and aiosmtpd (SMTP with STARTTLS): init → profile add → mailbox add → test →
run --once → status → explain, the way an operator would."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from serversync.sql import SqlStorage
from serversync.testing import an_email
from tests.integration.dovecot import Dovecot, DovecotUser
from tests.integration.smtp_server import Mode, SmtpServer

pytestmark = pytest.mark.integration

SERVERSYNC = Path(sys.executable).with_name("serversync")


class Cli:
    """Runs the console script on one store, with the mailbox password in the environment."""

    def __init__(self, store: Path, password: str) -> None:
        self.store = f"sqlite:///{store}"
        self.env = {**os.environ, "COLUMNS": "250", "SS_TEST_PASSWORD": password}
        self.outputs: list[str] = []

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
        self.outputs.append(output)
        assert done.returncode == expect, f"serversync {' '.join(args)}: {output}"
        return output


@pytest.fixture
def smtp(dovecot: Dovecot) -> Iterator[SmtpServer]:
    with SmtpServer(dovecot.pki, mode=Mode.STARTTLS, users={}) as server:
        yield server


def _configure(cli: Cli, dovecot: Dovecot, smtp: SmtpServer, user: DovecotUser) -> None:
    cli("init")
    cli(
        "profile",
        "add",
        "office",
        "--type",
        "imap",
        "--incoming",
        f"127.0.0.1:{dovecot.imaps_port}",
        "--outgoing",
        f"127.0.0.1:{smtp.port}",
        "--tls",
        "implicit",
        "--outgoing-tls",
        "starttls",
        "--ca-file",
        str(dovecot.pki.ca_file),
        "--sent-folder",
        "Sent",
    )
    cli(
        "mailbox",
        "add",
        user.address,
        "--profile",
        "office",
        "--filter",
        "all",
        "--password-env",
        "SS_TEST_PASSWORD",
    )


def test_an_operator_configures_tests_runs_and_inspects_a_mailbox(
    dovecot: Dovecot, smtp: SmtpServer, tmp_path: Path
) -> None:
    user = dovecot.add_user()
    smtp.handler.users[user.address] = user.password
    cli = Cli(tmp_path / "store.db", user.password)
    _configure(cli, dovecot, smtp, user)

    listed = cli("profile", "list")
    assert "office" in listed
    assert f"127.0.0.1:{dovecot.imaps_port} (implicit)" in listed
    shown = cli("profile", "show", "office")
    assert "max_concurrent_connections" in shown
    assert re.search(r"sent_folder\s+.\s*Sent", shown), shown

    refused = cli("mailbox", "test", user.address, expect=1)
    assert "not approved" in refused, "the address must be approved before it can sync"
    cli("mailbox", "approve", user.address)
    tested = cli("mailbox", "test", user.address)
    assert tested.count("SUCCESS") == 2, tested
    assert "enabled, success" in cli("mailbox", "list")

    dovecot.append(
        user,
        an_email(sender="jane@fabrikam.example", to=[user.address], subject="CLI order 1"),
    )
    ran = cli("run", "--once")
    row = next(line for line in ran.splitlines() if "incoming" in line)
    assert "succeeded" in row, ran
    assert " 1 " in row, "one message tracked"

    health = cli("status")
    assert user.address in health
    assert health.count("enabled") >= 2, health

    message = tmp_path / "reply.eml"
    message.write_bytes(
        an_email(sender="jane@fabrikam.example", to=[user.address], subject="Explain me")
    )
    explained = cli("explain", str(message), "--mailbox", user.address)
    assert explained.startswith("tracked"), explained

    store_bytes = (tmp_path / "store.db").read_bytes()
    assert user.password.encode() not in store_bytes, "a secret reached the store"
    assert all(user.password not in output for output in cli.outputs), "a secret was printed"


def test_a_wrong_password_fails_the_test_and_disables_nothing_else(
    dovecot: Dovecot, smtp: SmtpServer, tmp_path: Path
) -> None:
    user = dovecot.add_user()
    smtp.handler.users[user.address] = user.password
    cli = Cli(tmp_path / "store.db", "not-the-password")
    _configure(cli, dovecot, smtp, user)
    cli("mailbox", "approve", user.address)
    tested = cli("mailbox", "test", user.address, expect=1)
    assert tested.count("FAILURE") == 2, tested
    assert "AuthenticationError" in tested
    assert "disabled, failure" in cli("mailbox", "list")
    assert "not-the-password" not in "".join(cli.outputs)


def test_commands_on_a_missing_store_say_how_to_create_it(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "absent.db", "x")
    said = cli("status", expect=1)
    assert "serversync init" in said
    assert not (tmp_path / "absent.db").exists()


def test_run_once_on_a_terminal_shows_progress_then_the_table(
    dovecot: Dovecot, smtp: SmtpServer, tmp_path: Path
) -> None:
    user = dovecot.add_user()
    smtp.handler.users[user.address] = user.password
    cli = Cli(tmp_path / "store.db", user.password)
    _configure(cli, dovecot, smtp, user)
    cli("mailbox", "approve", user.address)
    dovecot.append(user, an_email(sender="jane@fabrikam.example", to=[user.address]))
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [str(SERVERSYNC), "--store", cli.store, "run", "--once"],
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=subprocess.PIPE,
            env={**cli.env, "TERM": "xterm"},
            timeout=120,
            check=False,
        )
        os.close(terminal)
        screen = b""
        with contextlib.suppress(OSError):  # EIO once everything written was read
            while chunk := os.read(controller, 65536):
                screen += chunk
    finally:
        os.close(controller)
    assert done.returncode == 0, done.stderr
    text = screen.decode(errors="replace")
    assert re.search(r"[0-2]/2", text), "a progress bar counted the two workloads"
    assert "succeeded" in text, "the run's table follows"


def test_run_with_several_workers_stores_each_message_once(
    dovecot: Dovecot, smtp: SmtpServer, tmp_path: Path
) -> None:
    users = [dovecot.add_user() for _ in range(4)]
    cli = Cli(tmp_path / "store.db", "unused")
    _configure(cli, dovecot, smtp, users[0])
    for user in users:
        secret = tmp_path / f"{user.address}.secret"
        secret.write_text(user.password)
        cli(
            "mailbox",
            "add",
            user.address,
            "--profile",
            "office",
            "--filter",
            "all",
            "--approve",
            "--replace",  # the first user's mailbox exists already
            "--password-file",
            str(secret),
        )
        dovecot.append(
            user,
            *(
                an_email(sender="jane@fabrikam.example", to=[user.address], subject=f"w{n}")
                for n in range(3)
            ),
        )
    cli("run", "--once", "--workers", "3")
    listed = cli("status")
    assert listed.count("enabled") >= 4, listed
    again = cli("run", "--once")
    tracked = [line for line in again.splitlines() if "incoming" in line]
    assert len(tracked) == 4
    assert all(" 0 " in line for line in tracked), "the workers left nothing to track"
    subjects = asyncio.run(_subjects(cli.store))
    assert sorted(subjects) == sorted(f"w{n}" for n in range(3) for _ in users), "each once"


async def _subjects(url: str) -> list[str]:
    storage = await SqlStorage.open(url)
    async with storage:
        return [a.subject for a in await storage.activities()]
