"""CRM records as the host's record directory describes them to serversync."""

from __future__ import annotations

from datetime import datetime

import attrs

from serversync.model.ids import MailboxId, RecordRef
from serversync.model.messages import normalize_address
from serversync.model.options import EmailApprovalStatus, IncomingFilteringMethod

__all__ = ["CrmRecord"]


@attrs.frozen(kw_only=True)
class CrmRecord:
    """A CRM record that an email address resolves to (user, queue, contact, account, ...).

    For users and queues, ``incoming_filtering_method`` is the "Track"/"Convert incoming
    email to activities" option, ``mailbox_id`` their mailbox and ``approval`` the status of
    their primary email address.
    """

    ref: RecordRef
    email_address: str = attrs.field(converter=normalize_address)
    name: str = ""
    is_active: bool = True
    owner: RecordRef | None = None
    created_on: datetime | None = None
    incoming_filtering_method: IncomingFilteringMethod | None = None
    mailbox_id: MailboxId | None = None
    approval: EmailApprovalStatus = EmailApprovalStatus.EMPTY
