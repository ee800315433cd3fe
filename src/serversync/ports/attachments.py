"""The attachment port: the files of an outgoing email, from the host's storage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from serversync.model import EmailActivity, OutgoingAttachment

__all__ = ["AttachmentSource"]


class AttachmentSource(Protocol):
    """Gives the attachments of an email about to be sent (Dynamics' ``activitymimeattachment``)."""

    async def attachments_for(self, activity: EmailActivity) -> Sequence[OutgoingAttachment]:
        """The files to attach, in order; empty when there are none."""
        ...
