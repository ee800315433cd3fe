"""The serversync quickstart: a whole CRM mail world in one process, synchronized twice.

It uses the public API only, wiring each part by hand the way a host application does:

* an in-process mail server with two users and a support queue;
* CRM storage holding an email Alice already sent, and two emails pending send;
* incoming mail that answers CRM email, mail that does not, one message that reached two
  mailboxes, and one without a valid sender.

The first run tracks, rejects and sends; the customer then replies to an email the engine
just sent, and the second run correlates that reply back. Everything is stored in a SQLite
file (``serversync-demo.db``, made anew on each run) that ``serversync status`` can show
afterwards. Run it with ``serversync demo`` or ``python examples/quickstart.py``.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import attrs

from serversync import (
    Credentials,
    ItemOutcome,
    MailboxId,
    MappingCredentials,
    RecordRef,
    RunReport,
    Secret,
    SendResult,
    SyncEngine,
    SyncSettings,
    Transports,
)
from serversync.sql import SqlDirectory, SqlStorage
from serversync.testing import (
    FakeClock,
    InMemoryIncomingTransport,
    InMemoryMailServer,
    InMemoryOutgoingTransport,
    a_contact,
    a_mailbox,
    a_pending_email,
    a_profile,
    a_queue,
    a_sent_email,
    a_user,
    an_email,
)

__all__ = ["DEMO_STORE", "DemoResult", "main", "render", "run_demo"]

DEMO_STORE = Path("serversync-demo.db")
"""Where the demo keeps its store unless told otherwise."""

ALICE = "alice@contoso.example"
BOB = "bob@contoso.example"
SUPPORT = "support@contoso.example"
JANE = "jane@fabrikam.example"


@attrs.frozen
class DemoResult:
    """The reports of the demo's two runs."""

    runs: tuple[RunReport, ...]


async def run_demo(store: Path = DEMO_STORE) -> DemoResult:
    """Build the world in a new SQLite file at ``store`` (replacing it), run the engine twice,
    and return both run reports. The file stays behind for ``serversync status``."""
    await asyncio.to_thread(_remove_store, store)
    storage = await SqlStorage.open(f"sqlite:///{store}", upgrade=True)
    try:
        return await _run(storage)
    finally:
        await storage.aclose()


def _remove_store(store: Path) -> None:
    # SQLite's write-ahead log and shared-memory files belong to the old file too.
    for path in (store, store.with_name(store.name + "-wal"), store.with_name(store.name + "-shm")):
        path.unlink(missing_ok=True)


