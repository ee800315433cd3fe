"""Values to rows and back: JSON through the model converter, times as epoch microseconds."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from serversync.model import EmailActivity
from serversync.model.messages import normalize_address
from serversync.serialization import make_converter

__all__ = [
    "activity_columns",
    "dump",
    "from_micros",
    "load",
    "load_any",
    "micros",
    "party_addresses",
    "storable",
]

_T = TypeVar("_T")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_converter = make_converter()


def dump(value: object, kind: Any = None) -> str:
    """The JSON text of a model value; ``kind`` names the union it belongs to (so the text
    carries its tag)."""
    return json.dumps(_converter.unstructure(value, unstructure_as=kind), separators=(",", ":"))


def load(text: str, kind: type[_T]) -> _T:
    """The model value a :func:`dump` wrote."""
    return _converter.structure(json.loads(text), kind)


def load_any(text: str, kind: Any) -> Any:
    """:func:`load` for union types (checkpoints), which are not classes."""
    return _converter.structure(json.loads(text), kind)


def micros(moment: datetime | None) -> int | None:
    """A time as microseconds since the epoch; naive times are taken as UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    """The UTC time :func:`micros` wrote."""
    return _EPOCH + value * _MICROSECOND


def activity_columns(activity: EmailActivity) -> dict[str, Any]:
    """Every column of an email's row except ``seq`` and the claim."""
    return {
        "id": activity.id,
        "direction": int(activity.direction),
        "status": int(activity.status),
        "message_id": activity.message_id,
        "tracking_token": activity.tracking_token,
        "conversation_index_hash": activity.base_conversation_index_hash,
        "sender": normalize_address(activity.sender) if activity.sender is not None else None,
        "sender_mailbox_id": activity.sender_mailbox_id,
        "received_on": micros(activity.received_on),
        "last_activity_on": micros(activity.last_activity_on),
        "postpone_sending_until": micros(activity.postpone_sending_until),
        "tracking_folder_id": activity.tracking_folder_id,
        "data": dump(activity),
    }


def party_addresses(activity: EmailActivity) -> set[str]:
    """The normalised addresses of an email's parties (for participant lookups)."""
    return {normalize_address(party.address) for party in activity.parties if party.address}


def storable(values: Iterable[str]) -> list[str]:
    """The values a lookup may send to the database: one holding a NUL character is never
    stored, so it matches nothing, and PostgreSQL refuses it even as a parameter."""
    return [value for value in values if "\x00" not in value]
