"""Exactly-once under failures: a hypothesis state machine over the engine and memory adapters.

It delivers mail (relevant and not, with and without Message-IDs, to one or two mailboxes),
queues emails to send, injects crashes and transient errors at any fault point of the
storage or the mail server, restarts the engine (a crash discards it; the next run uses a
new engine id, so the dead engine's leases and claims must expire first) and lets time
pass. After every step no (Message-ID, direction) is stored twice and no email reached the
server twice; once the faults stop and time passes, every relevant message is stored exactly
once, nothing irrelevant is stored, and every email to send ended Sent or Failed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from datetime import timedelta

import attrs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from serversync import (
    ConnectionFailedError,
    EmailDirection,
    EmailStatus,
    IncomingFilteringMethod,
    MessageId,
    StorageConflictError,
    SyncEngine,
    TransientError,
)
from serversync.mime import derive_message_id, parse_headers
from serversync.model import EmailActivity
from serversync.testing import (
    FaultPoint,
    InMemoryWorld,
    SimulatedCrash,
    a_contact,
    a_pending_email,
    a_sent_email,
    an_email,
)

ALICE = "alice@contoso.example"  # tracks replies to CRM email
BOB = "bob@contoso.example"  # tracks all email
SUPPORT = "support@contoso.example"  # a queue tracking all email
CUSTOMER = "customer@fabrikam.example"
QUOTE = "<quote-1@contoso.example>"

# (recipients, is it a reply to Alice's CRM email, is it relevant)
KINDS = {
    "reply-to-alice": ((ALICE,), True, True),
    "news-to-alice": ((ALICE,), False, False),
    "to-bob": ((BOB,), False, True),
    "to-support": ((SUPPORT,), False, True),
    "alice-and-bob": ((ALICE, BOB), False, True),
    "support-and-alice-reply": ((SUPPORT, ALICE), True, True),
}


class ExactlyOnce(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = InMemoryWorld()
        self.alice = self.world.add_user(ALICE)
        self.bob = self.world.add_user(BOB, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
        self.support = self.world.add_queue(SUPPORT)
        self.world.add_record(a_contact(CUSTOMER))
        self.world.storage.put_activity(
            a_sent_email(
                sender_mailbox=self.alice, to=[CUSTOMER], subject="Quote", message_id=QUOTE
            )
        )
        self.serial = itertools.count()
        self.relevant: set[MessageId] = set()
        self.irrelevant: set[MessageId] = set()
        self.to_send: list[EmailActivity] = []
        self.engines = itertools.count()

    # -- what happens in the world ------------------------------------------------------------

    @rule(kind=st.sampled_from(sorted(KINDS)), with_message_id=st.booleans())
    def deliver(self, kind: str, with_message_id: bool) -> None:
        recipients, is_reply, relevant = KINDS[kind]
        n = next(self.serial)
        data = an_email(
            sender=CUSTOMER,
            to=list(recipients),
            subject=f"{kind} {n}",
            message_id=f"<m{n}@fabrikam.example>" if with_message_id else "",
            in_reply_to=QUOTE if is_reply else None,
        )
        headers = parse_headers(data)
        message_id = headers.message_id or derive_message_id(headers)
        (self.relevant if relevant else self.irrelevant).add(message_id)
        reached = self.world.send_mail(data)
        assert sorted(reached) == sorted(recipients)

    @rule(from_queue=st.booleans())
    def queue_an_email_to_send(self, from_queue: bool) -> None:
        sender = self.support if from_queue else self.alice
        email = a_pending_email(
            sender_mailbox=sender, to=[CUSTOMER], subject=f"outgoing {next(self.serial)}"
        )
        self.world.storage.put_activity(email)
        self.to_send.append(email)

    @rule(
        where=st.sampled_from(["storage", "server"]),
        after=st.integers(min_value=0, max_value=40),
        crash=st.booleans(),
    )
    def arm_a_fault(self, where: str, after: int, crash: bool) -> None:
        if where == "storage":
            faults = self.world.storage.faults
            if crash:
                faults.crash_after(after, SimulatedCrash)
            else:
                # A storage error may come after the write committed (the answer was lost).
                faults.crash_after(after, lambda: StorageConflictError("deadlock"))
        elif crash:
            self.world.server.faults.crash_after(after, SimulatedCrash)
        else:
            # Transient server errors only before an operation takes effect: an error after
            # the server accepted a message is indistinguishable from a refusal for any
            # client, and no engine can avoid resending then.
            self.world.server.faults.crash_after(
                after, lambda: ConnectionFailedError("reset"), point=FaultPoint.BEFORE
            )

    @rule(
        at=st.sampled_from(
            [
                ("storage", "add_incoming", FaultPoint.BEFORE),
                ("storage", "add_incoming", FaultPoint.AFTER),
                ("storage", "save_checkpoint", FaultPoint.BEFORE),
                ("storage", "save_checkpoint", FaultPoint.AFTER),
                ("storage", "claim_pending_send", FaultPoint.AFTER),
                ("storage", "record_send_outcome", FaultPoint.BEFORE),
                ("storage", "record_send_outcome", FaultPoint.AFTER),
                ("storage", "save_workload_state", FaultPoint.BEFORE),
                ("server", "fetch_message", FaultPoint.BEFORE),
                ("server", "mark", FaultPoint.BEFORE),
                ("server", "mark", FaultPoint.AFTER),
                ("server", "send", FaultPoint.BEFORE),
                ("server", "send", FaultPoint.AFTER),
            ]
        ),
        skip=st.integers(min_value=0, max_value=1),
    )
    def run_and_crash_at(self, at: tuple[str, str, FaultPoint], skip: int) -> None:
        where, operation, point = at
        faults = self.world.storage.faults if where == "storage" else self.world.server.faults
        faults.fail_next(operation, SimulatedCrash, point=point, skip=skip)
        asyncio.run(self._run_once())

    @rule(minutes=st.sampled_from([1, 5, 11, 31]))
    def time_passes(self, minutes: int) -> None:
        self.world.clock.advance(timedelta(minutes=minutes))

    @rule()
    def run_the_engine(self) -> None:
        asyncio.run(self._run_once())

    async def _run_once(self) -> None:
        # Faults are injected at random: a long enough streak of transient ones would disable
        # a workload (the error policy), which is not what this machine is about.
        sync_settings = attrs.evolve(
            self.world.settings,
            retry=attrs.evolve(self.world.settings.retry, max_transient_failures=1000),
        )
        engine: SyncEngine = self.world.engine(
            engine_id=f"engine-{next(self.engines)}", settings=sync_settings
        )
        try:
            async with engine:
                await engine.run_once()
        except SimulatedCrash:
            pass  # the process died before any mailbox task started
        except TransientError:
            pass  # the storage failed while listing mailboxes: the whole run fails
        except BaseExceptionGroup as group:
            # The process died in a mailbox task: only simulated crashes may get out.
            _, rest = group.split(SimulatedCrash)
            assert rest is None, f"the engine let an error escape: {rest!r}"

    # -- what must always hold ------------------------------------------------------------------

    @invariant()
    def no_email_is_stored_twice(self) -> None:
        keys = Counter(
            (a.message_id, a.direction)
            for a in self.world.storage.activities()
            if a.message_id is not None
        )
        assert not [k for k, n in keys.items() if n > 1], keys

    @invariant()
    def nothing_irrelevant_is_stored(self) -> None:
        stored = {a.message_id for a in self._incoming()}
        assert not stored & self.irrelevant

    @invariant()
    def no_email_reaches_the_server_twice(self) -> None:
        sent = Counter(parse_headers(m.data).message_id for m in self.world.server.outbox)
        assert all(n == 1 for n in sent.values()), sent

    def _incoming(self) -> list[EmailActivity]:
        return [
            a for a in self.world.storage.activities() if a.direction is EmailDirection.INCOMING
        ]

    # -- and once the storms pass ---------------------------------------------------------------

    @rule()
    def settle(self) -> None:
        self._settle()

    def teardown(self) -> None:
        # Every example ends with the storms passed, so each one checks the final promise.
        self._settle()

    def _settle(self) -> None:
        self.world.storage.faults.clear()
        self.world.server.faults.clear()
        for _ in range(12):
            self.world.clock.advance(timedelta(minutes=31))
            asyncio.run(self._run_once())
        stored = Counter(a.message_id for a in self._incoming())
        missing = self.relevant - set(stored)
        assert not missing, f"relevant messages never stored: {sorted(missing)}"
        assert all(stored[m] == 1 for m in self.relevant)
        by_id = {a.id: a for a in self.world.storage.activities()}
        for email in self.to_send:
            final = by_id[email.id]
            assert final.status in (EmailStatus.SENT, EmailStatus.FAILED), final
            if final.status is EmailStatus.FAILED:
                assert final.delivery_uncertain or final.last_send_error is not None


ExactlyOnce.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_exactly_once_under_failures = ExactlyOnce.TestCase
