"""Pure message handling over the stdlib email package: parsing and composing."""

from serversync.mime.compose import compose, message_id_for, outgoing_message_id
from serversync.mime.parse import (
    derive_message_id,
    ensure_message_id,
    forwarded_message,
    parse_headers,
    parse_message,
)

__all__ = [
    "compose",
    "derive_message_id",
    "ensure_message_id",
    "forwarded_message",
    "message_id_for",
    "outgoing_message_id",
    "parse_headers",
    "parse_message",
]
