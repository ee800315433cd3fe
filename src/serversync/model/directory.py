"""CRM records as the host's record directory describes them to serversync."""

from __future__ import annotations

from datetime import datetime

import attrs

from serversync.model.ids import MailboxId, RecordRef
from serversync.model.messages import normalize_address
from serversync.model.options import EmailApprovalStatus, IncomingFilteringMethod

__all__ = ["CrmRecord", "SenderRecordRequest"]


@attrs.frozen(kw_only=True)
class CrmRecord:
    """A CRM record that an email address resolves to (user, queue, contact, account, ...).

    For users and queues, ``incoming_filtering_method`` is the "Track"/"Convert incoming
    email to activities" option, ``mailbox_id`` their mailbox and ``approval`` the status of
    their primary email address. For users, ``auto_create_record_type`` is the personal option
    "Automatically create records in Dynamics 365" (``usersettings.autocreatecontactonpromote``):
    ``"contact"`` or ``"lead"`` to create one for an unknown sender of mail they track,
    ``None`` to create nothing.
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
    auto_create_record_type: str | None = None


@attrs.frozen(kw_only=True)
class SenderRecordRequest:
    """A contact or lead to create for the unknown sender of a tracked email.

    ``entity`` is ``"contact"`` or ``"lead"``; ``name`` is the sender's display name (may be
    empty); ``owner`` is the user whose option asked for it; ``message_id`` is the email's.
    """

    entity: str
    email_address: str = attrs.field(converter=normalize_address)
    name: str = ""
    owner: RecordRef
    message_id: str | None = None
