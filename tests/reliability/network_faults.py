"""The whole network-fault matrix as one command: ``python -m tests.reliability.network_faults``.

Every protocol (IMAP, POP3, SMTP, EWS), every stage and every fault, ``--rounds`` times, as
the tests in ``test_network_faults.py`` run them; it prints how many faults were injected per
stage, how the first run ended, and every problem found. It starts its own Dovecot and SMTP
server on 127.0.0.1 (the EWS cases start their own EWS test server).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Sequence

from tests.integration.dovecot import Dovecot
from tests.integration.smtp_server import Mode, SmtpServer
from tests.reliability.fault_cases import (
    ews_case,
    incoming_case,
    outgoing_case,
)
from tests.reliability.fault_judge import (
    EWS_STAGES,
    INCOMING_STAGES,
    SMTP_STAGES,
    Case,
    judge,
)
from tests.reliability.proxy import Action

__all__ = ["format_matrix", "run_matrix"]


def _group(
    protocol: str, action: Action, dovecot: Dovecot, smtp: SmtpServer
) -> list[Awaitable[Case]]:
    if protocol == "smtp":
        return [outgoing_case(smtp, stage, action) for stage in SMTP_STAGES]
    if protocol == "ews":
        return [ews_case(stage, action) for stage in EWS_STAGES]
    return [incoming_case(dovecot, protocol, stage, action) for stage in INCOMING_STAGES[protocol]]


async def run_matrix(dovecot: Dovecot, smtp: SmtpServer, *, rounds: int = 1) -> list[Case]:
    """Every protocol, stage and fault, ``rounds`` times; the stages of one protocol and
    fault run concurrently, as in the tests."""
    cases: list[Case] = []
    for _ in range(rounds):
        for action in Action:
            for protocol in (*INCOMING_STAGES, "smtp", "ews"):
                cases += await asyncio.gather(*_group(protocol, action, dovecot, smtp))
    return cases


def format_matrix(cases: Sequence[Case], seconds: float) -> str:
    """Faults injected per protocol and stage, how the first runs ended, the problems."""
    injected: Counter[tuple[str, str]] = Counter()
    by_action: dict[tuple[str, str], Counter[str]] = {}
    failed_transient: Counter[tuple[str, str]] = Counter()
    problems = [p for case in cases for p in judge(case)]
    for case in cases:
        key = (case.protocol, case.stage)
        count = sum(case.injected.values())
        injected[key] += count
        by_action.setdefault(key, Counter())[case.action.value] += count
        error = case.first.error
        failed_transient[key] += error is not None and error.transient
    lines = [f"{len(cases)} cases, {sum(injected.values())} faults injected in {seconds:.1f} s"]
    for (protocol, stage), count in sorted(injected.items()):
        actions = " ".join(f"{a} {n}" for a, n in sorted(by_action[(protocol, stage)].items()))
        lines.append(
            f"  {protocol:5} {stage:16} {count:4} ({actions}); first run failed transiently: "
            f"{failed_transient[(protocol, stage)]}"
        )
    lines.append(f"problems: {len(problems)}")
    lines += [f"  {p}" for p in problems]
    return "\n".join(lines)


async def _main(rounds: int) -> tuple[list[Case], float]:
    started = time.monotonic()
    with (
        Dovecot(oauth2_url="http://127.0.0.1:9/unused", users=80 * rounds + 10) as dovecot,
        SmtpServer(None, mode=Mode.PLAIN, require_auth=False) as smtp,
    ):
        cases = await run_matrix(dovecot, smtp, rounds=rounds)
    return cases, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    cases, seconds = asyncio.run(_main(args.rounds))
    print(format_matrix(cases, seconds))
    raise SystemExit(1 if any(judge(case) for case in cases) else 0)


if __name__ == "__main__":
    main()
