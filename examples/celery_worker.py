"""Mailbox synchronization as task-queue jobs, instead of ``engine.run_forever``.

A host that already runs a task queue (Celery, arq, Dramatiq, RQ ...) can let it schedule
serversync. Two task functions are enough:

* ``enqueue_mailboxes``, the periodic job (Celery beat): one sync job per mailbox;
* ``sync_mailbox_job``, the job: ``engine.sync_mailbox(mailbox_id)`` in a fresh engine, and a
  small JSON-friendly summary as its result.

The engine keeps its promises under a task queue too: the engine's schedule decides whether
a mailbox is due (so the periodic job may enqueue every mailbox every minute), a mailbox
workload is leased while it runs, and storing is idempotent, so a job delivered twice or two
workers on one mailbox never store or send anything twice.

This file does not use Celery: serversync does not depend on it, and running it needs a
broker. It runs the same two functions with a small asyncio queue and two workers standing in
for the broker and the worker processes, and it delivers one job twice on purpose. Run it with
``python examples/celery_worker.py``. With Celery the task functions are wrapped like this
(each task runs the coroutine with ``asyncio.run``; the engine is cheap to build, its
constructor does no I/O)::

    app = Celery("crm", broker="redis://localhost:6379/0")

    @app.task(acks_late=True)
    def sync_mailbox(mailbox_id: str) -> dict[str, object]:
        return asyncio.run(sync_mailbox_job(mailbox_id))

    @app.task
    def enqueue_due_mailboxes() -> int:
        return asyncio.run(enqueue_mailboxes(lambda mailbox_id: sync_mailbox.delay(mailbox_id)))

    app.conf.beat_schedule = {
        "serversync": {"task": "crm.enqueue_due_mailboxes", "schedule": 60.0},
    }
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from serversync import EmailStatus, MailboxId, OutcomeKind, RecordState, SyncEngine
from serversync.testing import InMemoryWorld, a_contact, a_pending_email, an_email

# -- the host's world ------------------------------------------------------------------------
# In a real host these are the CRM's database, its mail servers and its secrets, shared by
# every worker process. Here one in-memory world stands in for all of them.

WORLD = InMemoryWorld()
SUPPORT = "support@contoso.example"
ALICE = "alice@contoso.example"
JANE = "jane@fabrikam.example"


def make_engine() -> SyncEngine:
    """The engine of one job. A real host passes its own repositories, directory,
    transports and credentials here. Each engine gets its own random ``engine_id`` (the
    default), so two jobs on one mailbox never share a lease, even in one process."""
    return WORLD.engine()


# -- the two task functions ------------------------------------------------------------------


# --8<-- [start:beat]
async def enqueue_mailboxes(enqueue: Callable[[str], object]) -> int:
    """The periodic job: enqueue one sync job per active mailbox; return how many.

    ``enqueue`` is the task queue's "send this job" (``sync_mailbox.delay`` with Celery).
    """
    mailboxes = await WORLD.storage.list_mailboxes()  # the host's own query
    active = [m for m in mailboxes if m.state is RecordState.ACTIVE]
    for mailbox in active:
        enqueue(mailbox.id)
    return len(active)


# --8<-- [end:beat]


# --8<-- [start:job]
async def sync_mailbox_job(mailbox_id: str) -> dict[str, Any]:
    """The job: synchronize one mailbox if it is due, and summarize what happened.

    ``force=False`` lets the engine's schedule decide: a mailbox that is not due yet, that
    is backing off after a failure, or that another worker is processing right now is
    skipped with the reason. A "Sync now" button would enqueue a job with ``force=True``.
    """
    async with make_engine() as engine:
        reports = await engine.sync_mailbox(MailboxId(mailbox_id), force=False)
    return {
        report.workload.value: {
            "status": report.status.value,
            "skipped": report.skip_reason.value if report.skip_reason else None,
            "tracked": [i.subject for i in report.items if i.kind is OutcomeKind.TRACKED],
            "sent": [s.subject for s in report.sends if s.status is EmailStatus.SENT],
        }
        for report in reports
    }


# --8<-- [end:job]


def describe(result: dict[str, Any]) -> str:
    """One line for a job's result."""
    parts = []
    for workload, r in result.items():
        if r["skipped"]:
            parts.append(f"{workload} skipped ({r['skipped']})")
        else:
            done = [f"tracked {t!r}" for t in r["tracked"]] + [f"sent {s!r}" for s in r["sent"]]
            parts.append(f"{workload} {r['status']}" + (f": {', '.join(done)}" if done else ""))
    return "; ".join(parts)


# -- a stand-in for the broker and two worker processes --------------------------------------


async def worker(name: str, queue: asyncio.Queue[str]) -> None:
    """Take jobs off the queue and run them, like one worker process."""
    while True:
        mailbox_id = await queue.get()
        try:
            result = await sync_mailbox_job(mailbox_id)
            print(f"  {name} {mailbox_id}: {describe(result)}")
        finally:
            queue.task_done()


async def main() -> None:
    alice = WORLD.add_user(ALICE)
    WORLD.add_queue(SUPPORT)
    WORLD.add_record(a_contact(JANE))
    WORLD.send_mail(an_email(sender=JANE, to=[SUPPORT], subject="Order 1234 arrived damaged"))
    WORLD.storage.put_activity(a_pending_email(sender_mailbox=alice, to=[JANE], subject="Quote"))

    queue: asyncio.Queue[str] = asyncio.Queue()
    workers = [asyncio.create_task(worker(f"worker-{n}", queue)) for n in (1, 2)]

    print("beat: enqueued", await enqueue_mailboxes(queue.put_nowait), "jobs")
    queue.put_nowait(f"mailbox:{SUPPORT}")
    print("broker: delivered the support mailbox's job a second time")
    await queue.join()

    WORLD.clock.advance(timedelta(minutes=6))  # the mailboxes are due again
    WORLD.send_mail(an_email(sender=JANE, to=[SUPPORT], subject="RE: Order 1234"))
    print("beat: enqueued", await enqueue_mailboxes(queue.put_nowait), "jobs")
    await queue.join()

    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    stored = sorted(a.subject for a in WORLD.storage.activities())
    print(f"stored emails: {stored}; sent through SMTP: {len(WORLD.server.outbox)}")


if __name__ == "__main__":
    asyncio.run(main())
