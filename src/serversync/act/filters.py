"""Synchronization filters: which CRM records go to a user's Exchange mailbox.

A user's enabled filters for one entity are a union: a record syncs when any of them matches
it, and with no enabled filter nothing of that entity syncs (Dynamics' "My Outlook
Contacts" and the other Outlook templates are ordinary filters here). Conditions follow
FetchXML: a comparison with a null value is false (``ne`` included), and string comparisons
ignore case as SQL Server's default collation does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import date, datetime

from serversync.model.act import (
    ActEntity,
    ActRecord,
    ConditionOperator,
    FieldCondition,
    FieldValue,
    FilterGroup,
    SyncFilter,
)
from serversync.model.ids import RecordRef

__all__ = ["enabled_filters", "in_sync_scope", "matches", "record_field"]

_OWNER_FIELDS = frozenset({"owner", "ownerid"})


def record_field(record: ActRecord, name: str) -> FieldValue:
    """The value a condition on ``name`` sees: ``owner``/``ownerid`` is the owning user's
    id, ``organizer`` falls back to the record's organizer, anything else is the field."""
    if name in _OWNER_FIELDS:
        return record.owner.id
    if name == "organizer" and "organizer" not in record.fields:
        return record.organizer
    return record.fields.get(name)


def _key(value: object) -> object:
    return value.casefold() if isinstance(value, str) else value


def _equal(left: FieldValue, right: object) -> bool:
    if left is None or right is None:
        return False
    return _key(left) == _key(right)


def _ordered(left: FieldValue, right: object, *, at_least: bool) -> bool:
    if left is None or right is None:
        return False
    try:
        if isinstance(left, datetime) != isinstance(right, datetime):
            return False  # a date and a datetime are not ordered against each other
        if isinstance(left, bool) or not isinstance(left, str | int | float | date):
            return False
        if at_least:
            return bool(_key(left) >= _key(right))  # type: ignore[operator]
        return bool(_key(left) <= _key(right))  # type: ignore[operator]
    except TypeError:
        return False


def _like(left: FieldValue, pattern: object) -> bool:
    if not isinstance(left, str) or not isinstance(pattern, str):
        return False
    parts = []
    for char in pattern:
        if char == "%":
            parts.append(".*")
        elif char == "_":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.fullmatch("".join(parts), left, flags=re.IGNORECASE | re.DOTALL) is not None


def _condition(condition: FieldCondition, record: ActRecord, user: RecordRef) -> bool:
    op = condition.operator
    if op is ConditionOperator.EQ_USERID:
        if condition.field in _OWNER_FIELDS:
            return record.owner == user
        return _equal(record_field(record, condition.field), user.id)
    value = record_field(record, condition.field)
    expected = condition.value
    if op is ConditionOperator.NULL:
        return value is None
    if op is ConditionOperator.NOT_NULL:
        return value is not None
    if op is ConditionOperator.EQ:
        return _equal(value, expected)
    if op is ConditionOperator.NE:
        return value is not None and expected is not None and not _equal(value, expected)
    if op is ConditionOperator.IN:
        options = expected if isinstance(expected, tuple) else (expected,)
        return any(_equal(value, option) for option in options)
    if op is ConditionOperator.LIKE:
        return _like(value, expected)
    if op is ConditionOperator.GE:
        return _ordered(value, expected, at_least=True)
    return _ordered(value, expected, at_least=False)  # LE


def matches(group: FilterGroup, record: ActRecord, user: RecordRef) -> bool:
    """Whether ``record`` meets ``group`` for the syncing ``user``. An empty ``and`` group
    matches everything, an empty ``or`` group nothing (as FetchXML)."""
    results: Iterable[bool] = (
        *(_condition(c, record, user) for c in group.conditions),
        *(matches(g, record, user) for g in group.groups),
    )
    return any(results) if group.any_of else all(results)


def enabled_filters(filters: Iterable[SyncFilter], entity: ActEntity) -> tuple[SyncFilter, ...]:
    """The enabled filters of ``entity`` among ``filters``."""
    return tuple(f for f in filters if f.enabled and f.entity is entity)


def in_sync_scope(record: ActRecord, filters: Sequence[SyncFilter], user: RecordRef) -> bool:
    """Whether ``record`` syncs to ``user``'s mailbox: one of the user's enabled filters for
    its entity matches it (the union); no enabled filter means it does not."""
    return any(matches(f.criteria, record, user) for f in enabled_filters(filters, record.entity))
