"""One engine cycle (a mailbox's new mail and its pending sends) against a store holding
few stored emails and against one holding many, on SQLite and on PostgreSQL.

The stores are filled fast: a few hundred varied emails go in through the public API
(``put_activity``), then the table doubles with ``INSERT … SELECT`` until it holds the
wanted number. Copies get their own id, Message-ID, tracking token and conversation index
(so no lookup finds thousands of twins); their JSON keeps the template's other fields. The
database statistics are refreshed afterwards (``ANALYZE``), as a maintained database has
them.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import case, func, insert, literal, null, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from bench._context import Bench, log, timed
from bench._mail import CRM_DOMAIN, MailPlan
from bench._results import Better, Result, Target, figure
from bench._wiring import CUSTOMERS, add_crm_emails, add_mailbox, add_profile, engine, imap_profile
from serversync import OutcomeKind, RunStatus, Workload
from serversync.adapters.storage.sql import SqlDirectory, SqlStorage
from serversync.adapters.storage.sql._schema import activities, activity_addresses
from serversync.model import (
    ActivityId,
    ActivityParty,
    EmailActivity,
    EmailDirection,
    EmailServerProfile,
    EmailStatus,
    EntityName,
    MailboxId,
    MessageId,
    ParticipationType,
    RecordRef,
)
from serversync.testing import a_mailbox, a_pending_email

__all__ = ["measure"]

_TEMPLATES = 400
_CRM_SENDER = f"crm@{CRM_DOMAIN}"
_OWNERS = [f"user.{n}@{CRM_DOMAIN}" for n in range(40)]


def _template(n: int, rng: random.Random) -> EmailActivity:
    """A stored email like those a CRM keeps: received mail and sent mail, with parties."""
    owner = _OWNERS[n % len(_OWNERS)]
    customer = CUSTOMERS[rng.randrange(len(CUSTOMERS))]
    incoming = rng.random() < 0.6
    when = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(500_000))
    sender, recipient = (customer, owner) if incoming else (owner, customer)
    parties = [
        ActivityParty(participation=ParticipationType.SENDER, address=sender),
        ActivityParty(
            participation=ParticipationType.TO_RECIPIENT,
            address=recipient,
            record=RecordRef(EntityName.CONTACT.value, recipient),
        ),
    ]
    if rng.random() < 0.3:
        parties.append(
            ActivityParty(
                participation=ParticipationType.CC_RECIPIENT, address=rng.choice(CUSTOMERS)
            )
        )
    return EmailActivity(
        id=ActivityId(f"stored-{n}"),
        direction=EmailDirection.INCOMING if incoming else EmailDirection.OUTGOING,
        status=EmailStatus.RECEIVED if incoming else EmailStatus.SENT,
        subject=f"Order {rng.randrange(100_000)} follow-up",
        description="Thanks for the call. " * rng.randint(2, 12),
        message_id=MessageId(f"<stored-{n}.{rng.getrandbits(40):x}@{CRM_DOMAIN}>"),
        # Outlook mail carries a conversation index: about a third of it.
        base_conversation_index_hash=rng.getrandbits(62) if rng.random() < 0.3 else None,
        tracking_token=None if incoming else f"CRM:{n:07d}",
        parties=tuple(parties),
        sender=sender,
        sender_mailbox_id=None if incoming else MailboxId(f"mailbox:{owner}"),
        received_on=when if incoming else None,
        sent_on=None if incoming else when,
    )


async def _grow(connection: AsyncConnection, rows: int) -> None:
    """Double the emails (``INSERT … SELECT``) until there are ``rows``."""
    round_ = 0
    while True:
        count = int(await connection.scalar(select(func.count()).select_from(activities)) or 0)
        if count >= rows:
            return
        round_ += 1
        take = min(count, rows - count)
        top = await connection.scalar(select(func.max(activities.c.seq)))
        last = await connection.scalar(
            select(activities.c.seq).order_by(activities.c.seq).offset(take - 1).limit(1)
        )
        suffix = literal(f".{round_}")
        c = activities.c
        changed: dict[str, Any] = {
            "seq": c.seq + top,
            "id": c.id + suffix,
            "message_id": c.message_id + suffix,
            "tracking_token": c.tracking_token + suffix,
            # Its own conversation: the index is the copy's new seq.
            "conversation_index_hash": case(
                (c.conversation_index_hash.is_(None), null()), else_=c.seq + top
            ),
            "data": func.replace(
                c.data,
                literal('"') + c.id + literal('"'),
                literal('"') + c.id + suffix + literal('"'),
            ),
        }
        names = [column.name for column in activities.columns]
        source = select(*(changed.get(n, activities.c[n]) for n in names)).where(c.seq <= last)
        await connection.execute(insert(activities).from_select(names, source))
        a = activity_addresses.c
        await connection.execute(
            insert(activity_addresses).from_select(
                ["activity_seq", "address"],
                select(a.activity_seq + top, a.address).where(a.activity_seq <= last),
            )
        )


async def _fill(storage: SqlStorage, rows: int, dialect: str, path: Path | None) -> None:
    rng = random.Random(rows)
    crm = a_mailbox(_CRM_SENDER)
    await add_crm_emails(storage, crm, MailPlan(seed=0, owner="", count=0).crm_emails)
    for n in range(max(0, min(_TEMPLATES, rows) - MailPlan(seed=0, owner="", count=0).crm_emails)):
        await storage.put_activity(_template(n, rng))
    async with storage.engine.begin() as connection:
        await _grow(connection, rows)
        if dialect == "postgresql":
            await connection.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('serversync_activities', 'seq'), "
                    "(SELECT max(seq) FROM serversync_activities))"
                )
            )
    async with storage.engine.connect() as connection:
        if dialect == "postgresql":
            await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("ANALYZE"))
        await connection.commit()
        total = await connection.scalar(select(func.count()).select_from(activities))
    assert total == rows, (total, rows)
    if path is not None:
        # Fold the bulk load's write-ahead log into the database, as time would.
        with contextlib.closing(sqlite3.connect(path)) as folding:
            folding.execute("PRAGMA wal_checkpoint(TRUNCATE)")


async def _cycle(
    bench: Bench,
    storage: SqlStorage,
    profile: EmailServerProfile,
    user: str,
    tag: str,
) -> tuple[float, float, int, int]:
    """One cycle of a fresh mailbox: its new mail, then its pending sends."""
    config = bench.config
    plan = MailPlan(seed=config.seed + 5, owner=user, count=config.store_cycle_messages, tag=tag)
    bench.seed(user, plan)
    directory = SqlDirectory(storage)
    mailbox = await add_mailbox(storage, directory, user, profile)
    for n in range(config.store_pending):
        await storage.put_activity(
            a_pending_email(sender_mailbox=mailbox, to=[CUSTOMERS[n]], subject=f"Quote {tag} {n}")
        )
    sent_before = bench.smtp.count()

    async def cycle() -> tuple[int, int]:
        async with engine(storage, directory, [mailbox]) as sync:
            reports = await sync.sync_mailbox(mailbox.id)
        by_workload = {r.workload: r for r in reports}
        incoming, outgoing = by_workload[Workload.INCOMING], by_workload[Workload.OUTGOING]
        assert incoming.status is RunStatus.SUCCEEDED, incoming.error
        assert outgoing.status is RunStatus.SUCCEEDED, outgoing.error
        tracked = sum(1 for i in incoming.items if i.kind is OutcomeKind.TRACKED)
        assert len(incoming.items) == plan.count, len(incoming.items)
        assert tracked == sum(1 for n in range(plan.count) if plan.tracked(n)), tracked
        assert len(outgoing.sends) == config.store_pending, outgoing.sends
        return plan.count + config.store_pending, 0

    run = await timed(cycle)
    assert bench.smtp.count() - sent_before == config.store_pending
    return run


async def measure(bench: Bench) -> list[Result]:
    """One cycle with the big store against one with the small store, per database."""
    config = bench.config
    profile = imap_profile(bench.dovecot, profile_id="bench-store", smtp_port=bench.smtp.port)
    results = []
    for dialect in ("sqlite", "postgresql"):
        stores: dict[str, SqlStorage] = {}
        try:
            for size, rows in (("small", config.store_small), ("big", config.store_big)):
                path: Path | None = None
                if dialect == "sqlite":
                    path = bench.workdir / f"store-{size}.db"
                    url = f"sqlite:///{path}"
                else:
                    url = bench.postgres.create_database(f"bench_{size}")
                log(f"store: filling {dialect} with {rows:,} stored emails")
                storage = await SqlStorage.open(url, upgrade=True)
                stores[size] = storage
                await add_profile(storage, profile)
                await _fill(storage, rows, dialect, path)
            runs: dict[str, list[tuple[float, float, int, int]]] = {"small": [], "big": []}
            log(f"store: {config.store_repeats} cycle(s) on each {dialect} store")
            for repeat in range(config.store_repeats + 1):
                order = ("small", "big") if repeat % 2 == 0 else ("big", "small")
                for size in order:
                    user = bench.store_user(dialect, size, repeat)
                    run = await _cycle(
                        bench, stores[size], profile, user, f"{dialect}{size}{repeat}"
                    )
                    if repeat:  # the first cycle of each store warms it up
                        runs[size].append(run)
        finally:
            for storage in stores.values():
                await storage.aclose()
        small = figure(f"{config.store_small:,} stored emails", runs["small"])
        big = figure(f"{config.store_big:,} stored emails", runs["big"])
        ratio = big.median_seconds / small.median_seconds
        name = "SQLite" if dialect == "sqlite" else "PostgreSQL"
        results.append(
            Result(
                id=f"store_scale_{dialect}",
                title=(
                    f"One cycle with {config.store_big:,} stored emails vs "
                    f"{config.store_small:,} ({name})"
                ),
                unit="× cycle time",
                value=ratio,
                ratio=ratio,
                ratio_means="cycle seconds with the big store ÷ with the small store",
                target=Target(value=1.2, better=Better.LOWER),
                ours=big,
                baseline=small,
                params={
                    "database": name,
                    "new_messages": config.store_cycle_messages,
                    "pending_sends": config.store_pending,
                    "repeats": config.store_repeats,
                },
            )
        )
    return results
