"""cattrs converters for the model, for SQL adapters and hosts that store or send our values.

``make_converter()`` returns a fresh converter each time; the global cattrs converter is
never touched. Unions (checkpoints, send outcomes, add results) are tagged with a ``"type"``
field holding the class name. :class:`~serversync.model.Secret` refuses to be unstructured,
so credentials cannot leak into storage by accident.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import cattrs
from cattrs.strategies import configure_tagged_union

from serversync.model import (
    AddResult,
    Attendee,
    Checkpoint,
    FieldValue,
    Recurrence,
    Secret,
    SendOutcome,
)

__all__ = ["make_converter"]


def _refuse_secret(value: Secret) -> Any:
    raise TypeError("serversync does not serialize secrets")


def make_converter() -> cattrs.Converter:
    """A converter that round-trips every model type to JSON-compatible primitives.

    Datetimes and dates become ISO 8601 strings, durations seconds (float), enums their values,
    ``frozenset`` a sorted list. ACT field values (:data:`~serversync.model.FieldValue`)
    keep their type: a datetime, date, recurrence or attendee list is written as a one-key
    object naming it, so it never reads back as a plain string or list.
    """
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_unstructure_hook(datetime, datetime.isoformat)
    converter.register_structure_hook(datetime, lambda v, _: datetime.fromisoformat(v))
    converter.register_unstructure_hook(date, date.isoformat)
    converter.register_structure_hook(date, lambda v, _: date.fromisoformat(v))
    converter.register_unstructure_hook(timedelta, timedelta.total_seconds)
    converter.register_structure_hook(timedelta, lambda v, _: timedelta(seconds=v))
    converter.register_unstructure_hook_func(lambda t: t == frozenset[str], lambda v: sorted(v))
    converter.register_unstructure_hook(Secret, _refuse_secret)
    for union in (Checkpoint, SendOutcome, AddResult):
        configure_tagged_union(union, converter, tag_name="type")
    _configure_field_values(converter)
    return converter


# ActRecord.fields and a filter condition's value hold these unions.
_FIELD_VALUE_TYPES = (FieldValue, FieldValue | tuple[FieldValue, ...])


def _configure_field_values(converter: cattrs.Converter) -> None:
    def unstructure(value: Any) -> Any:
        if value is None or isinstance(value, str | bool | int | float):
            return value
        if isinstance(value, datetime):
            return {"datetime": value.isoformat()}
        if isinstance(value, date):
            return {"date": value.isoformat()}
        if isinstance(value, Recurrence):
            return {"recurrence": converter.unstructure(value)}
        if isinstance(value, tuple):
            if value and all(isinstance(v, Attendee) for v in value):
                return {"attendees": [converter.unstructure(v) for v in value]}
            return {"tuple": [unstructure(v) for v in value]}
        raise TypeError(f"not an ACT field value: {value!r}")

    def structure(value: Any, _: Any) -> Any:
        if not isinstance(value, dict):
            return value
        ((kind, inner),) = value.items()
        if kind == "datetime":
            return datetime.fromisoformat(inner)
        if kind == "date":
            return date.fromisoformat(inner)
        if kind == "recurrence":
            return converter.structure(inner, Recurrence)
        if kind == "attendees":
            return tuple(converter.structure(v, Attendee) for v in inner)
        if kind == "tuple":
            return tuple(structure(v, None) for v in inner)
        raise ValueError(f"not an ACT field value: {value!r}")

    def is_field_value(kind: Any) -> bool:
        return any(kind == t for t in _FIELD_VALUE_TYPES)

    converter.register_unstructure_hook_func(is_field_value, unstructure)
    converter.register_structure_hook_func(is_field_value, structure)
