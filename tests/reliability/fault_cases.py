"""One network fault, end to end: a mailbox behind a :class:`FaultProxy`, two engine runs.

:func:`incoming_case` puts two replies to a CRM email (relevant) and a newsletter (not
relevant) in a fresh Dovecot account, arms one fault for the IMAP or POP3 connection, runs
the incoming workload (the fault fires), then runs it again without a fault.
:func:`outgoing_case` does the same with two emails in Pending Send and the SMTP server.
Both return a :class:`Case` with what each run reported and what ended up stored or
accepted, for the tests to judge. Timeouts are short, so a stall meets a deadline in a second.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from types import FrameType

from serversync import (
    ActivityId,
    CredentialSource,
    EmailDirection,
    ExpiredClaimPolicy,
    IncomingFilteringMethod,
    Limits,
    MailboxId,
    MailboxRunReport,
    MappingCredentials,
    ProfileId,
    RetryPolicy,
    ServerEndpoint,
    ServerType,
    SyncEngine,
    SyncSettings,
    Timeouts,
    TlsMode,
    Transports,
    Workload,
    WorkloadState,
)
from serversync.adapters.transports import ImapTransport, Pop3Transport, SmtpTransport
from serversync.mime import outgoing_message_id
from serversync.model import Credentials, Secret
from serversync.testing import (
    InMemoryDirectory,
    InMemoryStorage,
    a_mailbox,
    a_pending_email,
    a_profile,
    a_sent_email,
    a_user,
    an_email,
)
from tests.integration.dovecot import Dovecot
from tests.integration.smtp_server import SmtpServer
from tests.reliability.fault_judge import EWS_OUTGOING_STAGES, Case
from tests.reliability.proxy import (
    Action,
    EwsStages,
    Fault,
    FaultProxy,
    ImapStages,
    Pop3Stages,
    SmtpStages,
    Stages,
)
from tests.reliability.scenario import accepted_message_ids

__all__ = ["RUN_LIMIT", "TIMEOUTS", "ews_case", "incoming_case", "outgoing_case", "threads_in"]

TIMEOUTS = Timeouts(
    connect=timedelta(seconds=1),
    command=timedelta(seconds=1),
    fetch=timedelta(seconds=1),
    send=timedelta(seconds=1),
    storage=timedelta(seconds=5),
    close=timedelta(milliseconds=500),
)
RUN_LIMIT = 8.0
"""Seconds a faulty run may take at most: a few deadlines, never an unbounded wait."""

# Stages met more than once per run: the fault lets the first pass, so that the run has
# stored something before it fails.
_SKIP_ONE = frozenset(
    {"message", "store", "top", "retr", "mail", "rcpt", "data", "end-of-data", "CreateItem"}
)
_CUSTOMER = "jane@fabrikam.example"
_serial = itertools.count(1)


def _settings(
    policy: ExpiredClaimPolicy = ExpiredClaimPolicy.MARK_UNCERTAIN, *, limits: Limits | None = None
) -> SyncSettings:
    return SyncSettings(
        timeouts=TIMEOUTS,
        limits=limits or Limits(),
        # An email whose attempt failed is due again at once, for the second run.
        retry=RetryPolicy(
            send_retry_interval=timedelta(milliseconds=1), expired_claim_policy=policy
        ),
    )


def threads_in(module_file: str) -> int:
    """Threads whose stack is inside ``module_file`` now (a worker stuck on a socket)."""
    return sum(
        any(module_file in frame.f_code.co_filename for frame in _stack(top))
        for top in sys._current_frames().values()
    )


def _stack(frame: FrameType) -> list[FrameType]:
    frames = []
    current: FrameType | None = frame
    while current is not None:
        frames.append(current)
        current = current.f_back
    return frames


async def _twice(
    engine: SyncEngine,
    storage: InMemoryStorage,
    proxy: FaultProxy,
    mailbox_id: MailboxId,
    workload: Workload,
    *,
    idle_seconds: float = 2.0,
) -> tuple[MailboxRunReport, float, WorkloadState | None, MailboxRunReport, bool, bool]:
    started = time.monotonic()
    async with asyncio.timeout(RUN_LIMIT):
        (first,) = await engine.sync_mailbox(mailbox_id, workloads=[workload])
    seconds = time.monotonic() - started
    after_first = await storage.get_workload_state(mailbox_id, workload)
    idle_after_first = await proxy.wait_idle(seconds=idle_seconds)
    proxy.disarm()
    await asyncio.sleep(0.05)  # past an email's retry time (send_retry_interval)
    async with asyncio.timeout(RUN_LIMIT):
        (second,) = await engine.sync_mailbox(mailbox_id, workloads=[workload])
    idle_after_second = await proxy.wait_idle(seconds=idle_seconds)
    return first, seconds, after_first, second, idle_after_first, idle_after_second


async def incoming_case(dovecot: Dovecot, protocol: str, stage: str, action: Action) -> Case:
    """One fault on the IMAP or POP3 connection of a fresh mailbox."""
    user = dovecot.add_user()
    storage, directory = InMemoryStorage(), InMemoryDirectory()
    record = a_user(user.address, filtering=IncomingFilteringMethod.IN_RESPONSE_TO_CRM_EMAIL)
    directory.add(record)
    port, stages, server_type = {
        "imap": (dovecot.imap_port, ImapStages, ServerType.IMAP_SMTP),
        "pop3": (dovecot.pop3_port, Pop3Stages, ServerType.OTHER_POP3_SMTP),
    }[protocol]
    stage_factory: Callable[[], Stages] = stages
    async with FaultProxy(port, stage_factory) as proxy:
        profile = a_profile(
            id=ProfileId(f"proxy-{protocol}-{user.address}"),
            server_type=server_type,
            incoming=ServerEndpoint(host="127.0.0.1", port=proxy.port, tls=TlsMode.NONE),
        )
        storage.add_profile(profile)
        mailbox = a_mailbox(user.address, owner=record.ref, profile_id=profile.id)
        storage.add_mailbox(mailbox)
        n = next(_serial)
        anchor = f"<quote-fault-{n}@serversync.test>"
        storage.put_activity(
            a_sent_email(sender_mailbox=mailbox, to=[_CUSTOMER], subject="Quote", message_id=anchor)
        )
        replies = [f"<reply-fault-{n}-{k}@fabrikam.example>" for k in range(2)]
        messages = [
            an_email(
                sender=_CUSTOMER,
                to=[user.address],
                subject="RE: Quote",
                message_id=replies[0],
                in_reply_to=anchor,
                body="first reply " * 300,
            ),
            an_email(sender="news@elsewhere.example", to=[user.address], subject="News"),
            an_email(
                sender=_CUSTOMER,
                to=[user.address],
                subject="RE: Quote",
                message_id=replies[1],
                in_reply_to=anchor,
                body="second reply " * 300,
            ),
        ]
        await asyncio.to_thread(dovecot.append, user, *messages)
        credentials = MappingCredentials(
            by_mailbox={
                mailbox.id: Credentials(username=user.address, secret=Secret(user.password))
            }
        )
        transports = Transports.by_server_type(
            incoming={
                ServerType.IMAP_SMTP: ImapTransport(timeouts=TIMEOUTS),
                ServerType.OTHER_POP3_SMTP: Pop3Transport(timeouts=TIMEOUTS),
            },
            outgoing={},
        )
        proxy.arm(Fault(stage, action, skip=1 if stage in _SKIP_ONE else 0))
        async with SyncEngine(
            repositories=storage,
            directory=directory,
            transports=transports,
            credentials=credentials,
            # One message a header batch: the engine fetches and tags a batch's tracked
            # messages together, and the stages met more than once must be met per message.
            settings=_settings(limits=Limits(incoming_batch_size=1)),
        ) as engine:
            runs = await _twice(engine, storage, proxy, mailbox.id, Workload.INCOMING)
        injected = Counter(proxy.injected)
    first, seconds, after_first, second, idle_first, idle_second = runs
    stored = Counter(
        str(a.message_id) for a in storage.activities() if a.direction is EmailDirection.INCOMING
    )
    return Case(
        protocol=protocol,
        stage=stage,
        action=action,
        injected=injected,
        first=first,
        first_seconds=seconds,
        after_first=after_first,
        second=second,
        after_second=await storage.get_workload_state(mailbox.id, Workload.INCOMING),
        idle_after_first=idle_first,
        idle_after_second=idle_second,
        expected=frozenset(replies),
        stored=stored,
        accepted=Counter(),
        emails=(),
    )


async def outgoing_case(
    smtp: SmtpServer,
    stage: str,
    action: Action,
    policy: ExpiredClaimPolicy = ExpiredClaimPolicy.MARK_UNCERTAIN,
) -> Case:
    """One fault on the SMTP connection of a fresh mailbox with two emails to send."""
    n = next(_serial)
    address = f"sender-{n}@contoso.example"
    storage, directory = InMemoryStorage(), InMemoryDirectory()
    record = a_user(address)
    directory.add(record)
    async with FaultProxy(smtp.port, SmtpStages) as proxy:
        profile = a_profile(
            id=ProfileId(f"proxy-smtp-{n}"),
            server_type=ServerType.IMAP_SMTP,
            incoming=ServerEndpoint(host="127.0.0.1", port=1, tls=TlsMode.NONE),
            outgoing=ServerEndpoint(host="127.0.0.1", port=proxy.port, tls=TlsMode.NONE),
            outgoing_credential_source=CredentialSource.WITHOUT_CREDENTIALS,
        )
        storage.add_profile(profile)
        mailbox = a_mailbox(address, owner=record.ref, profile_id=profile.id)
        storage.add_mailbox(mailbox)
        message_ids = []
        for k in range(2):
            email = a_pending_email(
                sender_mailbox=mailbox,
                to=[_CUSTOMER],
                subject=f"Offer {k}",
                body="Our offer. " * 200,
                id=ActivityId(f"fault-{n}-{k}"),
            )
            storage.put_activity(email)
            message_ids.append(outgoing_message_id(email.id, "contoso.example"))
        proxy.arm(Fault(stage, action, skip=1 if stage in _SKIP_ONE else 0))
        async with SyncEngine(
            repositories=storage,
            directory=directory,
            transports=Transports.by_server_type(
                incoming={}, outgoing={ServerType.IMAP_SMTP: SmtpTransport(timeouts=TIMEOUTS)}
            ),
            credentials=MappingCredentials(),
            settings=_settings(policy),
        ) as engine:
            runs = await _twice(engine, storage, proxy, mailbox.id, Workload.OUTGOING)
        injected = Counter(proxy.injected)
    first, seconds, after_first, second, idle_first, idle_second = runs
    # The server may still be finishing a message whose connection the fault cut.
    await asyncio.sleep(0.05)
    accepted = accepted_message_ids(smtp)
    return Case(
        protocol="smtp",
        stage=stage,
        action=action,
        injected=injected,
        first=first,
        first_seconds=seconds,
        after_first=after_first,
        second=second,
        after_second=await storage.get_workload_state(mailbox.id, Workload.OUTGOING),
        idle_after_first=idle_first,
        idle_after_second=idle_second,
        expected=frozenset(message_ids),
        stored=Counter(),
        accepted=Counter({m: accepted[m] for m in message_ids}),
        emails=tuple(a for a in storage.activities() if a.direction is EmailDirection.OUTGOING),
    )


async def ews_case(stage: str, action: Action) -> Case:
    """One fault on the HTTP connection to the EWS test server: a fresh server and mailbox
    with two replies and a newsletter in the Inbox and two emails to send; the stage is
    the SOAP operation, and the workload the one that uses it."""
    from serversync.adapters.transports import EXCHANGE_SERVER_TYPES, EwsTransport
    from serversync.testing.ews import EwsTestServer

    address = "alice@contoso.example"
    workload = Workload.OUTGOING if stage in EWS_OUTGOING_STAGES else Workload.INCOMING
    storage, directory = InMemoryStorage(), InMemoryDirectory()
    record = a_user(address, filtering=IncomingFilteringMethod.IN_RESPONSE_TO_CRM_EMAIL)
    directory.add(record)
    async with EwsTestServer() as server, FaultProxy(server.port, EwsStages) as proxy:
        server.add_mailbox(address, password="secret")
        url = server.url.replace(f":{server.port}/", f":{proxy.port}/")
        profile = a_profile(
            server_type=ServerType.EXCHANGE_SERVER,
            incoming=ServerEndpoint(host=url, tls=TlsMode.NONE),
        )
        storage.add_profile(profile)
        mailbox = a_mailbox(address, owner=record.ref, profile_id=profile.id)
        storage.add_mailbox(mailbox)
        anchor = "<quote-ews@contoso.example>"
        storage.put_activity(
            a_sent_email(sender_mailbox=mailbox, to=[_CUSTOMER], subject="Quote", message_id=anchor)
        )
        replies = [f"<reply-ews-{k}@fabrikam.example>" for k in range(2)]
        server.deliver(
            address,
            an_email(
                sender=_CUSTOMER,
                to=[address],
                message_id=replies[0],
                subject="RE: Quote",
                in_reply_to=anchor,
            ),
        )
        server.deliver(address, an_email(sender="news@elsewhere.example", to=[address]))
        server.deliver(
            address,
            an_email(
                sender=_CUSTOMER,
                to=[address],
                message_id=replies[1],
                subject="RE: Quote",
                in_reply_to=anchor,
            ),
        )
        message_ids = []
        for k in range(2):
            email = a_pending_email(
                sender_mailbox=mailbox,
                to=[_CUSTOMER],
                subject=f"Offer {k}",
                id=ActivityId(f"ews-{k}"),
            )
            storage.put_activity(email)
            message_ids.append(outgoing_message_id(email.id, "contoso.example"))
        ews = EwsTransport(timeouts=TIMEOUTS)
        credentials = MappingCredentials(
            by_mailbox={mailbox.id: Credentials(username=address, secret=Secret("secret"))}
        )
        proxy.arm(Fault(stage, action, skip=1 if stage in _SKIP_ONE else 0))
        async with SyncEngine(
            repositories=storage,
            directory=directory,
            transports=Transports.by_server_type(
                incoming=dict.fromkeys(EXCHANGE_SERVER_TYPES, ews.incoming),
                outgoing=dict.fromkeys(EXCHANGE_SERVER_TYPES, ews.outgoing),
            ),
            credentials=credentials,
            settings=_settings(),
        ) as engine:
            # No waiting for the connections to close: a closed EWS session keeps its
            # socket until garbage collection (see judge()).
            runs = await _twice(engine, storage, proxy, mailbox.id, workload, idle_seconds=0)
        injected = Counter(proxy.injected)
        sent = Counter(m.message_id for m in server.outbox if m.message_id)
    first, seconds, after_first, second, idle_first, idle_second = runs
    outgoing = workload is Workload.OUTGOING
    return Case(
        protocol="ews",
        stage=stage,
        action=action,
        injected=injected,
        first=first,
        first_seconds=seconds,
        after_first=after_first,
        second=second,
        after_second=await storage.get_workload_state(mailbox.id, workload),
        idle_after_first=idle_first,
        idle_after_second=idle_second,
        expected=frozenset(message_ids if outgoing else replies),
        stored=Counter(
            str(a.message_id)
            for a in storage.activities()
            if a.direction is EmailDirection.INCOMING
        ),
        accepted=Counter({m: sent[m] for m in message_ids}),
        emails=tuple(a for a in storage.activities() if a.id in {"ews-0", "ews-1"})
        if outgoing
        else (),
    )
