"""Smart matching: correlating by similar subject words and shared addresses.

Dynamics hashes each subject word (after removing noise such as ``RE:``/``FW:`` with the
``HashFilterKeywords`` regex) and each unique address, and correlates two emails "if they
have the same count of subject hashes and at least two matching recipient hashes". We read
"same count" as the same multiset of words, within ``delta_subject_count`` (gap G5).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache

from serversync.settings import SmartMatchingSettings

__all__ = [
    "normalize_subject",
    "recipients_match",
    "subject_words",
    "subjects_match",
]

_WORD = re.compile(r"\w+", re.UNICODE)


@lru_cache(maxsize=32)
def _filter(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


def normalize_subject(subject: str, settings: SmartMatchingSettings) -> str:
    """The subject without noise words (``RE:``, ``FW: RE:`` ...), lower-cased and unfolded.

    Idempotent: normalizing twice gives the same text.
    """
    text = " ".join(subject.split()).lower()
    pattern = _filter(settings.filter_keywords)
    while True:
        stripped = " ".join(pattern.sub("", text).split())
        if stripped == text:
            return text
        text = stripped


def subject_words(subject: str, settings: SmartMatchingSettings) -> Counter[str]:
    """The multiset of the first ``max_count`` words of the normalized subject."""
    words = _WORD.findall(normalize_subject(subject, settings))
    return Counter(words[: settings.max_count])


def subjects_match(a: str, b: str, settings: SmartMatchingSettings) -> bool:
    """Whether two subjects have the same words, allowing ``delta_subject_count`` extra."""
    left, right = subject_words(a, settings), subject_words(b, settings)
    if not left or not right:
        return False
    difference = (left - right) + (right - left)
    return sum(difference.values()) <= settings.delta_subject_count


def recipients_match(a: Iterable[str], b: Iterable[str], settings: SmartMatchingSettings) -> bool:
    """Whether two emails share at least ``min_address_count`` unique addresses."""
    left = {x.strip().lower() for x in a}
    right = {x.strip().lower() for x in b}
    return len(left & right) >= settings.min_address_count
