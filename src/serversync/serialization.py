"""cattrs converters for the model, for SQL adapters and hosts that store or send our values.

``make_converter()`` returns a fresh converter each time; the global cattrs converter is
never touched. Unions (checkpoints, send outcomes, add results) are tagged with a ``"type"``
field holding the class name. :class:`~serversync.model.Secret` refuses to be unstructured,
so credentials cannot leak into storage by accident.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import cattrs
from cattrs.strategies import configure_tagged_union

from serversync.model import (
    AddResult,
    Checkpoint,
    Secret,
    SendOutcome,
)

__all__ = ["make_converter"]


def _refuse_secret(value: Secret) -> Any:
    raise TypeError("serversync does not serialize secrets")


def make_converter() -> cattrs.Converter:
    """A converter that round-trips every model type to JSON-compatible primitives.

    Datetimes become ISO 8601 strings, durations seconds (float), enums their values,
    ``frozenset`` a sorted list.
    """
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_unstructure_hook(datetime, datetime.isoformat)
    converter.register_structure_hook(datetime, lambda v, _: datetime.fromisoformat(v))
    converter.register_unstructure_hook(timedelta, timedelta.total_seconds)
    converter.register_structure_hook(timedelta, lambda v, _: timedelta(seconds=v))
    converter.register_unstructure_hook_func(lambda t: t == frozenset[str], lambda v: sorted(v))
    converter.register_unstructure_hook(Secret, _refuse_secret)
    for union in (Checkpoint, SendOutcome, AddResult):
        configure_tagged_union(union, converter, tag_name="type")
    return converter
