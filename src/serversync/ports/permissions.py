"""The send-as port: whether one CRM user may send email as another."""

from __future__ import annotations

from typing import Protocol

from serversync.model import RecordRef

__all__ = ["SendAsPolicy"]


class SendAsPolicy(Protocol):
    """Answers Dynamics' send-as check for an email whose From is not its submitter.

    Dynamics requires both: the submitter holds "Send Email as Another User"
    (``prvSendAsUser``) at enough depth, and the From user allows others to send on their
    behalf (``issendasallowed``). Both live in the host's CRM, so the host answers.
    """

    async def may_send_as(self, submitter: RecordRef, sender: RecordRef) -> bool:
        """Whether ``submitter`` may send email as ``sender`` (a user or a queue)."""
        ...
