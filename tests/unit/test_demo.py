"""The demo: what `serversync demo` and examples/quickstart.py show a newcomer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from serversync import DecisionReason, EmailStatus, OutcomeKind, RunStatus
from serversync.cli._commands import cli
from serversync.demo import render, run_demo

ROOT = Path(__file__).resolve().parents[2]


async def test_demo_tracks_rejects_dedupes_and_sends(tmp_path: Path) -> None:
    result = await run_demo(tmp_path / "demo.db")

    reasons = [i.reason for run in result.runs for i in run.items()]
    assert DecisionReason.CORRELATION_MATCH in reasons
    assert DecisionReason.NO_CORRELATION_MATCH in reasons
    assert DecisionReason.DUPLICATE in reasons
    assert DecisionReason.INVALID_SENDER in reasons
    sends = [s for run in result.runs for s in run.sends()]
    assert len(sends) == 2
    assert all(s.status is EmailStatus.SENT for s in sends)
    for run in result.runs:
        assert all(r.status is not RunStatus.FAILED for r in run.mailboxes)
    # The second run correlates the customer's reply to an email the first run sent.
    (reply,) = result.runs[1].items()
    assert reply.kind is OutcomeKind.TRACKED
    assert reply.reason is DecisionReason.CORRELATION_MATCH
    assert reply.subject == "RE: Revised quote: 25 widgets"


async def test_render_shows_every_message_and_every_send(tmp_path: Path) -> None:
    result = await run_demo(tmp_path / "demo.db")
    text = render(result)
    assert text.startswith("Incoming messages")
    assert "Emails sent" in text
    for run in result.runs:
        for item in run.items():
            assert item.kind.value in text
        for send in run.sends():
            assert send.subject[:44] in text
    assert "CORRELATION_MATCH" in text
    assert "DUPLICATE" in text


def test_serversync_demo_command_prints_the_tables_and_keeps_its_store(tmp_path: Path) -> None:
    store = tmp_path / "demo.db"
    for _ in range(2):  # a second run starts from a new store, not on top of the first
        outcome = CliRunner().invoke(cli, ["demo", "--store-file", str(store)])
        assert outcome.exit_code == 0, outcome.output
        assert "NO_CORRELATION_MATCH" in outcome.output
        assert "SENT" in outcome.output
    assert f"serversync --store sqlite:///{store} status" in outcome.output
    status = CliRunner().invoke(cli, ["--store", f"sqlite:///{store}", "status"])
    assert status.exit_code == 0, status.output
    assert "alice@contoso.example" in status.output


def test_quickstart_example_is_the_demo_and_runs(tmp_path: Path) -> None:
    example = ROOT / "examples" / "quickstart.py"
    assert example.resolve() == (ROOT / "src" / "serversync" / "demo.py").resolve()
    completed = subprocess.run(
        [sys.executable, str(example)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    assert "CORRELATION_MATCH" in completed.stdout
    assert (tmp_path / "serversync-demo.db").exists(), "the demo leaves its store behind"
