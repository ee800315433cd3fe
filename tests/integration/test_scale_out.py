"""Three engine processes share one PostgreSQL and 50 Dovecot mailboxes.

Each incoming session is logged by the processes themselves (tests/integration/scale_worker.py):
no two sessions with one mailbox may overlap, every message must be stored exactly once, and
when one process is killed with SIGKILL the others take its mailboxes over once its leases
expire.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from serversync import (
    EmailApprovalStatus,
    IncomingFilteringMethod,
    OutgoingDeliveryMethod,
    ProfileId,
    SecretReference,
    ServerType,
    TlsMode,
)
from serversync.sql import SqlCredentials, SqlDirectory, SqlStorage
from serversync.testing import a_mailbox, a_profile, a_user, an_email
from tests.conftest import Postgres
from tests.integration.dovecot import Dovecot, DovecotUser

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MAILBOXES = 50
MESSAGES_EACH = 3
WORKERS = 3


async def _seed(url: str, dovecot: Dovecot, users: list[DovecotUser], secrets: Path) -> None:
    storage = await SqlStorage.open(url)
    async with storage:
        profile = a_profile(
            id=ProfileId("dovecot"),
            server_type=ServerType.IMAP_SMTP,
            incoming=dovecot.endpoint("imap", TlsMode.IMPLICIT),
        )
        await storage.add_profile(profile)
        directory, credentials = SqlDirectory(storage), SqlCredentials(storage)
        for user in users:
            record = a_user(
                user.address, incoming_filtering_method=IncomingFilteringMethod.ALL_EMAIL_MESSAGES
            )
            await directory.add(record)
            mailbox = a_mailbox(
                user.address,
                owner=record.ref,
                profile_id=profile.id,
                approval=EmailApprovalStatus.APPROVED,
                outgoing_delivery_method=OutgoingDeliveryMethod.NONE,
                allow_email_connector_to_use_credentials=True,
            )
            await storage.add_mailbox(mailbox)
            secret = secrets / user.address
            secret.write_text(user.password + "\n")
            await credentials.set_for_mailbox(
                mailbox.id, SecretReference(username=user.address, file=str(secret))
            )


async def _stored(url: str) -> list[str | None]:
    storage = await SqlStorage.open(url)
    async with storage:
        return [a.message_id for a in await storage.activities()]


def _sessions(log: Path) -> list[dict[str, object]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _start_workers(url: str, log: Path) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "tests.integration.scale_worker", url, f"engine-{n}", str(log)],
            cwd=ROOT,
        )
        for n in range(WORKERS)
    ]


async def test_three_processes_share_fifty_mailboxes_and_survive_a_kill(
    postgres: Postgres, dovecot: Dovecot, tmp_path: Path
) -> None:
    url = postgres.fresh_database()
    users = [dovecot.add_user() for _ in range(MAILBOXES)]
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    await _seed(url, dovecot, users, secrets)
    expected = set()
    for n, user in enumerate(users):
        messages = [
            an_email(
                sender="jane@fabrikam.example",
                to=[user.address],
                subject=f"scale {n}.{k}",
                message_id=f"<scale-{n}-{k}@fabrikam.example>",
            )
            for k in range(MESSAGES_EACH)
        ]
        await asyncio.to_thread(dovecot.append, user, *messages)
        expected |= {f"<scale-{n}-{k}@fabrikam.example>" for k in range(MESSAGES_EACH)}

    log = tmp_path / "sessions.jsonl"
    workers = _start_workers(url, log)
    try:
        # Kill engine-0 as soon as it holds a mailbox session.
        deadline = time.monotonic() + 60
        while not any(s["engine"] == "engine-0" for s in _sessions(log)):
            assert time.monotonic() < deadline, "engine-0 never opened a session"
            await asyncio.sleep(0.02)
        workers[0].send_signal(signal.SIGKILL)
        killed_at = time.time()
        workers[0].wait(10)

        deadline = time.monotonic() + 90
        stored = await _stored(url)
        while len(stored) < len(expected):
            assert time.monotonic() < deadline, f"only {len(stored)} of {len(expected)} stored"
            await asyncio.sleep(0.5)
            stored = await _stored(url)
        await asyncio.sleep(1.5)  # a few more cycles: nothing may be stored twice
        stored = await _stored(url)
    finally:
        for worker in workers[1:]:
            worker.send_signal(signal.SIGTERM)
        codes = [worker.wait(30) for worker in workers[1:]]

    assert codes == [0] * (WORKERS - 1), "the surviving engines stop cleanly on SIGTERM"
    assert sorted(m for m in stored if m) == sorted(expected), "every message exactly once"
    assert len(stored) == len(expected)

    sessions = _sessions(log)
    by_mailbox: dict[object, list[dict[str, object]]] = defaultdict(list)
    for event in sessions:
        by_mailbox[event["mailbox"]].append(event)
    cut = 0
    for mailbox, events in by_mailbox.items():
        events.sort(key=lambda e: float(str(e["at"])))
        holder: object = None
        for event in events:
            at = float(str(event["at"]))
            if event["event"] == "close":
                assert event["engine"] == holder, f"{mailbox}: closed by a non-holder"
                holder = None
                continue
            if holder == "engine-0":
                # engine-0 died inside its session; only its lease's expiry frees the mailbox.
                assert at > killed_at, f"{mailbox}: {event['engine']} opened it under engine-0"
                cut += 1
            else:
                assert holder is None, f"{mailbox}: {event['engine']} opened it under {holder}"
            holder = event["engine"]
        assert holder is None or holder == "engine-0", f"{mailbox}: {holder} never closed"
        if holder == "engine-0":
            raise AssertionError(f"{mailbox}: nobody took over the session cut by the kill")
    assert cut >= 1, "the kill cut at least one session, which another engine took over"
    assert {e["engine"] for e in sessions} == {f"engine-{n}" for n in range(WORKERS)}
    assert len(by_mailbox) == MAILBOXES, "every mailbox was synchronized"
