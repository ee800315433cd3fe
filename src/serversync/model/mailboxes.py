"""Mailboxes of users and queues, and the engine's per-workload state for each."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from serversync.model.ids import MailboxId, ProfileId, RecordRef
from serversync.model.options import (
    ActDeliveryMethod,
    EmailApprovalStatus,
    IncomingDeliveryMethod,
    OutgoingDeliveryMethod,
    RecordState,
    TestStatus,
    Workload,
)
from serversync.model.outcomes import ErrorRecord
from serversync.model.profiles import EmailServerProfile

__all__ = ["Mailbox", "WorkloadState"]


_ENABLED_FIELD = {
    Workload.INCOMING: "enabled_for_incoming",
    Workload.OUTGOING: "enabled_for_outgoing",
    Workload.ACT: "enabled_for_act",
}
_STATUS_FIELD = {
    Workload.INCOMING: "incoming_status",
    Workload.OUTGOING: "outgoing_status",
    Workload.ACT: "act_status",
}


@attrs.frozen(kw_only=True)
class Mailbox:
    """``mailbox``: the mailbox of one user or queue (or a forward mailbox) and its settings.

    ``owner`` is the user or queue (``regardingobjectid``); it is ``None`` for a forward
    mailbox. Secrets are not stored here.
    """

    id: MailboxId
    name: str
    email_address: str
    owner: RecordRef | None
    profile_id: ProfileId | None
    state: RecordState = RecordState.ACTIVE
    is_forward_mailbox: bool = False
    incoming_delivery_method: IncomingDeliveryMethod = IncomingDeliveryMethod.SERVER_SIDE_SYNC
    outgoing_delivery_method: OutgoingDeliveryMethod = OutgoingDeliveryMethod.SERVER_SIDE_SYNC
    act_delivery_method: ActDeliveryMethod = ActDeliveryMethod.NONE
    process_email_received_after: datetime | None = None
    process_and_delete_emails: bool = False
    allow_email_connector_to_use_credentials: bool = False
    username: str | None = None
    approval: EmailApprovalStatus = EmailApprovalStatus.EMPTY
    enabled_for_incoming: bool = True
    enabled_for_outgoing: bool = True
    enabled_for_act: bool = True
    incoming_status: TestStatus = TestStatus.NOT_RUN
    outgoing_status: TestStatus = TestStatus.NOT_RUN
    act_status: TestStatus = TestStatus.NOT_RUN
    test_completed_on: datetime | None = None
    undeliverable_folder: str | None = None

    @property
    def is_active(self) -> bool:
        """Whether the mailbox is Active (``statecode`` 0)."""
        return self.state is RecordState.ACTIVE

    def enabled_for(self, workload: Workload) -> bool:
        """``enabledforincomingemail`` / ``enabledforoutgoingemail`` / ``enabledforact``."""
        return {
            Workload.INCOMING: self.enabled_for_incoming,
            Workload.OUTGOING: self.enabled_for_outgoing,
            Workload.ACT: self.enabled_for_act,
        }[workload]

    def with_workload_disabled(self, workload: Workload) -> Mailbox:
        """This mailbox after a permanent failure of ``workload``: disabled, status Failure."""
        return self.with_test_results({workload: TestStatus.FAILURE}, at=None)

    def with_test_results(
        self, results: Mapping[Workload, TestStatus], *, at: datetime | None
    ) -> Mailbox:
        """This mailbox with each workload's test status set, enabled exactly when it
        succeeded, and ``test_completed_on`` stamped with ``at`` (when given)."""
        changes: dict[str, Any] = {}
        for workload, status in results.items():
            changes[_ENABLED_FIELD[workload]] = status is TestStatus.SUCCESS
            changes[_STATUS_FIELD[workload]] = status
        if at is not None:
            changes["test_completed_on"] = at
        return attrs.evolve(self, **changes)

    def with_email_address(self, address: str) -> Mailbox:
        """This mailbox with a new email address; its approval goes back to Empty unless only
        the letter case changed (an approval is for an address, see ``docs/decisions.md``)."""
        if address.casefold() == self.email_address.casefold():
            return attrs.evolve(self, email_address=address)
        return attrs.evolve(self, email_address=address, approval=EmailApprovalStatus.EMPTY)

    def uses_server_side_sync(self, workload: Workload) -> bool:
        """Whether the workload's delivery method is server-side synchronization."""
        # A user whose incoming method is Forward Mailbox is served by the forward mailbox,
        # not by polling their own mailbox.
        if workload is Workload.INCOMING:
            return self.incoming_delivery_method is IncomingDeliveryMethod.SERVER_SIDE_SYNC
        if workload is Workload.OUTGOING:
            return self.outgoing_delivery_method is OutgoingDeliveryMethod.SERVER_SIDE_SYNC
        return self.act_delivery_method is ActDeliveryMethod.SERVER_SIDE_SYNC


@attrs.frozen(kw_only=True)
class WorkloadState:
    """What the engine remembers about one workload of one mailbox between runs.

    Mirrors the Dynamics scheduling columns (``postponemailboxprocessinguntil``,
    ``lastsyncerrorcount`` "continuous count", ``itemsprocessedforlastsync``, ...).
    """

    next_run_at: datetime | None = None
    consecutive_failures: int = 0
    last_error: ErrorRecord | None = None
    last_error_at: datetime | None = None
    last_sync_started_on: datetime | None = None
    last_successful_sync_completed_on: datetime | None = None
    items_processed_for_last_sync: int = 0
    items_failed_for_last_sync: int = 0


def process_email_from(mailbox: Mailbox, profile: EmailServerProfile | None) -> datetime | None:
    """The date before which the mailbox's incoming mail is skipped: Dynamics uses the later
    of the profile's and the mailbox's Process Email From, ``None`` when neither is set."""
    profile_date = profile.process_emails_received_after if profile is not None else None
    dates = [d for d in (profile_date, mailbox.process_email_received_after) if d is not None]
    return max(dates) if dates else None
