"""POP3 ingest: serversync's POP3 session against raw poplib, every message's header block
(TOP n 0) and then every whole message (RETR)."""

from __future__ import annotations

import poplib

from bench._context import Bench, log
from bench._mail import MailPlan
from bench._results import Better, Result, Target, figure
from bench._servers import PASSWORD
from bench._wiring import pop3_profile
from serversync.adapters.transports import Pop3Transport
from serversync.model import INBOX, Credentials, EmailServerProfile, Secret
from serversync.testing import a_mailbox

__all__ = ["measure"]


def raw_pop3(port: int, user: str) -> tuple[int, int]:
    """The baseline: poplib, UIDL and LIST, TOP n 0 for every message, then RETR for each."""
    client = poplib.POP3("127.0.0.1", port)
    client.user(user)
    client.pass_(PASSWORD)
    _, listing, _ = client.uidl()
    client.list()
    numbers = [int(line.split()[0]) for line in listing]
    size = 0
    for number in numbers:
        _, _, octets = client.top(number, 0)
        size += octets
    for number in numbers:
        _, lines, octets = client.retr(number)
        size += octets
        assert lines
    client.quit()
    return len(numbers), size


async def our_pop3(profile: EmailServerProfile, user: str, count: int) -> tuple[int, int]:
    """serversync's POP3 session: ``list_new``, ``fetch_headers`` of the batch, then
    ``fetch_message`` for each message."""
    transport = Pop3Transport()
    login = Credentials(username=user, secret=Secret(PASSWORD))
    async with transport.open(a_mailbox(user), profile, login) as session:
        batch = await session.list_new(INBOX, None, limit=count)
        headers = await session.fetch_headers(batch.refs)
        assert all(h.data for h in headers)
        for ref in batch.refs:
            message = await session.fetch_message(ref)
            assert message.data
    return len(batch.refs), transport.stats.bytes_received


async def measure(bench: Bench) -> list[Result]:
    """POP3 ingest against raw poplib."""
    config = bench.config
    dovecot = bench.dovecot
    plan = MailPlan(seed=config.seed + 2, owner=bench.POP3_USER, count=config.pop3_messages)
    log(f"pop3: seeding {plan.count} messages")
    bench.seed(plan.owner, plan)
    profile = pop3_profile(dovecot)

    async def ours() -> tuple[int, int]:
        return await our_pop3(profile, plan.owner, plan.count)

    async def baseline() -> tuple[int, int]:
        return raw_pop3(dovecot.pop3_port, plan.owner)

    log("pop3: ingest")
    mine, theirs = await bench.compare(ours, baseline)
    us = figure("serversync Pop3Transport: list_new, fetch_headers, fetch_message", mine)
    them = figure("poplib: UIDL, TOP n 0 and RETR of every message", theirs)
    assert us.items == them.items == plan.count
    return [
        Result(
            id="pop3_ingest",
            title="POP3 ingest (TOP and RETR of every message)",
            unit="× raw poplib msg/s",
            value=us.rate / them.rate,
            ratio=us.rate / them.rate,
            ratio_means="serversync msg/s ÷ raw poplib msg/s",
            target=Target(value=0.8, better=Better.HIGHER),
            ours=us,
            baseline=them,
            params={"messages": plan.count, "tls": False},
        )
    ]
