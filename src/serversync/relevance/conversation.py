"""Conversation index (Outlook's Thread-Index) correlation.

A reply's Thread-Index is its parent's with a 5-byte child block appended, so the whole
value never repeats; the first 22 bytes identify the thread (gap G6). We keep a stable
hash of those bytes as ``base_conversation_index_hash``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

__all__ = ["base_conversation_index_hash"]

_BASE_LENGTH = 22


def base_conversation_index_hash(thread_index: str | None) -> int | None:
    """A 31-bit hash of the thread's base, or ``None`` for a missing or invalid value."""
    if not thread_index:
        return None
    try:
        raw = base64.b64decode("".join(thread_index.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) < _BASE_LENGTH:
        return None
    digest = hashlib.sha256(raw[:_BASE_LENGTH]).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
