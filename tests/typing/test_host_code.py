"""The host-style code in ``host_code`` type-checks under ``mypy --strict`` and also runs."""

from __future__ import annotations

from serversync import EmailStatus, OutcomeKind, RunStatus, Workload
from serversync.mime import outgoing_message_id

from . import host_code


async def test_host_wired_engine_tracks_rejects_and_sends() -> None:
    observer = host_code.CountingObserver()

    report = await host_code.wire_engine(observer)

    assert [(r.workload, r.status) for r in report.mailboxes] == [
        (Workload.INCOMING, RunStatus.SUCCEEDED),
        (Workload.OUTGOING, RunStatus.SUCCEEDED),
    ]
    by_subject = {item.subject: item for item in report.items()}
    assert by_subject[host_code.REPLY_SUBJECT].kind is OutcomeKind.TRACKED
    auto_reply = by_subject[host_code.AUTO_REPLY_SUBJECT]
    assert auto_reply.kind is OutcomeKind.NOT_RELEVANT
    assert auto_reply.rule == "reject-auto-submitted"
    [send] = report.sends()
    assert send.subject == f"{host_code.PENDING_SUBJECT} CRM:0001001", (
        "sent with its tracking token"
    )
    assert send.status is EmailStatus.SENT
    assert send.message_id == outgoing_message_id(send.activity_id, "crm.contoso.example")
    assert observer.items == list(report.items())
    assert observer.sends == [send]
    assert sorted(observer.runs, key=lambda r: r.workload) == sorted(
        report.mailboxes, key=lambda r: r.workload
    )


async def test_wire_engine_runs_without_an_observer() -> None:
    report = await host_code.wire_engine()

    assert len(list(report.items())) == 2
    assert report.started_at <= report.finished_at
