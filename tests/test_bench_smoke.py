"""The benchmark harness runs: ``python -m bench --quick`` against real servers on loopback.

Only that every measure produced positive figures is checked, never the ratios: these
machines are shared and noisy, and the quick sizes are too small to judge the targets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent

MEASURES = {
    "imap_headers",
    "incoming_e2e",
    "incoming_e2e_sqlite",
    "pop3_ingest",
    "smtp_send_1",
    "smtp_send_10",
    "ews_mime_fetch",
    "idle_mailboxes",
    "idle_mailboxes_memory",
    "idle_push_latency",
    "store_scale_sqlite",
    "store_scale_postgresql",
    "peak_rss",
}


def _positive_figure(side: dict[str, object], where: str) -> None:
    for key in ("median_seconds", "items", "items_per_second"):
        value = side[key]
        assert isinstance(value, int | float), (where, key, value)
        assert value > 0, (where, key, value)


def test_the_quick_run_measures_everything(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        process.terminate()  # the harness stops its servers on SIGTERM
        out, err = process.communicate(timeout=120)
    assert process.returncode == 0, out[-3000:] + err[-6000:]

    document = json.loads((tmp_path / "latest.json").read_text())
    assert document["errors"] == []
    assert document["meta"]["mode"] == "quick"
    found = {m["id"]: m for m in document["measures"]}
    assert set(found) == MEASURES
    for name, measure in found.items():
        assert measure["value"] > 0, name
        assert measure["ratio"] > 0, name
        assert isinstance(measure["met"], bool), name
        _positive_figure(measure["serversync"], f"{name}: serversync")
        _positive_figure(measure["baseline"], f"{name}: baseline")
    series = found["peak_rss"]["params"]["series"]
    assert [point["messages"] for point in series] == document["meta"]["config"]["rss_sizes"]
    assert all(point["peak_rss_mb"] > 0 and point["messages_per_second"] > 0 for point in series)
    assert document["omitted"] == []

    table = (tmp_path / "latest.md").read_text()
    assert all(measure["title"] in table for measure in found.values())
    chart = (tmp_path / "latest.svg").read_text()
    assert chart.startswith("<svg")
    assert chart.count("<circle") == 2 * len(series)
