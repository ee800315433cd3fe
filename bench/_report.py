"""The run's outputs: ``latest.json``, ``latest.md`` (the table) and ``latest.svg`` (throughput
and peak memory against mailbox size)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._results import Figure, Omitted, Result

__all__ = ["markdown", "svg_chart", "write"]


def _rate(figure: Figure) -> str:
    text = f"{figure.rate:,.0f} msg/s"
    if figure.nbytes:
        text += f" ({figure.megabytes_per_second:,.1f} MB/s)"
    return text


def _side(result: Result, figure: Figure) -> str:
    if result.id.startswith("idle_mailboxes"):
        per_poll = figure.extra.get("cpu_ms_per_poll")
        text = f"{per_poll:,.2f} ms CPU/poll"
        if "cpu_percent_measured" in figure.extra:
            text += (
                f", {figure.items:,} polls in {figure.median_seconds:,.0f} s at "
                f"{figure.extra['cpu_percent_measured']:,.1f} % CPU"
            )
        return text
    if result.id == "idle_push_latency":
        extra = figure.extra
        return (
            f"p95 {extra['p95_ms']:,.0f} ms, median {extra['p50_ms']:,.0f} ms, "
            f"max {extra['max_ms']:,.0f} ms ({figure.items} messages)"
        )
    if result.id.startswith("store_scale"):
        return f"{figure.label}: {figure.median_seconds:,.2f} s/cycle"
    if result.id == "peak_rss":
        return (
            f"{figure.label}: {figure.extra['peak_rss_mb']:,.0f} MB peak, {figure.rate:,.0f} msg/s"
        )
    return _rate(figure)


def _value(result: Result) -> str:
    if result.unit.startswith("CPU %"):
        return f"{result.value:,.1f} % of a core (×{result.ratio:,.1f} bare CPU/poll)"
    if result.unit.startswith("seconds"):
        return f"{result.value:,.2f} s (×{result.ratio:,.1f} the bare push)"
    return f"{result.value:,.2f}×"


def markdown(meta: dict[str, Any], results: Sequence[Result], omitted: Sequence[Omitted]) -> str:
    """The results table, with how the run was made."""
    lines = [
        "# serversync benchmarks: latest run",
        "",
        f"`{meta['command']}` ({meta['mode']} run), {meta['started']}, "
        f"{meta['duration_s']:,.0f} s; {meta['machine']}.",
        "Every figure is measured against its baseline in the same run; medians of "
        f"{meta['runs']} runs where a measure repeats.",
        "",
        "| measure | serversync | baseline (same run) | result | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        met = "yes" if r.met else "**no**"
        baseline = _side(r, r.baseline)
        if not r.id.startswith(("store_scale", "peak_rss")):  # those name their sides
            baseline = f"{r.baseline.label}: {baseline}"
        lines.append(
            f"| {r.title} | {_side(r, r.ours)} | {baseline} "
            f"| {_value(r)} | {r.target.describe()} | {met} |"
        )
    for o in omitted:
        lines.append(f"| {o.title} | not measured: {o.reason} | | | | |")
    lines += ["", "Ratios: " + "; ".join(f"{r.id}: {r.ratio_means}" for r in results), ""]
    return "\n".join(lines)


def _ticks(low: float, high: float, log_scale: bool) -> list[float]:
    if log_scale:
        return [
            10.0**e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        ]
    step = 10 ** math.floor(math.log10(max(high - low, 1e-9)))
    if (high - low) / step < 3:
        step /= 2
    start = math.floor(low / step) * step
    return [start + k * step for k in range(int((high - start) / step) + 2)]


def _panel(
    x0: float,
    title: str,
    points: Sequence[tuple[float, float]],
    y_label: str,
    colour: str,
) -> list[str]:
    width, height, left, top, bottom = 380.0, 260.0, 60.0, 36.0, 44.0
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x_ticks = _ticks(min(xs), max(xs), log_scale=True)
    y_ticks = _ticks(0.0, max(ys) * 1.15, log_scale=False)
    x_low, x_high = math.log10(x_ticks[0]), math.log10(x_ticks[-1])
    y_high = y_ticks[-1]
    plot_w, plot_h = width - left - 16, height - top - bottom

    def px(x: float) -> float:
        return x0 + left + (math.log10(x) - x_low) / (x_high - x_low or 1) * plot_w

    def py(y: float) -> float:
        return top + plot_h - y / y_high * plot_h

    out = [
        f'<text x="{x0 + width / 2:.1f}" y="20" text-anchor="middle" font-weight="bold">'
        f"{title}</text>",
        f'<line x1="{px(x_ticks[0]):.1f}" y1="{py(0):.1f}" x2="{px(x_ticks[-1]):.1f}" '
        f'y2="{py(0):.1f}" stroke="#333"/>',
        f'<line x1="{px(x_ticks[0]):.1f}" y1="{py(0):.1f}" x2="{px(x_ticks[0]):.1f}" '
        f'y2="{py(y_high):.1f}" stroke="#333"/>',
    ]
    for tick in x_ticks:
        out.append(
            f'<text x="{px(tick):.1f}" y="{py(0) + 16:.1f}" text-anchor="middle">{tick:,.0f}</text>'
        )
    for tick in y_ticks:
        out.append(
            f'<line x1="{px(x_ticks[0]):.1f}" y1="{py(tick):.1f}" x2="{px(x_ticks[-1]):.1f}" '
            f'y2="{py(tick):.1f}" stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{px(x_ticks[0]) - 6:.1f}" y="{py(tick) + 4:.1f}" text-anchor="end">'
            f"{tick:,.0f}</text>"
        )
    path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
    out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
    for x, y in points:
        out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{colour}"/>')
        out.append(
            f'<text x="{px(x):.1f}" y="{py(y) - 8:.1f}" text-anchor="middle">{y:,.0f}</text>'
        )
    out.append(
        f'<text x="{x0 + left + plot_w / 2:.1f}" y="{height - 6:.1f}" text-anchor="middle">'
        "messages in the mailbox (log scale)</text>"
    )
    out.append(
        f'<text transform="translate({x0 + 14:.1f},{top + plot_h / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{y_label}</text>'
    )
    return out


def svg_chart(series: Sequence[dict[str, float]]) -> str:
    """Two panels: drain throughput and peak RSS against mailbox size."""
    throughput = [(s["messages"], s["messages_per_second"]) for s in series]
    memory = [(s["messages"], s["peak_rss_mb"]) for s in series]
    body = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="780" height="270" '
        'font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
        *_panel(0, "Draining a mailbox (engine, headers only)", throughput, "msg/s", "#1f77b4"),
        *_panel(390, "Peak RSS of the engine process", memory, "MB", "#d62728"),
        "</svg>",
        "",
    ]
    return "\n".join(body)


def write(
    directory: Path,
    meta: dict[str, Any],
    results: Sequence[Result],
    omitted: Sequence[Omitted],
    errors: Sequence[dict[str, str]],
) -> None:
    """Write ``latest.json``, ``latest.md`` and, when the memory measure ran, ``latest.svg``."""
    directory.mkdir(parents=True, exist_ok=True)
    document = {
        "meta": meta,
        "measures": [r.as_json() for r in results],
        "omitted": [{"id": o.id, "title": o.title, "reason": o.reason} for o in omitted],
        "errors": list(errors),
    }
    (directory / "latest.json").write_text(json.dumps(document, indent=2) + "\n")
    (directory / "latest.md").write_text(markdown(meta, results, omitted))
    for result in results:
        if result.id == "peak_rss":
            (directory / "latest.svg").write_text(svg_chart(result.params["series"]))
