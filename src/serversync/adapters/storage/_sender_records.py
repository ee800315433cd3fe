"""The record the shipped directories create for an unknown sender."""

from __future__ import annotations

import uuid

from serversync.model import CrmRecord, RecordRef, SenderRecordRequest

__all__ = ["sender_record"]

_NAMESPACE = uuid.UUID("6f1f3c8e-4b0e-4d7a-9d3c-2f1c5a8e7b41")


def sender_record(request: SenderRecordRequest) -> CrmRecord:
    """A contact or lead named after the sender, owned by the user who asked for it.

    Its id derives from the entity and the address, so two engines creating the record for
    the same sender at once write the same row instead of two.
    """
    key = uuid.uuid5(_NAMESPACE, f"{request.entity}:{request.email_address}")
    return CrmRecord(
        ref=RecordRef(request.entity, f"{request.entity}-{key}"),
        email_address=request.email_address,
        name=request.name or request.email_address,
        owner=request.owner,
    )
