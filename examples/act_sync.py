"""Appointment, contact and task sync on the in-memory CRM and Exchange: a contact goes to
Exchange, an edit in Outlook comes back, and a conflict is settled by the documented policy.

Run it from the repository root::

    python examples/act_sync.py
"""

from __future__ import annotations

import asyncio

from serversync import (
    ActDeliveryMethod,
    ActEntity,
    MailboxRunReport,
    ServerType,
    TestStatus,
    Workload,
)
from serversync.testing import InMemoryWorld, a_profile, a_sync_filter

ALICE = "alice@contoso.example"


def show(title: str, report: MailboxRunReport) -> None:
    print(f"{title}:")
    for outcome in report.act:
        print(f"  {outcome.entity.value} {outcome.action.value}: {outcome.explanation}")


async def main() -> None:
    world = InMemoryWorld(profile=a_profile(server_type=ServerType.EXCHANGE_SERVER))
    mailbox = world.add_user(
        ALICE, act_delivery_method=ActDeliveryMethod.SERVER_SIDE_SYNC, act_status=TestStatus.SUCCESS
    )
    assert mailbox.owner is not None
    # "My contacts": without an enabled filter, no contact would go to Exchange.
    world.storage.add_sync_filter(a_sync_filter(mailbox.owner, ActEntity.CONTACT))
    contact = world.storage.add_act_record(
        ActEntity.CONTACT, mailbox.owner, {"first_name": "Ada", "last_name": "Lovelace"}
    )

    async def cycle(title: str) -> None:
        world.clock.advance(600)
        async with world.engine() as engine:
            (report,) = await engine.sync_mailbox(mailbox.id, workloads=[Workload.ACT])
        show(title, report)

    await cycle("CRM contact to Exchange")
    (item,) = world.exchange.items(ALICE, ActEntity.CONTACT)

    world.exchange.edit_item(ALICE, ActEntity.CONTACT, item.key.item_id, {"job_title": "Countess"})
    await cycle("Outlook edit back to the CRM")

    world.storage.edit_act_record(contact.ref, {"company": "Analytical Engines"})
    world.clock.advance(60)  # Outlook edits the same field a minute later: it wins
    world.exchange.edit_item(
        ALICE, ActEntity.CONTACT, item.key.item_id, {"company": "Babbage & Co"}
    )
    await cycle("Both sides changed the company")

    stored = world.storage.act_record(contact.ref)
    assert stored is not None
    print(f"CRM company: {stored.fields['company']}")


if __name__ == "__main__":
    asyncio.run(main())
