"""Pure message handling over the stdlib email package: parsing and composing."""

from serversync.mime.compose import compose, outgoing_message_id
from serversync.mime.parse import derive_message_id, parse_headers, parse_message

__all__ = ["compose", "derive_message_id", "outgoing_message_id", "parse_headers", "parse_message"]
