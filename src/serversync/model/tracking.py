"""Folder-level tracking rules and correlation results."""

from __future__ import annotations

import attrs

from serversync.model.ids import ActivityId, MailboxId, RecordRef, TrackingFolderId
from serversync.model.options import CorrelationMethod

__all__ = ["CorrelationMatch", "MailboxTrackingFolder"]


@attrs.frozen(kw_only=True)
class MailboxTrackingFolder:
    """``mailboxtrackingfolder``: track every email in one folder, optionally regarding a record."""

    id: TrackingFolderId
    mailbox_id: MailboxId
    exchange_folder_id: str
    exchange_folder_name: str | None = None
    regarding: RecordRef | None = None
    folder_onboarding_status: int = 0


@attrs.frozen(kw_only=True)
class CorrelationMatch:
    """An incoming email linked to an earlier one: how, to which, and what it inherits.

    ``parent_activity_id`` is set only for In-Reply-To and conversation-index matches,
    as in Dynamics.
    """

    method: CorrelationMethod
    correlated_activity_id: ActivityId
    parent_activity_id: ActivityId | None
    regarding: RecordRef | None
    owner: RecordRef | None = None
    subject_changed: bool = False