async def _run(storage: SqlStorage) -> DemoResult:
    clock = FakeClock()
    server = InMemoryMailServer(clock=clock)
    directory = SqlDirectory(storage)

    # The CRM: a profile, two users and a queue with mailboxes, and a customer contact.
    profile = a_profile()
    await storage.add_profile(profile)
    alice_user, bob_user = a_user(ALICE), a_user(BOB)
    support_queue = a_queue(SUPPORT)
    for record in (alice_user, bob_user, support_queue, a_contact(JANE)):
        await directory.add(record)
    mailboxes = {
        record.email_address: a_mailbox(record.email_address, owner=record.ref)
        for record in (alice_user, bob_user, support_queue)
    }
    credentials: dict[MailboxId, Credentials] = {}
    for address, mailbox in mailboxes.items():
        await storage.add_mailbox(mailbox)
        server.add_account(address, password=f"{address}-password")
        credentials[mailbox.id] = Credentials(
            username=address, secret=Secret(f"{address}-password")
        )
    alice = mailboxes[ALICE]

    # An email Alice sent from the CRM earlier, about an opportunity.
    opportunity = RecordRef("opportunity", "opp-42")
    await storage.put_activity(
        a_sent_email(
            sender_mailbox=alice,
            to=[JANE],
            subject="Quote for 20 widgets",
            message_id="<quote-20-widgets@contoso.example>",
            regarding=opportunity,
        )
    )
    # Two CRM emails waiting to be sent.
    await storage.put_activity(
        a_pending_email(
            sender_mailbox=alice,
            to=[JANE],
            subject="Revised quote: 25 widgets",
            body="Jane, here is the revised quote for 25 widgets.",
            regarding=opportunity,
        )
    )
    await storage.put_activity(
        a_pending_email(
            sender_mailbox=mailboxes[SUPPORT],
            to=[JANE],
            subject="We received your request",
            body="Thank you, our support team will answer shortly.",
        )
    )

    # Mail arriving at the server.
    server.deliver(
        ALICE,
        an_email(
            sender=f"Jane Doe <{JANE}>",
            to=[ALICE],
            subject="RE: Quote for 20 widgets",
            body="Looks good, can we make it 25?",
            in_reply_to="<quote-20-widgets@contoso.example>",
        ),
    )
    server.deliver(
        ALICE,
        an_email(sender="news@newsletter.example", to=[ALICE], subject="Weekly digest"),
    )
    both = an_email(
        sender=f"Jane Doe <{JANE}>",
        to=[SUPPORT],
        cc=[BOB],
        subject="Order 1234 arrived damaged",
        message_id="<order-1234@fabrikam.example>",
    )
    server.deliver(SUPPORT, both)
    server.deliver(BOB, both)
    server.deliver(BOB, an_email(sender="not an address", to=[BOB], subject="Hello?"))

    transports = Transports.for_all(
        incoming=InMemoryIncomingTransport(server), outgoing=InMemoryOutgoingTransport(server)
    )
    runs = []
    async with SyncEngine(
        repositories=storage,
        directory=directory,
        transports=transports,
        credentials=MappingCredentials(by_mailbox=credentials),
        settings=SyncSettings(),
        clock=clock,
        engine_id="demo-engine",
    ) as engine:
        runs.append(await engine.run_once())

        # Jane answers the revised quote the engine just sent.
        revised = next(s for s in runs[0].sends() if s.subject.startswith("Revised"))
        assert revised.message_id is not None
        server.deliver(
            ALICE,
            an_email(
                sender=f"Jane Doe <{JANE}>",
                to=[ALICE],
                subject="RE: Revised quote: 25 widgets",
                body="Accepted. Please send the order confirmation.",
                in_reply_to=revised.message_id,
            ),
        )
        clock.advance(timedelta(minutes=6))
        runs.append(await engine.run_once())
    return DemoResult(runs=tuple(runs))


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(out)


def _item_row(run: int, item: ItemOutcome) -> tuple[str, ...]:
    reason = item.reason.name if item.reason is not None else "-"
    return (
        str(run),
        item.mailbox_id.removeprefix("mailbox:"),
        (item.subject or "")[:34],
        (item.sender or "-")[:24],
        item.kind.value,
        reason,
        item.explanation[:60],
    )


def _send_row(run: int, send: SendResult) -> tuple[str, ...]:
    return (
        str(run),
        send.subject[:44],
        ", ".join(send.recipients),
        send.status.name,
        send.message_id or "-",
    )


def render(result: DemoResult) -> str:
    """The demo's results as two plain-text tables."""
    items = [_item_row(n, item) for n, run in enumerate(result.runs, 1) for item in run.items()]
    sends = [_send_row(n, send) for n, run in enumerate(result.runs, 1) for send in run.sends()]
    return "\n".join(
        [
            "Incoming messages",
            _table(
                ("run", "mailbox", "subject", "from", "outcome", "reason", "why"),
                items,
            ),
            "",
            "Emails sent",
            _table(("run", "subject", "to", "status", "message-id"), sends),
        ]
    )


def main(store: Path = DEMO_STORE) -> None:
    """Run the demo and print its tables."""
    print(render(asyncio.run(run_demo(store))))
    print(f"\nThe store is in {store}; see it with: serversync --store sqlite:///{store} status")


if __name__ == "__main__":
    main()
