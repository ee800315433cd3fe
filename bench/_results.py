"""What a benchmark run produces: one :class:`Result` per measure, in ``latest.json``.

Every figure is compared with a baseline measured in the same run, on the same machine and
servers: a ratio, with both raw figures kept next to it.
"""

from __future__ import annotations

import enum
import statistics
from collections.abc import Sequence
from typing import Any

import attrs

__all__ = ["Better", "Figure", "Omitted", "Result", "Target", "figure"]


class Better(enum.StrEnum):
    """Which way a figure improves."""

    HIGHER = "higher"
    LOWER = "lower"


@attrs.frozen(kw_only=True)
class Target:
    """The goal of a measure: ``value`` at least (``HIGHER``) or at most (``LOWER``)."""

    value: float
    better: Better

    def met(self, value: float) -> bool:
        """Whether ``value`` reaches the target."""
        return value >= self.value if self.better is Better.HIGHER else value <= self.value

    def describe(self) -> str:
        """``≥ 0.8`` or ``≤ 1.2``."""
        return ("≥ " if self.better is Better.HIGHER else "≤ ") + f"{self.value:g}"


@attrs.frozen(kw_only=True)
class Figure:
    """One side of a comparison: the median of ``seconds`` over the runs, the items (messages,
    polls) each run handled, the bytes they carried, and the CPU seconds of this process."""

    label: str
    seconds: tuple[float, ...]
    items: int
    nbytes: int = 0
    cpu_seconds: tuple[float, ...] = ()
    extra: dict[str, Any] = attrs.Factory(dict)

    @property
    def median_seconds(self) -> float:
        """The median duration of a run."""
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        """Items a second, at the median duration."""
        return self.items / self.median_seconds

    @property
    def megabytes_per_second(self) -> float:
        """MB (10^6 bytes) a second, at the median duration."""
        return self.nbytes / 1e6 / self.median_seconds

    @property
    def cpu_per_item_ms(self) -> float | None:
        """Median CPU milliseconds of this process per item."""
        if not self.cpu_seconds or not self.items:
            return None
        return statistics.median(self.cpu_seconds) / self.items * 1000

    def as_json(self) -> dict[str, Any]:
        """The figure with its derived numbers, for ``latest.json``."""
        return {
            "label": self.label,
            "runs": len(self.seconds),
            "seconds": [round(s, 4) for s in self.seconds],
            "median_seconds": round(self.median_seconds, 4),
            "items": self.items,
            "items_per_second": round(self.rate, 2),
            "megabytes": round(self.nbytes / 1e6, 2),
            "megabytes_per_second": round(self.megabytes_per_second, 2),
            "cpu_seconds": [round(s, 4) for s in self.cpu_seconds],
            "cpu_ms_per_item": (
                round(self.cpu_per_item_ms, 4) if self.cpu_per_item_ms is not None else None
            ),
            **self.extra,
        }


def figure(
    label: str,
    runs: Sequence[tuple[float, float, int, int]],
    **extra: Any,
) -> Figure:
    """A :class:`Figure` from runs of (seconds, CPU seconds, items, bytes); every run must
    have handled the same items."""
    items = {r[2] for r in runs}
    if len(items) != 1:
        raise AssertionError(f"{label}: the runs handled different numbers of items: {items}")
    return Figure(
        label=label,
        seconds=tuple(r[0] for r in runs),
        cpu_seconds=tuple(r[1] for r in runs),
        items=runs[0][2],
        nbytes=runs[0][3],
        extra=extra,
    )


@attrs.frozen(kw_only=True)
class Result:
    """One measure: serversync against its baseline.

    ``value`` is what the target judges; for most measures it is ``ratio`` (serversync's
    throughput over the baseline's, or the big case's time or memory over the small one's).
    ``unit`` names what ``value`` is.
    """

    id: str
    title: str
    unit: str
    value: float
    ratio: float
    target: Target
    ours: Figure
    baseline: Figure
    ratio_means: str
    params: dict[str, Any] = attrs.Factory(dict)
    notes: str = ""

    @property
    def met(self) -> bool:
        """Whether the target is reached in this run."""
        return self.target.met(self.value)

    def as_json(self) -> dict[str, Any]:
        """The result for ``latest.json``."""
        return {
            "id": self.id,
            "title": self.title,
            "unit": self.unit,
            "value": round(self.value, 4),
            "ratio": round(self.ratio, 4),
            "ratio_means": self.ratio_means,
            "target": {"value": self.target.value, "better": self.target.better.value},
            "met": self.met,
            "serversync": self.ours.as_json(),
            "baseline": self.baseline.as_json(),
            "params": self.params,
            "notes": self.notes,
        }


@attrs.frozen(kw_only=True)
class Omitted:
    """A measure of the issue this run could not take, and why."""

    id: str
    title: str
    reason: str
