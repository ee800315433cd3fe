"""Every example runs as a reader would run it, and prints what it claims.

Each runs in a subprocess (its own interpreter, as ``python examples/...``), with a timeout,
warnings turned into errors, and no bytecode written into ``examples/``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from serversync.testing import an_email
from tests.integration.dovecot import Dovecot, TokenEndpoint

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DOCS = ROOT / "docs"


def documented_output(page: str, heading: str) -> str:
    """The first ``text`` block after ``heading`` in a docs page: what the page says prints."""
    text = (DOCS / page).read_text()
    after = text[text.index(f"\n{heading}\n") :]
    start = after.index("```text\n") + len("```text\n")
    return after[start : after.index("```", start)]


def run(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> str:
    """The example's standard output; it must exit with 0 and print no warning."""
    completed = run_process(*args, cwd=cwd, env=env)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def run_process(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env or {}), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-W", "error", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env=env,
    )


def test_every_example_is_listed_in_the_readme_and_run_here() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    here = Path(__file__).read_text()
    examples = sorted(
        p.name for p in EXAMPLES.iterdir() if p.name != "README.md" and not p.name.startswith(".")
    )
    assert examples == [
        "act_sync.py",
        "celery_worker.py",
        "custom_rule.py",
        "fastapi_host",
        "first_mailbox.py",
        "graph_webhook.py",
        "own_storage.py",
        "quickstart.py",
        "unit_testing",
    ]
    for name in examples:
        assert f"`{name.removesuffix('.py')}" in readme, f"{name} is not in examples/README.md"
        assert f'"{name}' in here, f"{name} is not run by this test"


@pytest.mark.integration
def test_first_mailbox_syncs_a_real_imap_mailbox_on_loopback() -> None:
    with TokenEndpoint() as tokens, Dovecot(oauth2_url=tokens.url, users=1) as dovecot:
        user = dovecot.add_user()
        dovecot.append(
            user,
            an_email(sender="jane@fabrikam.example", to=[user.address], subject="Hello"),
            an_email(sender="news@letter.example", to=[user.address], subject="Digest"),
        )
        settings = {
            "MAIL_ADDRESS": user.address,
            "MAIL_PASSWORD": user.password,
            "IMAP_HOST": "127.0.0.1",
            "IMAP_PORT": str(dovecot.imaps_port),
            "IMAP_CA_FILE": str(dovecot.pki.ca_file),
        }
        out = run(str(EXAMPLES / "first_mailbox.py"), env=settings).splitlines()
        flags = dovecot.flags(user)
        wrong = run_process(
            str(EXAMPLES / "first_mailbox.py"),
            env={**settings, "MAIL_PASSWORD": "not-the-password-4711"},
        )
    assert out == [
        "my-mailbox incoming: succeeded",
        "tracked      ACCEPT_ALL           'Hello' from jane@fabrikam.example",
        "tracked      ACCEPT_ALL           'Digest' from news@letter.example",
    ]
    assert flags == {1: {"$ServerSyncTracked"}, 2: {"$ServerSyncTracked"}}
    # A refused login is reported, and the password appears nowhere.
    assert wrong.returncode == 0, wrong.stderr
    assert wrong.stdout.startswith("my-mailbox incoming: failed (AuthenticationError: ")
    assert "not-the-password-4711" not in wrong.stdout + wrong.stderr


def test_quickstart_prints_both_tables(tmp_path: Path) -> None:
    out = run(str(EXAMPLES / "quickstart.py"), cwd=tmp_path)  # it may leave files behind
    assert "Incoming messages" in out
    assert "Emails sent" in out
    for reason in ("CORRELATION_MATCH", "NO_CORRELATION_MATCH", "DUPLICATE", "INVALID_SENDER"):
        assert f" {reason} " in out


def test_custom_rule_changes_the_decisions() -> None:
    out = run(str(EXAMPLES / "custom_rule.py"))
    assert out == documented_output("custom-rules.md", "## A runnable example")
    assert "default rules -> not_relevant (NO_CORRELATION_MATCH)" in out
    assert "with our rules -> tracked by vip-domain" in out
    assert "with our rules -> not_relevant by auto-reply" in out


