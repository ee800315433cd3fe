"""What an incoming run reads from the store before it lists mail."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from serversync.model.checkpoints import Checkpoint
from serversync.model.quarantine import QuarantinedMessage
from serversync.model.tracking import MailboxTrackingFolder

__all__ = ["IncomingRunStart"]


@attrs.frozen(kw_only=True)
class IncomingRunStart:
    """A mailbox's folder-level tracking rules, the quarantined messages due for another
    attempt, and the saved cursor of each folder (by folder id), read together."""

    tracking_folders: tuple[MailboxTrackingFolder, ...] = ()
    due_quarantine: tuple[QuarantinedMessage, ...] = ()
    checkpoints: Mapping[str, Checkpoint] = attrs.field(factory=dict)
