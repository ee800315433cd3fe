"""A host's own relevance rule changing a decision, and the explanation that shows it.

The CRM wants every email from its VIP customers' domain tracked, even when it answers no
CRM email (Dynamics' default filter would reject it), and wants automatic replies ignored.
Run it with ``python examples/custom_rule.py``.
"""

from __future__ import annotations

import asyncio

import attrs

from serversync import (
    AutoReplyRule,
    DecisionReason,
    ParsedHeaders,
    RelevanceFacts,
    Track,
    Verdict,
    default_rules,
)
from serversync.testing import InMemoryWorld, an_email


@attrs.frozen
class TrackVipDomain:
    """Track mail from one customer domain for the receiving mailbox's owner."""

    domain: str
    name: str = "vip-domain"

    def evaluate(self, message: ParsedHeaders, facts: RelevanceFacts) -> Verdict | None:
        """Track mail from the domain; no opinion on anything else."""
        sender = message.sender
        if sender is None or not sender.address.endswith("@" + self.domain):
            return None  # no opinion: the next rule decides
        return Track(
            reason=DecisionReason.SENDER_MATCH,
            rule=self.name,
            explanation=f"mail from {self.domain} is always tracked",
            accepting_entity=facts.mailbox.owner,
        )


async def main() -> None:
    world = InMemoryWorld()
    alice = world.add_user("alice@contoso.example")  # tracks replies to CRM email only
    vip = an_email(sender="ceo@bigcustomer.example", to=["alice@contoso.example"], subject="Hi")
    auto = an_email(
        sender="ceo@bigcustomer.example",
        to=["alice@contoso.example"],
        subject="Out of office",
        headers=[("Auto-Submitted", "auto-replied")],
    )
    rules = [AutoReplyRule(), *default_rules(), TrackVipDomain("bigcustomer.example")]

    async with world.engine() as defaults_only, world.engine(rules=rules) as ours:
        for label, raw in (("VIP mail", vip), ("auto-reply", auto)):
            before = await defaults_only.explain(raw, alice.id)
            after = await ours.explain(raw, alice.id)
            print(f"{label}:")
            reason = before.reason.name if before.reason is not None else "-"
            print(f"  default rules -> {before.kind.value} ({reason})")
            print(f"  with our rules -> {after.kind.value} by {after.rule}: {after.explanation}")
            for step in after.trace:
                print(f"    {step.rule}: {step.decision.value}")


if __name__ == "__main__":
    asyncio.run(main())