def test_act_sync_round_trips_a_contact_and_settles_a_conflict() -> None:
    out = run(str(EXAMPLES / "act_sync.py"))
    assert out == documented_output("act.md", "## Try it")
    assert "exchange wins (latest)" in out
    assert out.endswith("CRM company: Babbage & Co\n")


def test_unit_testing_example_tests_pass() -> None:
    folder = EXAMPLES / "unit_testing"
    out = run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder), cwd=folder)
    assert re.search(r"^5 passed in ", out, re.MULTILINE), out


def test_fastapi_host_serves_status_and_sync_now_with_the_engine_in_its_lifespan() -> None:
    out = run(str(EXAMPLES / "fastapi_host" / "try_it.py"))
    # The documented output (docs/embed-fastapi.md includes this file) is what it prints:
    # the background loop ran every mailbox workload at startup, "sync now" tracked the new
    # reply, an unknown mailbox is a 404, and the shutdown ended the loop.
    assert out == (EXAMPLES / "fastapi_host" / "expected_output.txt").read_text()
    assert "mailbox:support@contoso.example incoming: succeeded (tracked 1, sent 0)" in out
    assert out.rstrip().endswith("shutdown complete; stored email activities: 3")


def test_graph_webhook_wakes_the_mailbox_through_a_mounted_handler() -> None:
    out = run(str(EXAMPLES / "graph_webhook.py"))
    assert out == documented_output("graph.md", "### Try it")
    assert "validation handshakes answered: 2" in out
    assert "within 5 s of delivery: True" in out
    assert out.rstrip().endswith("subscriptions left at Graph: 0")


def test_celery_worker_jobs_sync_each_mailbox_once() -> None:
    out = run(str(EXAMPLES / "celery_worker.py"))
    assert out == documented_output("task-queues.md", "## Running the example")
    assert out.count("beat: enqueued 2 jobs") == 2
    assert out.count("tracked 'Order 1234 arrived damaged'") == 1
    assert out.count("sent 'Quote CRM:0001001'") == 1
    # The job delivered twice found the mailbox not due and did nothing.
    assert "mailbox:support@contoso.example: incoming skipped (not_due)" in out
    assert out.count("tracked 'RE: Order 1234'") == 1
    assert out.rstrip().endswith(
        "stored emails: ['Order 1234 arrived damaged', 'Quote CRM:0001001', 'RE: Order 1234'];"
        " sent through SMTP: 1"
    )


def test_own_storage_passes_the_contract_and_survives_a_restart() -> None:
    printed = run(str(EXAMPLES / "own_storage.py"))
    assert printed == documented_output("own-storage.md", "## Proving it")
    out = printed.splitlines()
    assert out[0].startswith("check_repositories passed")
    assert out[1:] == [
        "run 1: alice@contoso.example: 'Order 1234' tracked (ACCEPT_ALL)",
        "run 1: bob@contoso.example: 'Order 1234' duplicate (DUPLICATE)",
        "run 1: email activities in the database: 1",
        "run 2: alice@contoso.example: 'RE: Order 1234' tracked (ACCEPT_ALL)",
        "run 2: email activities in the database: 2",
    ]


@pytest.mark.parametrize(
    "path", sorted(EXAMPLES.rglob("*.py")), ids=lambda p: str(p.relative_to(EXAMPLES))
)
def test_examples_import_only_the_public_api(path: Path) -> None:
    source = path.read_text()
    imported = {
        line.split()[1]
        for line in source.splitlines()
        if line.startswith(("from serversync", "import serversync"))
    }
    public = {
        "serversync",
        "serversync.ports",
        "serversync.testing",
        "serversync.testing.contracts",
        "serversync.serialization",  # the cattrs converter for the model, for hosts' storage
        "serversync.adapters.transports",  # ImapTransport, Pop3Transport, SmtpTransport
        "serversync.sql",  # the SQL store of the `sql` extra
        "serversync.adapters.transports.graph",  # the Graph transports, of the `graph` extra
        "serversync.testing.graph",  # the fake Graph, of the `graph` extra
    }
    assert imported <= public, imported - public
