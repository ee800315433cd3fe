"""Exchange item mappings for appointment, contact and task synchronization."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import attrs

from serversync.model.ids import MappingId, RecordRef

__all__ = ["ExchangeSyncIdMapping"]


@attrs.frozen(kw_only=True)
class ExchangeSyncIdMapping:
    """``exchangesyncidmapping``: one CRM record linked to one Exchange item for one user.

    ``owner`` is the user whose mailbox holds the item; each user has their own mapping for
    the same record.

    The last synced state is kept so that a later change is seen per field and side:
    ``synced_values`` holds a fingerprint of each field's value as both sides agreed at the
    last sync, ``record_version`` the CRM row version and ``change_key`` the Exchange change
    key written or read then. ``is_deleted_in_exchange`` / ``is_unlinked_in_crm`` record a
    delete or unlink that ended the link (the row stays for the record).
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
    record_version: str | None = None
    synced_values: Mapping[str, str] = attrs.field(factory=dict)
    last_synced_on: datetime | None = None
    user_decision: int | None = None
    record_owner: RecordRef | None = None
    in_sync_filters: bool = True
    """Whether the record matched the user's sync filters at the last sync: one that did and
    no longer does is a logical delete. A record created from an Exchange item need not
    match them to stay linked."""

    @property
    def is_linked(self) -> bool:
        """Whether the record and the item are linked: both exist and no delete or unlink
        ended the link."""
        return (
            bool(self.exchange_entry_id)
            and bool(self.record.id)
            and not self.is_deleted_in_exchange
            and not self.is_unlinked_in_crm
        )
