"""Test helpers for hosts (and for serversync itself): in-memory adapters held to the same
contract as the real ones, a fake clock, failure injection and test-data builders.

Typical use in a host's test::

    world = InMemoryWorld()
    alice = world.add_user("alice@contoso.example")
    world.deliver("alice@contoso.example", an_email(to=["alice@contoso.example"]))
    async with world.engine() as engine:
        report = await engine.run_once()
"""

from serversync.adapters._faults import FaultPlan, FaultPoint, SimulatedCrash
from serversync.adapters.storage.memory import InMemoryDirectory, InMemoryStorage
from serversync.adapters.transports.memory import (
    InMemoryIncomingTransport,
    InMemoryMailServer,
    InMemoryOutgoingTransport,
    SentMessage,
    StoredMessage,
)
from serversync.adapters.transports.memory_items import (
    InMemoryExchange,
    InMemoryExchangeItemsTransport,
    SentCancellation,
)
from serversync.testing._clock import FakeClock
from serversync.testing._world import InMemoryWorld
from serversync.testing.act_contracts import (
    check_act_record_repository,
    check_exchange_items_session,
    check_exchange_sync_id_mapping_repository,
)
from serversync.testing.builders import (
    a_contact,
    a_mailbox,
    a_pending_email,
    a_profile,
    a_queue,
    a_sent_email,
    a_sync_filter,
    a_user,
    an_account,
    an_email,
)

__all__ = [
    "FakeClock",
    "FaultPlan",
    "FaultPoint",
    "InMemoryDirectory",
    "InMemoryExchange",
    "InMemoryExchangeItemsTransport",
    "InMemoryIncomingTransport",
    "InMemoryMailServer",
    "InMemoryOutgoingTransport",
    "InMemoryStorage",
    "InMemoryWorld",
    "SentCancellation",
    "SentMessage",
    "SimulatedCrash",
    "StoredMessage",
    "a_contact",
    "a_mailbox",
    "a_pending_email",
    "a_profile",
    "a_queue",
    "a_sent_email",
    "a_sync_filter",
    "a_user",
    "an_account",
    "an_email",
    "check_act_record_repository",
    "check_exchange_items_session",
    "check_exchange_sync_id_mapping_repository",
]
