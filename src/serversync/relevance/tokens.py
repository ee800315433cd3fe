"""Tracking tokens: the ``CRM:0001005`` suffix that lets a reply correlate by subject.

A token is the prefix, a one-digit designator (``0``, online), the sender's user number
(``base + n``, ``user_digits`` wide) and an organisation-wide counter (``counter_digits``
wide, wrapping to zero after the maximum). Changing the prefix keeps the old ones matching.
"""

from __future__ import annotations

import re
from functools import lru_cache

from serversync.settings import TrackingTokenSettings

__all__ = [
    "append_token",
    "find_tokens",
    "format_token",
    "strip_tokens",
]


def format_token(settings: TrackingTokenSettings, *, user_number: int, counter: int) -> str:
    """The token of the ``counter``-th email of user ``user_number``.

    The counter wraps at ``10 ** counter_digits`` (999 is followed by 000 with 3 digits).
    Raises ``ValueError`` when ``base + user_number`` does not fit in ``user_digits``.
    """
    user = settings.base + user_number
    if user < 0 or user >= 10**settings.user_digits:
        raise ValueError(
            f"user number {user} does not fit in {settings.user_digits} tracking token digits"
        )
    wrapped = counter % 10**settings.counter_digits
    return f"{settings.prefix}0{user:0{settings.user_digits}d}{wrapped:0{settings.counter_digits}d}"


@lru_cache(maxsize=64)
def _pattern(prefixes: tuple[str, ...], width: int) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(p) for p in sorted(prefixes, key=len, reverse=True))
    # The designator is 0 (online) or 1 (offline, legacy); the digits must not run on.
    return re.compile(rf"(?<![\w:])(?:{alternatives})[01]\d{{{width}}}(?!\d)", re.IGNORECASE)


def find_tokens(subject: str, settings: TrackingTokenSettings) -> tuple[str, ...]:
    """Every token in ``subject`` under any known prefix, last first, in canonical form."""
    width = settings.user_digits + settings.counter_digits
    found = _pattern(settings.prefixes, width).findall(subject)
    canonical = []
    by_lower = {p.lower(): p for p in settings.prefixes}
    for token in reversed(found):
        for lower, prefix in by_lower.items():
            if token.lower().startswith(lower):
                canonical.append(prefix + token[len(prefix) :])
                break
    return tuple(dict.fromkeys(canonical))


def strip_tokens(subject: str, settings: TrackingTokenSettings) -> str:
    """``subject`` without its tracking tokens (for smart matching and display)."""
    width = settings.user_digits + settings.counter_digits
    return " ".join(_pattern(settings.prefixes, width).sub(" ", subject).split())


def append_token(subject: str, token: str, *, max_length: int) -> str:
    """``subject`` with ``token`` at its end, within ``max_length`` characters.

    The subject is cut to make room and the token kept whole; when the token alone does not
    fit, the subject is cut to ``max_length`` without a token (Dynamics' rule).
    """
    if len(token) + 1 > max_length:
        return subject[:max_length]
    room = max_length - len(token) - 1
    return f"{subject[:room].rstrip()} {token}" if subject.strip() else token
