"""IMAP: the header phase against raw imaplib, and incoming end to end against a naive
pipeline that downloads and fully parses every message."""

from __future__ import annotations

import contextlib
import email
import email.policy
import imaplib
from collections.abc import Sequence
from email.message import EmailMessage

import attrs

from bench._context import Bench, log
from bench._mail import CRM_DOMAIN, MailPlan
from bench._results import Better, Result, Target, figure
from bench._servers import PASSWORD
from bench._wiring import (
    Directory,
    Store,
    add_crm_emails,
    add_mailbox,
    add_profile,
    engine,
    imap_profile,
)
from serversync import OutcomeKind, RunStatus, Workload
from serversync.adapters.storage.sql import SqlDirectory, SqlStorage
from serversync.adapters.transports import ImapTransport
from serversync.model import Credentials, EmailServerProfile, ImapCheckpoint, Mailbox, Secret
from serversync.settings import Limits
from serversync.testing import InMemoryDirectory, InMemoryStorage, a_mailbox

__all__ = ["measure"]


def _uid_chunks(uids: Sequence[int], size: int) -> list[str]:
    return [f"{uids[i]}:{uids[min(i + size, len(uids)) - 1]}" for i in range(0, len(uids), size)]


def _raw_uids(client: imaplib.IMAP4) -> list[int]:
    status, data = client.uid("SEARCH", "ALL")
    assert status == "OK", data
    return [int(x) for x in data[0].split()]


def raw_headers(port: int, user: str, batch: int) -> tuple[int, int]:
    """The baseline: imaplib, SELECT, UID SEARCH, then ``BODY.PEEK[HEADER]`` in batches."""
    client = imaplib.IMAP4("127.0.0.1", port)
    client.login(user, PASSWORD)
    client.select("INBOX")
    count = size = 0
    for uids in _uid_chunks(_raw_uids(client), batch):
        status, data = client.uid("FETCH", uids, "(BODY.PEEK[HEADER])")
        assert status == "OK", data
        for item in data:
            if isinstance(item, tuple):
                count += 1
                size += len(item[1])
    client.logout()
    return count, size


async def our_headers(profile: EmailServerProfile, user: str, batch: int) -> tuple[int, int]:
    """serversync's IMAP session as the engine drives it: ``list_new`` then
    ``fetch_headers``, batch after batch, the cursor carried over."""
    transport = ImapTransport()
    login = Credentials(username=user, secret=Secret(PASSWORD))
    count = size = 0
    async with transport.open(a_mailbox(user), profile, login) as session:
        cursor: ImapCheckpoint | None = None
        while True:
            batch_ = await session.list_new("INBOX", cursor, limit=batch)
            headers = await session.fetch_headers(batch_.refs)
            count += len(headers)
            size += sum(len(h.data) for h in headers)
            assert isinstance(batch_.end, ImapCheckpoint)
            cursor = batch_.end
            if not batch_.more:
                break
    return count, size


