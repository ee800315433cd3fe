"""Memory and throughput against mailbox size: one engine process per size drains a
mailbox of that many messages (the default filter, mail it does not track, the in-memory
store: see ``bench._memory_worker``)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from bench._context import Bench, log
from bench._mail import MailPlan
from bench._results import Better, Figure, Result, Target

__all__ = ["measure"]

_ROOT = Path(__file__).resolve().parent.parent.parent


async def _worker(settings: dict[str, Any]) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench._memory_worker",
        json.dumps(settings),
        cwd=_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the memory worker failed:\n{err.decode(errors='replace')[-3000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def _figure(size: int, run: dict[str, Any]) -> Figure:
    return Figure(
        label=f"{size:,}-message mailbox",
        seconds=(run["seconds"],),
        items=run["messages"],
        nbytes=run["bytes_received"],
        extra={
            "peak_rss_mb": round(run["peak_rss_kib"] / 1024, 1),
            "rss_before_sync_mb": round(run["rss_before_kib"] / 1024, 1),
            "tracked": run["tracked"],
            "engine_runs": run["cycles"],
        },
    )


async def measure(bench: Bench) -> list[Result]:
    """Peak RSS of the biggest mailbox over the smallest, and the series for the chart."""
    config = bench.config
    runs: dict[int, dict[str, Any]] = {}
    for size in config.rss_sizes:
        user = bench.rss_user(size)
        plan = MailPlan(
            seed=config.seed + 6, owner=user, count=size, tag=f"rss{size}", tracked_every=0
        )
        log(f"memory: seeding a {size:,}-message mailbox")
        bench.seed(user, plan)
        log(f"memory: draining the {size:,}-message mailbox in a process of its own")
        runs[size] = await _worker(
            {
                "seed": plan.seed,
                "user": user,
                "count": size,
                "port": bench.dovecot.imap_port,
                "tag": plan.tag,
            }
        )
        log(
            f"memory: {size:,} messages in {runs[size]['seconds']:.1f} s, peak RSS "
            f"{runs[size]['peak_rss_kib'] / 1024:.0f} MB"
        )
    small, big = min(runs), max(runs)
    ours, baseline = _figure(big, runs[big]), _figure(small, runs[small])
    ratio = runs[big]["peak_rss_kib"] / runs[small]["peak_rss_kib"]
    return [
        Result(
            id="peak_rss",
            title=f"Peak RSS syncing a {big:,}-message mailbox vs a {small:,}-message one",
            unit="× peak RSS",
            value=ratio,
            ratio=ratio,
            ratio_means="peak RSS with the big mailbox ÷ with the small one",
            target=Target(value=1.3, better=Better.LOWER),
            ours=ours,
            baseline=baseline,
            params={
                "sizes": list(config.rss_sizes),
                "store": "in-memory",
                "tracked": 0,
                "series": [
                    {
                        "messages": size,
                        "messages_per_second": round(run["messages"] / run["seconds"], 2),
                        "peak_rss_mb": round(run["peak_rss_kib"] / 1024, 1),
                    }
                    for size, run in sorted(runs.items())
                ],
            },
        )
    ]
