"""Appointments, contacts and tasks (ACT) as they sync between the CRM and Exchange.

Both sides are described with the same field names (:data:`FieldValues`), so that mapping
directions, change detection and conflicts are decided field by field in pure code:

- :class:`ActRecord` is the CRM row (``appointment``, ``contact``, ``task``) as the host's
  :class:`~serversync.ports.ActRecordRepository` returns it;
- :class:`ExchangeItem` is the Exchange item as an
  :class:`~serversync.ports.ExchangeItemsSession` returns it;
- :class:`SyncFilter` is one of a user's synchronization filters ("My Outlook Contacts"):
  conditions over the record's fields, the union of a user's enabled filters decides which
  records go to Exchange, and no enabled filter means nothing of that entity syncs.

Field names are serversync's, not Dataverse's or EWS's (``subject``, ``start``, ``email1``...);
:mod:`serversync.act.fields` lists them per entity with their default directions.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import date, datetime

import attrs

from serversync.model.ids import MailboxId, RecordRef

__all__ = [
    "ActAction",
    "ActEntity",
    "ActRecord",
    "ActSyncState",
    "Attendee",
    "ConditionOperator",
    "ConflictWinner",
    "ExchangeItem",
    "ExchangeItemChanges",
    "ExchangeItemKey",
    "FieldCondition",
    "FieldValue",
    "FieldValues",
    "FilterGroup",
    "Recurrence",
    "RecurrenceKind",
    "SyncDirection",
    "SyncFilter",
]


class ActEntity(enum.StrEnum):
    """The CRM tables that sync with Exchange items (``objecttypecode`` of a mapping)."""

    APPOINTMENT = "appointment"
    CONTACT = "contact"
    TASK = "task"


class SyncDirection(enum.StrEnum):
    """Which way one synchronized field flows (Dynamics' "synchronized fields" settings)."""

    TWO_WAY = "two_way"
    TO_EXCHANGE = "to_exchange"
    """CRM → Exchange only: a change made in Exchange is not written to the CRM."""
    TO_CRM = "to_crm"
    """Exchange → CRM only: a change made in the CRM is not written to Exchange."""
    NONE = "none"


class ConflictWinner(enum.StrEnum):
    """Which side's value is kept when a two-way field changed on both sides since the last
    sync to different values (see ``docs/act.md``, "Conflicts")."""

    CRM = "crm"
    EXCHANGE = "exchange"
    LATEST = "latest"
    """The side modified last (CRM ``modified_on`` against Exchange ``last_modified``);
    a tie goes to the CRM."""


class RecurrenceKind(enum.StrEnum):
    """How a recurring appointment repeats (Exchange's pattern kinds, simplified)."""

    DAILY = "daily"
    WEEKLY = "weekly"
    ABSOLUTE_MONTHLY = "absolute_monthly"
    ABSOLUTE_YEARLY = "absolute_yearly"


@attrs.frozen(kw_only=True)
class Recurrence:
    """The pattern and range of a recurring appointment (the series master).

    ``weekdays`` are ISO numbers (1 = Monday) for weekly patterns; ``day_of_month`` and
    ``month`` serve the absolute patterns. The range ends after ``count`` occurrences, on
    ``end_date``, or never when both are ``None``. ``time_zone`` is the IANA name the series
    is defined in, so that occurrences keep their wall-clock time across DST changes.
    """

    kind: RecurrenceKind
    interval: int = 1
    weekdays: tuple[int, ...] = ()
    day_of_month: int | None = None
    month: int | None = None
    start_date: date
    end_date: date | None = None
    count: int | None = None
    time_zone: str = "UTC"


@attrs.frozen(kw_only=True)
class Attendee:
    """One attendee of an appointment: an address, and whether attending is optional."""

    address: str
    optional: bool = False


FieldValue = str | int | float | bool | datetime | date | Recurrence | tuple[Attendee, ...] | None
"""One field's value. Datetimes are timezone-aware."""

FieldValues = Mapping[str, FieldValue]
"""Field name to value; a field that is absent was not read or does not apply."""


class ConditionOperator(enum.StrEnum):
    """FetchXML-style condition operators a synchronization filter can use."""

    EQ = "eq"
    NE = "ne"
    IN = "in"
    NULL = "null"
    NOT_NULL = "not-null"
    LIKE = "like"
    GE = "ge"
    LE = "le"
    EQ_USERID = "eq-userid"
    """The field (usually ``owner``) is the syncing user."""


@attrs.frozen(kw_only=True)
class FieldCondition:
    """``field operator value``, FetchXML's ``<condition>``."""

    field: str
    operator: ConditionOperator
    value: FieldValue | tuple[FieldValue, ...] = None


@attrs.frozen(kw_only=True)
class FilterGroup:
    """FetchXML's ``<filter type="and|or">``: conditions and nested groups."""

    any_of: bool = False
    """``True`` for ``or``, ``False`` for ``and``."""
    conditions: tuple[FieldCondition, ...] = ()
    groups: tuple[FilterGroup, ...] = ()


@attrs.frozen(kw_only=True)
class SyncFilter:
    """One synchronization filter (``userquery`` of type Outlook filter) of one user."""

    id: str
    name: str
    owner: RecordRef
    entity: ActEntity
    criteria: FilterGroup
    enabled: bool = True


@attrs.frozen(kw_only=True)
class ActRecord:
    """A CRM appointment, contact or task, as the host stores it.

    ``version`` is the host's row version (Dataverse ``versionnumber``, an ETag, a counter):
    serversync passes it back on updates so that a concurrent edit is detected, never
    overwritten. ``owner`` is the owning user; ``organizer`` is an appointment's organizer
    address (it decides who may delete the Exchange meeting). A recurring appointment's
    master carries ``fields["recurrence"]``; an exception (a moved or changed occurrence) is
    a record of its own with ``series`` set to the master and ``original_start`` to the
    occurrence it replaces.
    """

    ref: RecordRef
    owner: RecordRef
    fields: FieldValues
    version: str
    modified_on: datetime
    organizer: str | None = None
    series: RecordRef | None = None
    original_start: datetime | None = None

    @property
    def entity(self) -> ActEntity:
        """The record's :class:`ActEntity`."""
        return ActEntity(self.ref.entity)


@attrs.frozen(kw_only=True)
class ExchangeItemKey:
    """An Exchange item id with the change key of the version last read or written.

    With ``original_start`` the key names an occurrence of the recurring master ``item_id``:
    the one that starts (or started, before it was moved) at that time. Updating it turns
    the occurrence into an exception, whose own key comes back.
    """

    item_id: str
    change_key: str
    original_start: datetime | None = None


@attrs.frozen(kw_only=True)
class ExchangeItem:
    """A calendar item, contact or task in a user's Exchange mailbox.

    ``organizer`` is a calendar item's organizer address; a recurring master carries
    ``fields["recurrence"]`` and the original starts of the occurrences deleted from the
    series (``deleted_occurrences``), and an exception is an item of its own with
    ``series_id`` (the master's item id) and ``original_start``.
    """

    entity: ActEntity
    key: ExchangeItemKey
    fields: FieldValues
    last_modified: datetime
    organizer: str | None = None
    series_id: str | None = None
    original_start: datetime | None = None
    deleted_occurrences: tuple[datetime, ...] = ()


@attrs.frozen(kw_only=True)
class ExchangeItemChanges:
    """What changed in one entity's Exchange folder since a sync state.

    ``changed`` are created or updated items (whole, with every mapped field), ``deleted``
    the ids of items that are gone. ``state`` is the sync state after them; ``reset`` says
    the old state was no longer known and every item is listed again; ``more`` says another
    page is waiting.
    """

    entity: ActEntity
    changed: tuple[ExchangeItem, ...] = ()
    deleted: tuple[str, ...] = ()
    state: str
    reset: bool = False
    more: bool = False


@attrs.frozen(kw_only=True)
class ActSyncState:
    """Where one mailbox's ACT sync of one entity stands.

    ``exchange_state`` is the Exchange folder's sync state (``None`` before the first
    cycle); ``crm_modified_after`` is the ``modified_on`` up to which CRM changes were pushed.
    ``unconfirmed`` are the ids of items serversync created after that sync state was read:
    Exchange reports no delete for an item a sync state never listed, so the next cycle
    reads those items to find out whether they still exist.
    """

    mailbox_id: MailboxId
    entity: ActEntity
    exchange_state: str | None = None
    crm_modified_after: datetime | None = None
    unconfirmed: tuple[str, ...] = ()


class ActAction(enum.StrEnum):
    """What the engine did (or decided not to do) with one record or item."""

    CREATED_IN_EXCHANGE = "created_in_exchange"
    UPDATED = "updated"
    CREATED_IN_CRM = "created_in_crm"
    DELETED_IN_CRM = "deleted_in_crm"
    DELETED_IN_EXCHANGE = "deleted_in_exchange"
    MARKED_DELETED_IN_EXCHANGE = "marked_deleted_in_exchange"
    """An item deleted in Exchange whose CRM record is kept (contacts)."""
    UNLINKED = "unlinked"
    ECHO = "echo"
    """An Exchange change that was serversync's own write: nothing to do."""
    SKIPPED = "skipped"
