"""POP3 sessions keep their deadlines when the event loop's shared thread pool is busy.

poplib blocks, so the POP3 transport runs it in threads. Found by the network-fault trials:
with the loop's default executor (``min(32, cpus + 4)`` threads), sessions stuck on slow
servers made the other sessions queue for a thread, and the queueing counted against their
deadlines, so healthy mailboxes timed out. Each session now has a thread of its own.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest

from serversync.adapters.transports import Pop3Transport
from serversync.model import INBOX, Credentials, Secret, ServerType, TlsMode
from serversync.settings import Timeouts
from serversync.testing import a_mailbox, a_profile, an_email
from tests.integration.dovecot import Dovecot

pytestmark = pytest.mark.integration


async def test_a_pop3_session_does_not_wait_for_the_loops_busy_thread_pool(
    trial_dovecot: Dovecot,
) -> None:
    user = trial_dovecot.add_user()
    await asyncio.to_thread(trial_dovecot.append, user, an_email(to=[user.address]))
    profile = a_profile(
        server_type=ServerType.OTHER_POP3_SMTP,
        incoming=trial_dovecot.endpoint("pop3", TlsMode.NONE),
    )
    mailbox = a_mailbox(user.address, profile_id=profile.id)
    login = Credentials(username=user.address, secret=Secret(user.password))
    second = timedelta(seconds=1)
    transport = Pop3Transport(timeouts=Timeouts(connect=second, command=second, fetch=second))
    # Every thread of the default executor (at most 32) busy, and more work queued.
    release = threading.Event()
    busy = [asyncio.ensure_future(asyncio.to_thread(release.wait, 10)) for _ in range(40)]
    await asyncio.sleep(0.2)
    try:
        async with transport.open(mailbox, profile, login) as session:
            batch = await session.list_new(INBOX, None, limit=10)
    finally:
        release.set()
        await asyncio.gather(*busy)

    assert len(batch.refs) == 1
