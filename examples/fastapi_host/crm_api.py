"""serversync inside a FastAPI backend: the engine lives as long as the application.

* At startup the lifespan opens a ``SyncEngine`` and runs ``engine.run_forever`` in a
  background task: every mailbox is synchronized when it is due.
* ``GET /sync/status`` shows the last run of every mailbox workload, as an observer recorded
  it: status, skip reason, counts and the last error.
* ``POST /sync/mailboxes/{mailbox_id}`` synchronizes one mailbox now (a "Sync now" button);
  an unknown mailbox is a 404.
* At shutdown the loop is told to stop: it finishes the run in progress, then the engine
  closes.

``create_app`` takes a function that builds the engine, so the same application runs over the
CRM's own storage and mail transports in production, and over ``serversync.testing`` in tests
and in ``try_it.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel

from serversync import (
    BaseSyncObserver,
    ConfigurationError,
    EmailStatus,
    MailboxId,
    MailboxRunReport,
    OutcomeKind,
    SyncEngine,
    SyncObserver,
    Workload,
)

EngineFactory = Callable[[SyncObserver], SyncEngine]
"""Builds the engine the app runs, with the observer it must pass to ``SyncEngine``."""


class WorkloadStatus(BaseModel):
    """The last run of one workload of one mailbox."""

    mailbox_id: str
    workload: str
    status: str
    skip_reason: str | None
    finished_at: datetime
    tracked: int
    not_tracked: int
    failed: int
    sent: int
    error: str | None

    @classmethod
    def of(cls, report: MailboxRunReport) -> WorkloadStatus:
        """The status shown for one run report."""
        return cls(
            mailbox_id=report.mailbox_id,
            workload=report.workload.value,
            status=report.status.value,
            skip_reason=report.skip_reason.value if report.skip_reason else None,
            finished_at=report.finished_at,
            tracked=sum(1 for i in report.items if i.kind is OutcomeKind.TRACKED),
            not_tracked=sum(
                1 for i in report.items if i.kind not in (OutcomeKind.TRACKED, OutcomeKind.FAILED)
            ),
            failed=report.items_failed,
            sent=sum(1 for s in report.sends if s.status is EmailStatus.SENT),
            error=f"{report.error.error_type}: {report.error.message}" if report.error else None,
        )


# --8<-- [start:observer]
class LastRuns(BaseSyncObserver):
    """Remembers the last report of every mailbox workload, for the status endpoint."""

    def __init__(self) -> None:
        self.reports: dict[tuple[MailboxId, Workload], MailboxRunReport] = {}

    def mailbox_run_finished(self, report: MailboxRunReport) -> None:
        """Keep the newest report of the workload."""
        self.reports[(report.mailbox_id, report.workload)] = report


# --8<-- [end:observer]


class Sync:
    """What the app keeps while it runs: the engine and the observer's records."""

    def __init__(self, engine: SyncEngine, last_runs: LastRuns) -> None:
        self.engine = engine
        self.last_runs = last_runs


def get_sync(request: Request) -> Sync:
    """The running engine (a FastAPI dependency)."""
    sync = request.app.state.sync
    if not isinstance(sync, Sync):
        raise RuntimeError("the serversync engine is not running")
    return sync


SyncDep = Annotated[Sync, Depends(get_sync)]


def create_app(build_engine: EngineFactory, *, run_in_background: bool = True) -> FastAPI:
    """The CRM's API with serversync in its lifespan.

    With ``run_in_background`` (the default) the app synchronizes every due mailbox on its
    own; without it, only the endpoint does.
    """

    # --8<-- [start:lifespan]
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        last_runs = LastRuns()
        stop = asyncio.Event()
        async with build_engine(last_runs) as engine:
            app.state.sync = Sync(engine, last_runs)
            loop = None
            if run_in_background:
                loop = asyncio.create_task(engine.run_forever(stop=stop), name="serversync")
            try:
                yield
            finally:
                stop.set()  # the loop ends after the run in progress
                if loop is not None:
                    await loop
                app.state.sync = None

    # --8<-- [end:lifespan]

    app = FastAPI(title="CRM", lifespan=lifespan)

    @app.get("/sync/status")
    async def sync_status(sync: SyncDep) -> list[WorkloadStatus]:
        """The last run of every mailbox workload."""
        reports = sorted(sync.last_runs.reports.items())
        return [WorkloadStatus.of(report) for _, report in reports]

    @app.post("/sync/mailboxes/{mailbox_id}")
    async def sync_mailbox(mailbox_id: str, sync: SyncDep) -> list[WorkloadStatus]:
        """Synchronize one mailbox now, whatever its schedule."""
        try:
            reports = await sync.engine.sync_mailbox(MailboxId(mailbox_id), force=True)
        except ConfigurationError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc
        return [WorkloadStatus.of(report) for report in reports]

    return app
