"""``python -m bench``: serversync against raw-protocol baselines, measured in the same run.

Starts its own servers on 127.0.0.1 (Dovecot, aiosmtpd, PostgreSQL, the EWS test server;
SQLite files), generates deterministic mail, runs every measure with its baseline, and
writes ``bench/results/latest.json``, ``latest.md`` and ``latest.svg``.

    python -m bench              # the full run (about 12 minutes on 2 cores)
    python -m bench --quick      # everything small (under a minute)
    python -m bench --only imap,pop3 --out /tmp/results
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from bench._context import Bench, Config, log
from bench._report import write
from bench._results import Omitted, Result

MEASURES = ("imap", "pop3", "smtp", "ews", "idle", "push", "store", "memory")
"""The measure modules (``bench/measures``), in the order they run."""

# Measures of the issue a run cannot take, with the reason (none at present).
_OMITTED: list[Omitted] = []


def _version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except OSError:
        return "not installed"
    return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else "?"


def _meta(config: Config, command: str, started: datetime, seconds: float) -> dict[str, Any]:
    from tests.integration.dovecot import dovecot_binary
    from tests.postgres_server import postgres_bindir

    try:
        postgres = _version([str(postgres_bindir() / "postgres"), "--version"])
    except RuntimeError:
        postgres = "not installed"
    machine = (
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, Dovecot {_version([dovecot_binary(), '--version'])}"
        f", {postgres}"
    )
    return {
        "command": command,
        "mode": "quick" if config.quick else "full",
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(seconds, 1),
        "machine": machine,
        "runs": config.runs,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "config": attrs.asdict(config),
    }


async def _run(config: Config, names: list[str]) -> tuple[list[Result], list[dict[str, str]]]:
    bench = Bench(config)
    results: list[Result] = []
    errors: list[dict[str, str]] = []
    try:
        for name in names:
            module = importlib.import_module(f"bench.measures.{name}")
            started = time.perf_counter()
            try:
                found = await module.measure(bench)
            except Exception as exc:
                log(f"{name}: FAILED: {exc!r}")
                errors.append({"measure": name, "error": traceback.format_exc()})
                continue
            results += found
            for result in found:
                verdict = "met" if result.met else "MISSED"
                log(f"{result.id}: {result.value:,.3f} ({result.target.describe()}: {verdict})")
            log(f"{name}: {time.perf_counter() - started:,.0f} s")
    finally:
        bench.close()
    return results, errors


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: under a minute")
    parser.add_argument(
        "--only", default="", help=f"comma-separated measures, from: {', '.join(MEASURES)}"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results",
        help="where latest.json, latest.md and latest.svg go (default: bench/results)",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(MEASURES)
    unknown = sorted(set(names) - set(MEASURES))
    if unknown:
        parser.error(f"unknown measures: {', '.join(unknown)}")
    config = Config.quick_run() if args.quick else Config.full()
    command = "python -m bench" + (" --quick" if args.quick else "")
    if args.only:
        command += f" --only {args.only}"
    # A plain SIGTERM would skip the clean-up that stops the servers.
    signal.signal(signal.SIGTERM, _terminate)
    started = datetime.now(UTC)
    clock = time.perf_counter()
    results, errors = asyncio.run(_run(config, [n for n in MEASURES if n in names]))
    meta = _meta(config, command, started, time.perf_counter() - clock)
    write(args.out, meta, results, _OMITTED, errors)
    print((args.out / "latest.md").read_text())
    for error in errors:
        print(f"measure {error['measure']} failed:\n{error['error']}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
