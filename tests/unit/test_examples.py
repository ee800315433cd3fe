"""The runnable examples run, and show what they claim."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str) -> str:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_custom_rule_example_changes_the_decisions() -> None:
    out = run_example("custom_rule.py")
    assert "default rules -> not_relevant (NO_CORRELATION_MATCH)" in out
    assert "with our rules -> tracked by vip-domain" in out
    assert "with our rules -> not_relevant by auto-reply" in out
