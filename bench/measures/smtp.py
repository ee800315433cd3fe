"""SMTP send: serversync's SMTP session against raw aiosmtplib, with the same number of
connections, to aiosmtpd in a child process."""

from __future__ import annotations

import asyncio

import aiosmtplib

from bench._context import Bench, log
from bench._mail import MailPlan
from bench._results import Better, Result, Target, figure
from serversync.adapters.transports import SmtpTransport
from serversync.model import MessageId, OutgoingMessage, ServerEndpoint, TlsMode
from serversync.testing import a_mailbox, a_profile

__all__ = ["measure"]

SENDER = "crm@contoso.example"


def _messages(bench: Bench) -> list[OutgoingMessage]:
    plan = MailPlan(
        seed=bench.config.seed + 3,
        owner="customer@fabrikam.example",
        count=bench.config.smtp_messages,
    )
    return [
        OutgoingMessage(
            message_id=MessageId(plan.message_id(n)),
            sender=SENDER,
            recipients=(plan.owner,),
            data=data,
        )
        for n, data in enumerate(plan.messages())
    ]


async def raw_send(port: int, messages: list[OutgoingMessage], connections: int) -> tuple[int, int]:
    """The baseline: aiosmtplib, ``connections`` connections sharing the messages."""
    queue = list(reversed(messages))

    async def worker() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        while queue:
            message = queue.pop()
            await smtp.sendmail(message.sender, list(message.recipients), message.data)
        await smtp.quit()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return len(messages), sum(len(m.data) for m in messages)


async def our_send(port: int, messages: list[OutgoingMessage], connections: int) -> tuple[int, int]:
    """serversync's SMTP transport: ``connections`` sessions sharing the messages."""
    transport = SmtpTransport()
    profile = a_profile(outgoing=ServerEndpoint(host="127.0.0.1", port=port, tls=TlsMode.NONE))
    mailbox = a_mailbox(SENDER)
    queue = list(reversed(messages))

    async def worker() -> None:
        async with transport.open(mailbox, profile, None) as session:
            while queue:
                receipt = await session.send(queue.pop())
                assert not receipt.refused

    await asyncio.gather(*(worker() for _ in range(connections)))
    return len(messages), sum(len(m.data) for m in messages)


async def measure(bench: Bench) -> list[Result]:
    """SMTP send with one connection and with several."""
    sink = bench.smtp
    messages = _messages(bench)
    results = []
    for connections in bench.config.smtp_connections:

        async def ours(connections: int = connections) -> tuple[int, int]:
            before = sink.count()
            sent = await our_send(sink.port, messages, connections)
            assert sink.count() - before == len(messages)
            return sent

        async def baseline(connections: int = connections) -> tuple[int, int]:
            before = sink.count()
            sent = await raw_send(sink.port, messages, connections)
            assert sink.count() - before == len(messages)
            return sent

        log(f"smtp: {len(messages)} messages over {connections} connection(s)")
        mine, theirs = await bench.compare(ours, baseline)
        us = figure(f"serversync SmtpTransport, {connections} session(s)", mine)
        them = figure(f"aiosmtplib sendmail, {connections} connection(s)", theirs)
        plural = "s" if connections > 1 else ""
        results.append(
            Result(
                id=f"smtp_send_{connections}",
                title=f"SMTP send, {connections} connection{plural}",
                unit="× raw aiosmtplib msg/s",
                value=us.rate / them.rate,
                ratio=us.rate / them.rate,
                ratio_means="serversync msg/s ÷ raw aiosmtplib msg/s",
                target=Target(value=0.9, better=Better.HIGHER),
                ours=us,
                baseline=them,
                params={"messages": len(messages), "connections": connections, "tls": False},
            )
        )
    return results
