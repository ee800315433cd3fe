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
from serversync.testing._clock import FakeClock
from serversync.testing._world import InMemoryWorld
from serversync.testing.builders import (
    a_contact,
    a_mailbox,
    a_pending_email,
    a_profile,
    a_queue,
    a_sent_email,
    a_user,
    an_account,
    an_email,
)

__all__ = [
    "FakeClock",
    "FaultPlan",
    "FaultPoint",
    "InMemoryDirectory",
    "InMemoryIncomingTransport",
    "InMemoryMailServer",
    "InMemoryOutgoingTransport",
    "InMemoryStorage",
    "InMemoryWorld",
    "SentMessage",
    "SimulatedCrash",
    "StoredMessage",
    "a_contact",
    "a_mailbox",
    "a_pending_email",
    "a_profile",
    "a_queue",
    "a_sent_email",
    "a_user",
    "an_account",
    "an_email",
]
