"""The result of Test & Enable: whether each configured workload of a mailbox can connect."""

from __future__ import annotations

from datetime import datetime

import attrs

from serversync.model.ids import MailboxId
from serversync.model.options import TestStatus, Workload
from serversync.model.outcomes import ErrorRecord

__all__ = ["MailboxTestReport", "WorkloadTestResult"]


@attrs.frozen(kw_only=True)
class WorkloadTestResult:
    """One workload's test: Success, or Failure with the reason."""

    workload: Workload
    status: TestStatus
    error: ErrorRecord | None = None


@attrs.frozen(kw_only=True)
class MailboxTestReport:
    """What Test & Enable found for one mailbox, and when it finished."""

    mailbox_id: MailboxId
    completed_on: datetime
    results: tuple[WorkloadTestResult, ...]

    @property
    def succeeded(self) -> bool:
        """Whether every tested workload succeeded (and at least one was tested)."""
        return bool(self.results) and all(r.status is TestStatus.SUCCESS for r in self.results)

    def result_for(self, workload: Workload) -> WorkloadTestResult | None:
        """The result of one workload, or ``None`` when it was not tested."""
        return next((r for r in self.results if r.workload is workload), None)
