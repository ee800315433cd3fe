"""Crash trials in the normal suite: 10 on SQLite and 10 on PostgreSQL.

Each trial kills the engine process with SIGKILL one to three times at moments drawn from a
fixed seed (while it fetches, stores, sends, or after the SMTP server accepted an email), then
lets a last process finish (see :mod:`tests.reliability.crash_trials`). The long run is
``python -m tests.reliability.crash_trials --trials 200``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from serversync import ExpiredClaimPolicy
from tests.conftest import Postgres
from tests.integration.dovecot import Dovecot
from tests.integration.smtp_server import Mode, SmtpServer
from tests.reliability.crash_trials import Trials, plan_trials
from tests.reliability.figures import format_figures
from tests.reliability.stores import StoreMaker
from tests.reliability.zygote import Zygote

pytestmark = pytest.mark.integration

TRIALS_PER_STORE = 10
SEED = 20261124


@pytest.fixture(scope="module")
def smtp(trial_dovecot: Dovecot) -> Iterator[SmtpServer]:
    """aiosmtpd with STARTTLS in this process: it outlives every engine process it counts."""
    # A killed engine leaves aiosmtpd sessions cut in the middle; it logs each at length.
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    with SmtpServer(trial_dovecot.pki, mode=Mode.STARTTLS, require_auth=False) as server:
        yield server


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
async def test_engine_killed_at_random_moments_loses_and_duplicates_nothing(
    store: str, trial_dovecot: Dovecot, smtp: SmtpServer, postgres: Postgres, tmp_path: Path
) -> None:
    plans = plan_trials(TRIALS_PER_STORE, seed=SEED + (store == "postgresql"), stores=[store])
    stores = await StoreMaker.create(tmp_path, postgres.fresh_database)
    async with Zygote() as zygote:
        trials = Trials(
            dovecot=trial_dovecot,
            smtp=smtp,
            zygote=zygote,
            fresh_store=stores.fresh,
            workdir=tmp_path,
        )
        # PostgreSQL trials wait on connections more than they compute; SQLite ones compute.
        figures = await trials.run(plans, concurrency=3 if store == "sqlite" else 2)

    summary = format_figures(figures)
    assert figures.problems == [], summary
    assert figures.trials == TRIALS_PER_STORE
    assert figures.lost_messages == figures.duplicated_messages == 0, summary
    assert figures.lost_emails == 0, summary
    assert figures.double_sends_default_policy == 0, summary
    # The trials did hit work: kills during incoming and during outgoing work, and under
    # both policies.
    assert figures.kills_during_incoming > 0, summary
    assert figures.kills_during_outgoing > 0, summary
    assert {p.policy for p in plans} == set(ExpiredClaimPolicy)
