"""Field fingerprints and per-field change detection.

A mapping keeps, per field, a fingerprint of the value both sides agreed on at the last
sync. A side changed a field when its value's fingerprint differs from that one. Fingerprints
are SHA-256 digests of a canonical rendering, so they are stable across processes and
versions: datetimes are compared in UTC (the same instant in two time zones is the same
value), an empty text is no value, line endings are normalised (Exchange stores CRLF), an
integral float equals the integer, and attendees compare as a set of lower-cased addresses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime

import attrs

from serversync.model.act import ActRecord, Attendee, ExchangeItem, FieldValue, Recurrence

__all__ = [
    "changed_fields",
    "fingerprint",
    "fingerprints",
    "item_values",
    "record_values",
]


def _render(value: object) -> str:
    if value is None or value == "" or value == ():
        return "n:"  # both stores treat an empty text or list as no value
    if isinstance(value, bool):
        return f"b:{int(value)}"
    if isinstance(value, int):
        return f"i:{value}"
    if isinstance(value, float):
        return f"i:{int(value)}" if value.is_integer() else f"f:{value!r}"
    if isinstance(value, str):
        return "s:" + value.replace("\r\n", "\n").replace("\r", "\n")
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return "t:" + value.isoformat()  # naive: rendered as it is, never equal to aware
        return "t:" + value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return "d:" + value.isoformat()
    if isinstance(value, Recurrence):
        parts = (f"{a.name}={_render(getattr(value, a.name))}" for a in attrs.fields(Recurrence))
        return "r:(" + ";".join(parts) + ")"
    if isinstance(value, Attendee):
        return f"a:{value.address.strip().lower()}|{int(value.optional)}"
    if isinstance(value, tuple):
        items = [_render(item) for item in value]
        if all(isinstance(item, Attendee) for item in value):
            items.sort()  # attendees are a set; Exchange does not keep their order
        return "l:[" + ",".join(items) + "]"
    raise TypeError(f"cannot fingerprint a {type(value).__name__}")


def fingerprint(value: FieldValue) -> str:
    """The SHA-256 hex digest of ``value``'s canonical rendering."""
    return hashlib.sha256(_render(value).encode("utf-8")).hexdigest()


def fingerprints(values: Mapping[str, FieldValue], fields: Iterable[str]) -> dict[str, str]:
    """Fingerprints of ``fields`` present in ``values``."""
    return {name: fingerprint(values[name]) for name in fields if name in values}


def changed_fields(
    values: Mapping[str, FieldValue], synced: Mapping[str, str], fields: Iterable[str]
) -> frozenset[str]:
    """The fields among ``fields`` whose value in ``values`` differs from the fingerprint in
    ``synced``. A field absent from ``values`` was not read and has not changed; a field
    never synced has changed unless it is empty."""
    changed = set()
    for name in fields:
        if name not in values:
            continue
        known = synced.get(name)
        value = values[name]
        if known is None:
            if value is not None and value != "" and value != ():
                changed.add(name)
        elif fingerprint(value) != known:
            changed.add(name)
    return frozenset(changed)


def record_values(record: ActRecord) -> dict[str, FieldValue]:
    """A CRM record's field values, its organizer included."""
    values = dict(record.fields)
    if record.organizer is not None:
        values.setdefault("organizer", record.organizer)
    return values


def item_values(item: ExchangeItem) -> dict[str, FieldValue]:
    """An Exchange item's field values, its organizer included."""
    values = dict(item.fields)
    if item.organizer is not None:
        values.setdefault("organizer", item.organizer)
    return values
