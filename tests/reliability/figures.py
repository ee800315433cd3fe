"""What a run of crash trials found, summed, and the lines the closing note quotes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs

from serversync import ExpiredClaimPolicy
from tests.reliability.scenario import Outcome

__all__ = ["Figures", "format_figures"]


@attrs.define(kw_only=True)
class Figures:
    """What a run of trials found, summed."""

    trials: int = 0
    kills: int = 0
    kills_during_incoming: int = 0
    kills_during_outgoing: int = 0
    kills_while_idle: int = 0
    kills_after_acceptance: int = 0
    """Kills between the SMTP server's 250 and the outcome being stored."""
    kills_by_target: Counter[str] = attrs.Factory(Counter)
    relevant_messages: int = 0
    irrelevant_messages: int = 0
    emails: int = 0
    lost_messages: int = 0
    duplicated_messages: int = 0
    lost_emails: int = 0
    double_sends: int = 0
    double_sends_default_policy: int = 0
    uncertain: int = 0
    uncertain_delivered: int = 0
    resent_after_expiry: int = 0
    seconds: float = 0.0
    problems: list[str] = attrs.Factory(list)

    def add(self, outcome: Outcome, *, trial: str, policy: ExpiredClaimPolicy) -> None:
        """Count one trial's outcome; ``trial`` names it in the problems."""
        self.trials += 1
        self.relevant_messages += outcome.relevant
        self.irrelevant_messages += outcome.irrelevant
        self.emails += outcome.emails
        self.lost_messages += outcome.lost_messages
        self.duplicated_messages += outcome.duplicated_messages
        self.lost_emails += outcome.lost_emails
        self.double_sends += outcome.double_sends
        if policy is ExpiredClaimPolicy.MARK_UNCERTAIN:
            self.double_sends_default_policy += outcome.double_sends
        self.uncertain += outcome.uncertain
        self.uncertain_delivered += outcome.uncertain_delivered
        self.resent_after_expiry += outcome.resent_after_expiry
        self.problems += [f"{trial}: {p}" for p in outcome.problems]

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON-ready values."""
        data = attrs.asdict(self)
        data["kills_by_target"] = dict(sorted(self.kills_by_target.items()))
        return data


def format_figures(figures: Figures) -> str:
    """The figures as the lines the closing note quotes."""
    f = figures
    targets = ", ".join(f"{k} {v}" for k, v in sorted(f.kills_by_target.items()))
    return "\n".join(
        [
            f"trials: {f.trials} in {f.seconds} s",
            f"kills: {f.kills} (during incoming {f.kills_during_incoming}, during outgoing "
            f"{f.kills_during_outgoing}, idle {f.kills_while_idle}; aimed at: {targets})",
            f"kills between the SMTP server's acceptance and the stored outcome: "
            f"{f.kills_after_acceptance}",
            f"relevant messages: {f.relevant_messages}, not relevant: {f.irrelevant_messages}, "
            f"emails to send: {f.emails}",
            f"messages lost: {f.lost_messages}, duplicated: {f.duplicated_messages}",
            f"emails lost: {f.lost_emails}, double sends: {f.double_sends} "
            f"(under the default policy: {f.double_sends_default_policy})",
            f"uncertain (default policy): {f.uncertain}, of which the server had accepted "
            f"{f.uncertain_delivered}; resent after an expired claim (resend policy): "
            f"{f.resent_after_expiry}",
            f"problems: {len(f.problems)}",
            *(f"  {p}" for p in f.problems[:50]),
        ]
    )
