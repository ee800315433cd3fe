"""The conflict policy: what happens to a field changed on both sides since the last sync.

Dynamics documents none (the only trace is the mapping's ``userdecision`` column), so this
is serversync's decision, recorded in ``docs/decisions.md``:

- only two-way fields can conflict; a one-way field takes its direction's side, and a field
  that changed on both sides to the same value is no conflict at all;
- otherwise :class:`~serversync.settings.ConflictPolicy` picks the winner per field, entity
  or default: the CRM, Exchange, or (the default) the side modified last, a tie going to
  the CRM, the system of record;
- the losing side is overwritten with the winner's value, and the decision is kept on the
  mapping (``user_decision``) and in the cycle's outcome, so that it can be explained.
"""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

from serversync.model.act import ActEntity, ConflictWinner
from serversync.settings import ConflictPolicy

__all__ = ["ConflictDecision", "FieldConflict", "Side", "decision_of", "resolve_conflict"]


class Side(enum.StrEnum):
    """One side of the synchronization."""

    CRM = "crm"
    EXCHANGE = "exchange"


class ConflictDecision(enum.IntEnum):
    """What ``ExchangeSyncIdMapping.user_decision`` holds after a conflict (the column's
    values are undocumented in Dynamics; these are serversync's)."""

    CRM_WON = 1
    EXCHANGE_WON = 2


@attrs.frozen(kw_only=True)
class FieldConflict:
    """One field changed on both sides, the rule applied and the side that won."""

    field: str
    rule: ConflictWinner
    winner: Side

    def explain(self) -> str:
        """One line for logs and outcomes."""
        return f"{self.field}: changed on both sides, {self.winner.value} wins ({self.rule.value})"


def resolve_conflict(
    entity: ActEntity,
    field: str,
    policy: ConflictPolicy,
    *,
    crm_modified_on: datetime,
    exchange_modified_on: datetime,
) -> FieldConflict:
    """Decide a conflict on ``field``: which side's value both sides keep."""
    rule = policy.winner_for(entity, field)
    if rule is ConflictWinner.CRM:
        winner = Side.CRM
    elif rule is ConflictWinner.EXCHANGE:
        winner = Side.EXCHANGE
    else:
        winner = Side.EXCHANGE if exchange_modified_on > crm_modified_on else Side.CRM
    return FieldConflict(field=field, rule=rule, winner=winner)


def decision_of(conflicts: tuple[FieldConflict, ...]) -> ConflictDecision | None:
    """The decision recorded on the mapping: Exchange won when it won any field."""
    if not conflicts:
        return None
    if any(c.winner is Side.EXCHANGE for c in conflicts):
        return ConflictDecision.EXCHANGE_WON
    return ConflictDecision.CRM_WON
