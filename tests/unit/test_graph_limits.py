"""The pure rate-control decisions of the Graph transport: the request budget's token
bucket, backoff without Retry-After, and the jitter before a delta round starts again."""

from __future__ import annotations

from datetime import timedelta

import pytest

from serversync.adapters.transports.graph._limits import (
    RequestBudget,
    backoff_delay,
    bucket_wait,
    restart_delay,
)

BUDGET = RequestBudget(10_000, timedelta(minutes=10))


def test_a_full_bucket_lets_a_request_go_at_once() -> None:
    assert bucket_wait(10_000.0, 0.0, BUDGET) == (10_000.0, 0.0)


def test_an_empty_bucket_waits_for_one_request_of_refill() -> None:
    tokens, wait = bucket_wait(0.0, 0.0, BUDGET)
    assert tokens == 0.0
    assert wait == pytest.approx(0.06)  # 600 s / 10,000 requests
    tokens, wait = bucket_wait(0.0, 0.06, BUDGET)
    assert tokens == pytest.approx(1.0)
    assert wait == 0.0


def test_the_bucket_never_holds_more_than_the_budget() -> None:
    tokens, _ = bucket_wait(9_999.0, 3_600.0, BUDGET)
    assert tokens == 10_000.0


def test_backoff_doubles_up_to_the_cap_with_half_of_it_jittered() -> None:
    base, cap = timedelta(seconds=1), timedelta(seconds=5)

    def low() -> float:
        return 0.0

    def high() -> float:
        return 1.0

    assert backoff_delay(0, base=base, cap=cap, random=low) == timedelta(seconds=0.5)
    assert backoff_delay(0, base=base, cap=cap, random=high) == timedelta(seconds=1)
    assert backoff_delay(2, base=base, cap=cap, random=high) == timedelta(seconds=4)
    assert backoff_delay(2, base=base, cap=cap, random=low) == timedelta(seconds=2)
    assert backoff_delay(10, base=base, cap=cap, random=high) == cap, "capped"
    assert backoff_delay(10, base=base, cap=cap, random=low) == cap / 2


def test_restarts_after_a_lost_delta_token_spread_over_the_window() -> None:
    window = timedelta(seconds=30)
    draws = iter([0.0, 0.25, 0.999, 1.5, -1.0])

    def source() -> float:
        return next(draws)

    delays = [restart_delay(window, random=source) for _ in range(5)]
    assert delays[:3] == [timedelta(0), timedelta(seconds=7.5), window * 0.999]
    assert delays[3] == window, "a source out of range is held to the window"
    assert delays[4] == timedelta(0)
    assert restart_delay(timedelta(0), random=source) == timedelta(0), "no window, no wait"


def test_a_budget_must_allow_something() -> None:
    with pytest.raises(ValueError, match="requests"):
        RequestBudget(0, timedelta(minutes=10))
    with pytest.raises(ValueError, match="per"):
        RequestBudget(1, timedelta(0))