def naive_pipeline(port: int, user: str, batch: int) -> tuple[int, int, int]:
    """The baseline of "incoming end to end": fetch every whole message, parse each with
    ``policy.default``, read the headers relevance needs and the text body, and keep the
    replies to CRM emails. (messages, bytes, replies found)."""
    client = imaplib.IMAP4("127.0.0.1", port)
    client.login(user, PASSWORD)
    client.select("INBOX", readonly=True)
    count = size = replies = 0
    marker = f".sent@{CRM_DOMAIN}>"
    for uids in _uid_chunks(_raw_uids(client), batch):
        status, data = client.uid("FETCH", uids, "(BODY.PEEK[])")
        assert status == "OK", data
        for item in data:
            if not isinstance(item, tuple):
                continue
            raw = item[1]
            message = email.message_from_bytes(raw, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            for name in ("subject", "from", "to", "cc", "date", "message-id", "references"):
                str(message.get(name, ""))
            if marker in str(message.get("in-reply-to", "")):
                replies += 1
            body = message.get_body(("plain", "html"))
            if body is not None:
                with contextlib.suppress(LookupError, UnicodeError):
                    body.get_content()
            count += 1
            size += len(raw)
    client.logout()
    return count, size, replies


@attrs.frozen
class _Prepared:
    """A host's store made ready for a drain: its schema, the mailbox and the CRM emails."""

    storage: Store
    directory: Directory
    mailbox: Mailbox


async def prepare_store(bench: Bench, plan: MailPlan, *, sql: bool, tag: str) -> _Prepared:
    """A fresh store with the mailbox and the CRM emails its mail answers: the host's setup,
    done before the timing starts (creating and migrating a SQLite file and writing 200
    emails one at a time took as long as the drain it was timed with)."""
    storage: Store
    directory: Directory
    if sql:
        storage = await SqlStorage.open(f"sqlite:///{bench.workdir}/{tag}.db", upgrade=True)
        directory = SqlDirectory(storage)
    else:
        storage, directory = InMemoryStorage(), InMemoryDirectory()
    profile = imap_profile(bench.dovecot)
    await add_profile(storage, profile)
    mailbox = await add_mailbox(storage, directory, plan.owner, profile)
    await add_crm_emails(storage, mailbox, plan.crm_emails)
    return _Prepared(storage, directory, mailbox)


async def our_incoming(plan: MailPlan, prepared: _Prepared) -> tuple[int, int]:
    """The engine over a prepared store until every message of the mailbox has an outcome:
    each judged on its headers, only the replies to CRM emails downloaded, parsed and
    stored. The clock stops with the last outcome, as the baseline's does with its last
    message, not after another cycle that would find nothing new."""
    storage, directory, mailbox = prepared.storage, prepared.directory, prepared.mailbox
    try:
        imap = ImapTransport()
        kinds: dict[OutcomeKind, int] = {}
        async with engine(storage, directory, [mailbox], imap=imap) as sync:
            for _ in range(plan.count + 1):
                (report,) = await sync.sync_mailbox(mailbox.id, workloads=[Workload.INCOMING])
                assert report.status is RunStatus.SUCCEEDED, report.error
                assert report.items, f"the engine stopped with {kinds} of {plan.count}"
                for item in report.items:
                    kinds[item.kind] = kinds.get(item.kind, 0) + 1
                if sum(kinds.values()) >= plan.count:
                    break
    finally:
        if isinstance(storage, SqlStorage):
            await storage.aclose()
    tracked = sum(1 for n in range(plan.count) if plan.tracked(n))
    assert kinds.get(OutcomeKind.TRACKED) == tracked, kinds
    assert sum(kinds.values()) == plan.count, kinds
    return plan.count, imap.stats.bytes_received


async def measure(bench: Bench) -> list[Result]:
    """The IMAP header phase and incoming end to end (in-memory and SQLite stores)."""
    config = bench.config
    dovecot = bench.dovecot
    results = []

    plan = MailPlan(seed=config.seed, owner=bench.HEADERS_USER, count=config.imap_messages)
    log(f"imap: seeding {plan.count} messages")
    bench.seed(plan.owner, plan)
    port, batch = dovecot.imap_port, config.imap_batch

    profile = imap_profile(dovecot)

    async def ours() -> tuple[int, int]:
        return await our_headers(profile, plan.owner, batch)

    async def baseline() -> tuple[int, int]:
        return raw_headers(port, plan.owner, batch)

    log("imap: header phase")
    mine, theirs = await bench.compare(ours, baseline)
    us = figure("serversync ImapTransport: list_new + fetch_headers", mine)
    them = figure("imaplib: UID FETCH (BODY.PEEK[HEADER]) in batches", theirs)
    assert us.items == them.items == plan.count
    results.append(
        Result(
            id="imap_headers",
            title="IMAP header phase",
            unit="× raw imaplib msg/s",
            value=us.rate / them.rate,
            ratio=us.rate / them.rate,
            ratio_means="serversync msg/s ÷ raw imaplib msg/s",
            target=Target(value=0.8, better=Better.HIGHER),
            ours=us,
            baseline=them,
            params={"messages": plan.count, "batch": batch, "tls": False},
        )
    )

    naive_batch = Limits().incoming_batch_size
    mailboxes = (
        (False, bench.E2E_USER, config.e2e_messages, config.e2e_runs),
        # The SQLite store takes longer a message: a smaller mailbox.
        (True, bench.E2E_SQL_USER, config.e2e_sql_messages, config.e2e_runs),
    )
    for sql, owner, count, runs in mailboxes:
        plan = MailPlan(seed=config.seed + 1, owner=owner, count=count, tag=owner[:7])
        store = "SQLite" if sql else "in-memory"
        log(f"imap: seeding {plan.count} messages for incoming end to end ({store} store)")
        bench.seed(plan.owner, plan)
        tracked = sum(1 for n in range(plan.count) if plan.tracked(n))

        async def naive(plan: MailPlan = plan, tracked: int = tracked) -> tuple[int, int]:
            count, size, replies = naive_pipeline(port, plan.owner, naive_batch)
            assert replies == tracked, (replies, tracked)
            return count, size

        # One store a run (and one for the untimed run), each set up before any timing.
        ready = [
            await prepare_store(bench, plan, sql=sql, tag=f"e2e-{int(sql)}-{n}")
            for n in range(runs + 1)
        ]

        async def ours_e2e(
            plan: MailPlan = plan, ready: list[_Prepared] = ready
        ) -> tuple[int, int]:
            return await our_incoming(plan, ready.pop(0))

        log(f"imap: incoming end to end, {store} store")
        mine, theirs = await bench.compare(ours_e2e, naive, runs=runs)
        us = figure(f"serversync engine, {store} store", mine)
        them = figure("naive: imaplib BODY.PEEK[] + policy.default parse of every message", theirs)
        results.append(
            Result(
                id="incoming_e2e_sqlite" if sql else "incoming_e2e",
                title=f"Incoming end to end, default filter, 10 % tracked ({store} store)",
                unit="× naive pipeline msg/s",
                value=us.rate / them.rate,
                ratio=us.rate / them.rate,
                ratio_means="serversync msg/s ÷ naive pipeline msg/s",
                target=Target(value=5.0, better=Better.HIGHER),
                ours=us,
                baseline=them,
                params={
                    "messages": plan.count,
                    "tracked": tracked,
                    "store": store,
                    "engine_batch": naive_batch,
                },
            )
        )
    return results
