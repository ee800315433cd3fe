"""Message-ID, In-Reply-To and References parsing (RFC 5322 msg-id lists)."""

from __future__ import annotations

import re

from serversync.model import MessageId

__all__ = ["normalize_message_id", "parse_message_ids"]

# A domain literal ("[...]") may itself hold "<" and ">" (RFC 5322 dtext).
_BRACKETED = re.compile(r"<((?:[^<>\s\[\]]|\[[^\[\]\s\\]*\])+)>")
_WHITESPACE = re.compile(r"\s+")


def parse_message_ids(value: str | None) -> tuple[MessageId, ...]:
    """Every msg-id in a header value, in order, each written ``<id>``, without repeats.

    Folding whitespace inside brackets is removed. A value without brackets but with a
    single ``@`` token (some clients write that) counts as one id. Never raises.
    """
    if not value:
        return ()
    unfolded = _WHITESPACE.sub(" ", value)
    # Whitespace inside brackets comes from folding, never from the id itself.
    squeezed = re.sub(r"<([^<>]*)>", lambda m: "<" + m.group(1).replace(" ", "") + ">", unfolded)
    found = [f"<{m}>" for m in _BRACKETED.findall(squeezed)]
    if not found:
        tokens = [t for t in squeezed.split(" ") if "@" in t]
        if len(tokens) == 1:
            found = [f"<{tokens[0].strip('<>')}>"]
    seen: dict[MessageId, None] = {}
    for mid in found:
        seen.setdefault(MessageId(mid), None)
    return tuple(seen)


def normalize_message_id(value: str | None) -> MessageId | None:
    """The first msg-id in ``value``, or ``None`` when it holds none."""
    ids = parse_message_ids(value)
    return ids[0] if ids else None
