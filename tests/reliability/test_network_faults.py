"""Network faults between the engine and real servers, through a fault-injecting proxy.

For every protocol stage (greeting, login, FETCH, RETR, DATA, ...) and every fault (drop,
stall, truncate, slow, lag) a fresh mailbox syncs through :class:`FaultProxy` once with the
fault and once without. The fault must end as a transient error recorded on the workload
(slowness within the deadlines, and faults at the goodbye, as a normal run), the next run must
succeed, nothing may be lost or stored or sent twice, and no connection, task or worker
thread may be left behind. The stages of one protocol and fault run concurrently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from serversync import ExpiredClaimPolicy, ServerEndpoint, ServerType, TlsMode
from serversync.model import Credentials, Secret
from serversync.testing import a_mailbox, a_profile
from tests.integration.dovecot import Dovecot
from tests.integration.smtp_server import Mode, SmtpServer
from tests.reliability.fault_cases import (
    ews_case,
    incoming_case,
    outgoing_case,
    threads_in,
)
from tests.reliability.fault_judge import (
    EWS_STAGES,
    INCOMING_STAGES,
    SMTP_STAGES,
    Case,
    judge,
)
from tests.reliability.proxy import Action, EwsStages, FaultProxy

pytestmark = pytest.mark.integration

ALICE = "alice@contoso.example"


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    """aiosmtpd in plain text without AUTH: the proxy must read the conversation."""
    with SmtpServer(None, mode=Mode.PLAIN, require_auth=False) as server:
        yield server


async def _no_leftovers(protocol: str) -> list[str]:
    """Tasks still running, or POP3 worker threads still blocked on a socket."""
    problems = []
    others = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    if others:
        problems.append(f"{protocol}: tasks left running: {others}")
    for _ in range(100):
        if threads_in("poplib.py") == 0:
            break
        await asyncio.sleep(0.02)
    else:
        problems.append(f"{protocol}: a worker thread is still inside poplib")
    return problems


def _report(cases: list[Case], extra: list[str]) -> list[str]:
    return [problem for case in cases for problem in judge(case)] + extra


@pytest.mark.parametrize("action", list(Action))
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
async def test_every_incoming_fault_ends_in_a_transient_error_and_a_clean_next_sync(
    trial_dovecot: Dovecot, protocol: str, action: Action
) -> None:
    cases = await asyncio.gather(
        *(
            incoming_case(trial_dovecot, protocol, stage, action)
            for stage in INCOMING_STAGES[protocol]
        )
    )

    problems = _report(list(cases), await _no_leftovers(protocol))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("action", list(Action))
async def test_every_smtp_fault_ends_in_a_transient_error_and_no_email_is_sent_twice(
    smtp: SmtpServer, action: Action
) -> None:
    cases = await asyncio.gather(*(outgoing_case(smtp, stage, action) for stage in SMTP_STAGES))

    problems = _report(list(cases), await _no_leftovers("smtp"))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("action", list(Action))
async def test_every_ews_fault_ends_in_a_transient_error_and_a_clean_next_sync(
    action: Action,
) -> None:
    cases = await asyncio.gather(*(ews_case(stage, action) for stage in EWS_STAGES))

    problems = _report(list(cases), await _no_leftovers("ews"))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("action", [Action.DROP, Action.STALL, Action.TRUNCATE, Action.SLOW])
async def test_under_the_resend_policy_an_email_cut_off_in_data_is_sent_again(
    smtp: SmtpServer, action: Action
) -> None:
    stages = ("data", "message", "end-of-data")
    cases = await asyncio.gather(
        *(outgoing_case(smtp, stage, action, ExpiredClaimPolicy.RESEND) for stage in stages)
    )

    for case in cases:
        for email in case.emails:
            assert email.status.name == "SENT", f"{case.name}: {email.id} is {email.status.name}"
            assert case.accepted[str(email.message_id)] >= 1, case.name


async def test_a_closed_ews_session_releases_its_connection() -> None:
    from serversync.adapters.transports import EwsTransport
    from serversync.testing.ews import EwsTestServer

    async with EwsTestServer() as server, FaultProxy(server.port, EwsStages) as proxy:
        server.add_mailbox(ALICE, password="secret")
        url = server.url.replace(f":{server.port}/", f":{proxy.port}/")
        profile = a_profile(
            server_type=ServerType.EXCHANGE_SERVER,
            incoming=ServerEndpoint(host=url, tls=TlsMode.NONE),
        )
        mailbox = a_mailbox(ALICE, profile_id=profile.id)
        login = Credentials(username=ALICE, secret=Secret("secret"))
        async with EwsTransport().incoming.open(mailbox, profile, login) as session:
            await session.list_folders()
        assert proxy.connections == 1

        released = await proxy.wait_idle(seconds=2.0)

    assert released, "the session's connection is still open 2 s after the session closed"
