"""Exchange item mappings for appointment, contact and task synchronization."""

from __future__ import annotations

from datetime import datetime

import attrs

from serversync.model.ids import MappingId, RecordRef

__all__ = ["ExchangeSyncIdMapping"]


@attrs.frozen(kw_only=True)
class ExchangeSyncIdMapping:
    """``exchangesyncidmapping``: one CRM record linked to one Exchange item for one user.

    ``owner`` is the user whose mailbox holds the item; each user has their own mapping for
    the same record.
    """

    id: MappingId
    owner: RecordRef
    record: RecordRef
    exchange_entry_id: str
    change_key: str | None = None
    from_crm_change_type: int | None = None
    to_crm_change_type: int | None = None
    is_deleted_in_exchange: bool = False
    is_unlinked_in_crm: bool = False
    retries: int = 0
    last_sync_error: str | None = None
    last_sync_error_code: int | None = None
    last_sync_error_occurred_on: datetime | None = None
    item_subject: str | None = None
    version_number: int | None = None
