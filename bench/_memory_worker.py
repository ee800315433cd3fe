"""One run of the memory measure, in a process of its own so that its peak RSS is its own:
``python -m bench._memory_worker JSON`` (the settings as JSON), prints a JSON result line.

It syncs one IMAP mailbox until it is drained and reports the peak resident set size, the
resident set size before the first cycle, and the time. The store is the in-memory one and
the mail is mail the default filter does not track, so that the store stays the same size
whatever the mailbox's: the process's memory is then the engine's and the transport's.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from bench._mail import MailPlan
from bench._wiring import add_crm_emails, add_mailbox, add_profile, engine
from serversync import OutcomeKind, RunStatus, Workload
from serversync.adapters.transports import ImapTransport
from serversync.model import ProfileId, ServerEndpoint, ServerType, TlsMode
from serversync.testing import InMemoryDirectory, InMemoryStorage, a_profile


def _status_kib(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak) of this process, in KiB. The peak
    is this program's own: ``getrusage``'s ``ru_maxrss`` would also count the process that
    started it, whose memory the child had between fork and exec."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


async def _run(settings: dict[str, Any]) -> dict[str, Any]:
    plan = MailPlan(
        seed=settings["seed"],
        owner=settings["user"],
        count=settings["count"],
        tag=settings["tag"],
        tracked_every=0,
    )
    storage, directory = InMemoryStorage(), InMemoryDirectory()
    profile = a_profile(
        id=ProfileId("bench-memory"),
        server_type=ServerType.IMAP_SMTP,
        incoming=ServerEndpoint(host="127.0.0.1", port=settings["port"], tls=TlsMode.NONE),
    )
    await add_profile(storage, profile)
    mailbox = await add_mailbox(storage, directory, plan.owner, profile)
    await add_crm_emails(storage, mailbox, plan.crm_emails)
    imap = ImapTransport()
    tracked = processed = cycles = 0
    before = _status_kib("VmRSS")
    started = time.perf_counter()
    async with engine(storage, directory, [mailbox], imap=imap) as sync:
        while True:
            (report,) = await sync.sync_mailbox(mailbox.id, workloads=[Workload.INCOMING])
            assert report.status is RunStatus.SUCCEEDED, report.error
            if not report.items:
                break
            cycles += 1
            processed += len(report.items)
            tracked += sum(1 for i in report.items if i.kind is OutcomeKind.TRACKED)
    seconds = time.perf_counter() - started
    assert processed == plan.count, (processed, plan.count)
    assert tracked == 0, tracked
    return {
        "messages": processed,
        "tracked": tracked,
        "cycles": cycles,
        "seconds": seconds,
        "rss_before_kib": before,
        "peak_rss_kib": _status_kib("VmHWM"),
        "bytes_received": imap.stats.bytes_received,
    }


def main() -> None:
    print(json.dumps(asyncio.run(_run(json.loads(sys.argv[1])))), flush=True)


if __name__ == "__main__":
    main()
