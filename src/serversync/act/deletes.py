"""Deletes, unlinks and cancellations (Dynamics' rules for Outlook and server-side sync).

=========== ========================== ==================================================
Entity      Deleted in Exchange        Deleted in the CRM
=========== ========================== ==================================================
appointment CRM appointment deleted    Exchange item deleted only if it is present or
                                       future and the user owns or organizes it
contact     CRM contact kept           Exchange copy deleted only if the user is not the
                                       contact's owner
task        CRM task deleted           Exchange task deleted if it is current
=========== ========================== ==================================================

A record that merely leaves the user's filters is a logical delete: it follows the CRM
column, or, with ``distinct_physical_and_logical_deletes``, is unlinked (the Exchange item
stays, the link ends). A cancelled CRM appointment is deleted from the organizer's
calendar, with cancellations sent, only when ``propagate_appointment_cancellations`` is on.
"""

from __future__ import annotations

import enum
from datetime import date, datetime

import attrs

from serversync.model.act import ActEntity, ActRecord, ExchangeItem, FieldValue
from serversync.model.ids import RecordRef

__all__ = [
    "CANCELED",
    "COMPLETED",
    "DeleteDecision",
    "DeleteOutcome",
    "is_cancelled",
    "on_cancellation",
    "on_crm_delete",
    "on_exchange_delete",
    "on_left_filters",
]

CANCELED = "canceled"
"""The ``state`` field of a cancelled appointment (``statecode`` Canceled)."""
COMPLETED = "completed"
"""The ``status`` field of a completed task."""


class DeleteOutcome(enum.StrEnum):
    """What a delete on one side does to the other side."""

    DELETE_CRM_RECORD = "delete_crm_record"
    KEEP_CRM_RECORD = "keep_crm_record"
    DELETE_EXCHANGE_ITEM = "delete_exchange_item"
    KEEP_EXCHANGE_ITEM = "keep_exchange_item"
    UNLINK = "unlink"


@attrs.frozen(kw_only=True)
class DeleteDecision:
    """A delete rule's answer and the reason, for the cycle's outcome."""

    outcome: DeleteOutcome
    reason: str
    send_cancellations: bool = False


def on_exchange_delete(entity: ActEntity) -> DeleteDecision:
    """An item linked to a CRM record was deleted in Exchange."""
    if entity is ActEntity.CONTACT:
        return DeleteDecision(
            outcome=DeleteOutcome.KEEP_CRM_RECORD,
            reason="a contact deleted in Exchange is kept in the CRM",
        )
    return DeleteDecision(
        outcome=DeleteOutcome.DELETE_CRM_RECORD,
        reason=f"an {entity.value} deleted in Exchange is deleted in the CRM"
        if entity is ActEntity.APPOINTMENT
        else f"a {entity.value} deleted in Exchange is deleted in the CRM",
    )


def _same_address(left: str | None, right: str | None) -> bool:
    return left is not None and right is not None and left.strip().lower() == right.strip().lower()


def _as_datetime(value: FieldValue) -> datetime | None:
    if isinstance(value, datetime):
        return value
    return None


def _present_or_future(item: ExchangeItem, now: datetime) -> bool:
    fields = item.fields
    if fields.get("recurrence") is not None:
        recurrence = fields["recurrence"]
        end_date = getattr(recurrence, "end_date", None)
        count = getattr(recurrence, "count", None)
        if end_date is None and count is None:
            return True  # a series without end always has future occurrences
        if isinstance(end_date, date) and end_date >= now.date():
            return True
    end = _as_datetime(fields.get("end")) or _as_datetime(fields.get("start"))
    return end is None or end >= now


def _organizer(item: ExchangeItem) -> str | None:
    value = item.fields.get("organizer")
    return value if isinstance(value, str) else item.organizer


def _task_is_current(item: ExchangeItem) -> bool:
    status = item.fields.get("status")
    done = item.fields.get("percent_complete")
    if isinstance(status, str) and status.lower() == COMPLETED:
        return False
    return not (isinstance(done, int | float) and not isinstance(done, bool) and done >= 100)


def on_crm_delete(
    entity: ActEntity,
    *,
    user: RecordRef,
    mailbox_address: str,
    record_owner: RecordRef | None,
    item: ExchangeItem,
    now: datetime,
) -> DeleteDecision:
    """A CRM record linked to ``item`` in ``user``'s mailbox was deleted.

    The record is gone, so ``record_owner`` is the owner last seen (kept on the mapping) and
    the item tells the time, organizer and task status.
    """
    if entity is ActEntity.APPOINTMENT:
        owner = record_owner == user
        organizer = _same_address(_organizer(item), mailbox_address)
        if not (owner or organizer):
            return DeleteDecision(
                outcome=DeleteOutcome.KEEP_EXCHANGE_ITEM,
                reason="the user neither owns nor organizes the appointment",
            )
        if not _present_or_future(item, now):
            return DeleteDecision(
                outcome=DeleteOutcome.KEEP_EXCHANGE_ITEM,
                reason="the appointment is in the past",
            )
        return DeleteDecision(
            outcome=DeleteOutcome.DELETE_EXCHANGE_ITEM,
            reason="a present or future appointment of its owner or organizer",
        )
    if entity is ActEntity.CONTACT:
        if record_owner == user:
            return DeleteDecision(
                outcome=DeleteOutcome.KEEP_EXCHANGE_ITEM,
                reason="the user owns the contact: the Exchange copy is kept",
            )
        return DeleteDecision(
            outcome=DeleteOutcome.DELETE_EXCHANGE_ITEM,
            reason="the user does not own the contact: the Exchange copy is deleted",
        )
    if _task_is_current(item):
        return DeleteDecision(
            outcome=DeleteOutcome.DELETE_EXCHANGE_ITEM, reason="the task is current"
        )
    return DeleteDecision(
        outcome=DeleteOutcome.KEEP_EXCHANGE_ITEM, reason="the task is no longer current"
    )


def on_left_filters(
    entity: ActEntity,
    *,
    distinct_physical_and_logical_deletes: bool,
    user: RecordRef,
    mailbox_address: str,
    record_owner: RecordRef | None,
    item: ExchangeItem,
    now: datetime,
) -> DeleteDecision:
    """A linked record no longer matches any of the user's filters (a logical delete)."""
    if distinct_physical_and_logical_deletes:
        return DeleteDecision(
            outcome=DeleteOutcome.UNLINK,
            reason="the record left the user's sync filters: unlinked, not deleted",
        )
    decision = on_crm_delete(
        entity,
        user=user,
        mailbox_address=mailbox_address,
        record_owner=record_owner,
        item=item,
        now=now,
    )
    return attrs.evolve(
        decision, reason=f"the record left the user's sync filters; {decision.reason}"
    )


def is_cancelled(record: ActRecord) -> bool:
    """Whether ``record`` is a cancelled appointment."""
    state = record.fields.get("state")
    return (
        record.entity is ActEntity.APPOINTMENT
        and isinstance(state, str)
        and state.lower() == CANCELED
    )


def on_cancellation(
    record: ActRecord,
    *,
    propagate: bool,
    mailbox_address: str,
    item: ExchangeItem,
    now: datetime,
) -> DeleteDecision | None:
    """What a cancelled CRM appointment does to its Exchange item; ``None`` when nothing
    (the switch is off, the user is not the organizer, or the meeting is over)."""
    if not (propagate and is_cancelled(record)):
        return None
    organizer = record.organizer or _organizer(item)
    if not _same_address(organizer, mailbox_address) or not _present_or_future(item, now):
        return None
    return DeleteDecision(
        outcome=DeleteOutcome.DELETE_EXCHANGE_ITEM,
        reason="a cancelled appointment is deleted from the organizer's calendar",
        send_cancellations=True,
    )
