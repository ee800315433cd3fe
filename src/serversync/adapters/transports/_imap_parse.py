"""Pure parsing of the IMAP responses the IMAP adapter reads, as aioimaplib hands them over.

aioimaplib 2.x returns a command's response as a list: untagged lines as ``bytes`` (with the
leading ``* `` and, for most commands, the response name removed), each literal's content as
a separate ``bytearray`` right after the line that announced it with ``{n}``, and the tagged
status text as the last element. It parses nothing else, so this module does, without
trusting line boundaries: a response continues while parentheses are open or a literal is
announced, and unsolicited responses mixed into a command's output are recognised by what
they lack.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

import attrs

__all__ = [
    "FetchItem",
    "ImapParseError",
    "ListEntry",
    "MailboxStatus",
    "Value",
    "decode_mailbox_name",
    "parse_fetch",
    "parse_internaldate",
    "parse_list",
    "parse_search",
    "parse_select",
    "quote",
    "response_code",
    "simple_fetch",
    "uid_set",
]

Value = bytes | str | None | list["Value"]
"""A parsed IMAP value: an atom (``str``), a string or literal (``bytes``), NIL, or a list."""


class ImapParseError(ValueError):
    """A server response that does not follow the IMAP grammar."""


# --- tokenizer ---------------------------------------------------------------------------------

_LITERAL_MARKER = re.compile(rb"\{(\d+)\}$")


@attrs.frozen
class _Literal:
    data: bytes


def _segments(elements: Iterable[bytes | bytearray]) -> Iterator[bytes | _Literal]:
    for element in elements:
        if isinstance(element, bytearray):
            yield _Literal(bytes(element))
        else:
            yield element


def _tokens(segments: Sequence[bytes | _Literal]) -> Iterator[Value | tuple[str]]:
    """Atoms, strings, NIL and the markers ``("(",)`` / ``(")",)`` of one response."""
    index = 0
    while index < len(segments):
        segment = segments[index]
        index += 1
        if isinstance(segment, _Literal):
            raise ImapParseError("a literal without its {n} announcement")
        text = segment
        marker = _LITERAL_MARKER.search(text) if text.endswith(b"}") else None
        literal: bytes | None = None
        if marker is not None:
            if index >= len(segments) or not isinstance(segments[index], _Literal):
                raise ImapParseError("a literal was announced but its data is missing")
            following = segments[index]
            assert isinstance(following, _Literal)
            literal = following.data
            if len(literal) != int(marker.group(1)):
                raise ImapParseError("a literal's data does not have the announced size")
            index += 1
            text = text[: marker.start()]
        yield from _scan(text)
        if literal is not None:
            yield literal


# One token at a time: spaces, then "(", ")", a quoted string or an atom. An atom runs up to
# a space, parenthesis, quote or "{", except inside brackets: BODY[HEADER.FIELDS (FROM TO)]
# is one atom.
_TOKEN = re.compile(
    rb' *(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|((?:[^ ()"{\[]|\[[^\]]*\]?)+))', re.DOTALL
)
_ESCAPED = re.compile(rb"\\(.)", re.DOTALL)
_OPEN: Final = ("(",)
_CLOSE: Final = (")",)


def _scan(text: bytes) -> Iterator[Value | tuple[str]]:
    pos = 0
    end = len(text)
    match = _TOKEN.match
    while pos < end:
        found = match(text, pos)
        if found is None or found.end() == pos:
            rest = text[pos:].lstrip(b" ")
            if not rest:
                return
            if rest[:1] == b'"':
                raise ImapParseError("an unterminated quoted string")
            raise ImapParseError(f"unexpected character {chr(rest[0])!r}")
        pos = found.end()
        opened, closed, quoted, atom = found.groups()
        if opened is not None:
            yield _OPEN
        elif closed is not None:
            yield _CLOSE
        elif quoted is not None:
            yield _ESCAPED.sub(rb"\1", quoted) if b"\\" in quoted else quoted
        elif atom is not None:
            text_atom = atom.decode("ascii", errors="replace")
            yield None if text_atom.upper() == "NIL" else text_atom


def _values(segments: Sequence[bytes | _Literal]) -> list[Value]:
    stack: list[list[Value]] = [[]]
    for token in _tokens(segments):
        if token is _OPEN:
            stack.append([])
        elif token is _CLOSE:
            if len(stack) == 1:
                raise ImapParseError("an unbalanced closing parenthesis")
            inner = stack.pop()
            stack[-1].append(inner)
        else:
            assert not isinstance(token, tuple)
            stack[-1].append(token)
    if len(stack) != 1:
        raise ImapParseError("an unclosed parenthesis")
    return stack[0]


_QUOTED = re.compile(rb'"(?:[^"\\]|\\.)*+"', re.DOTALL)


def _depth_change(text: bytes) -> int:
    """Parentheses opened minus closed, outside quoted strings."""
    if b'"' in text:
        unquoted = _QUOTED.sub(b"", text)
        if b'"' not in unquoted:
            text = unquoted
    if b'"' not in text:
        return text.count(b"(") - text.count(b")")
    change = 0
    quoted = False
    escaped = False
    for char in text:
        if quoted:
            if escaped:
                escaped = False
            elif char == 0x5C:
                escaped = True
            elif char == 0x22:
                quoted = False
        elif char == 0x22:
            quoted = True
        elif char == 0x28:
            change += 1
        elif char == 0x29:
            change -= 1
    return change


def _responses(elements: Sequence[bytes | bytearray]) -> list[list[bytes | _Literal]]:
    """Group the untagged part of a response into whole responses.

    A response continues after its first line while a parenthesis is open (a FETCH with
    literals spans several elements) or when the line ends by announcing a literal.
    """
    groups: list[list[bytes | _Literal]] = []
    depth = 0
    expecting_literal = False
    for segment in _segments(elements):
        if isinstance(segment, _Literal):
            if not groups or not expecting_literal:
                raise ImapParseError("a literal without its {n} announcement")
            groups[-1].append(segment)
            expecting_literal = False
            continue
        if groups and (depth > 0 or expecting_literal):
            groups[-1].append(segment)
        else:
            groups.append([segment])
            depth = 0
        depth += _depth_change(segment)
        expecting_literal = segment.endswith(b"}") and _LITERAL_MARKER.search(segment) is not None
    return groups


# --- FETCH ---------------------------------------------------------------------------------


@attrs.frozen
class FetchItem:
    """One ``* n FETCH (...)`` response: its sequence number and attributes by upper-case name."""

    sequence: int
    attributes: dict[str, Value]

    @property
    def uid(self) -> int | None:
        """The UID attribute, if the response carries one."""
        value = self.attributes.get("UID")
        if isinstance(value, str) and value.isdigit():
            return int(value)
        return None

    def number(self, name: str) -> int | None:
        """A numeric attribute (``RFC822.SIZE``), or ``None``."""
        value = self.attributes.get(name)
        if isinstance(value, str) and value.isdigit():
            return int(value)
        return None

    def data(self, name: str) -> bytes | None:
        """A string or literal attribute (``BODY[HEADER]``, ``INTERNALDATE``), or ``None``."""
        value = self.attributes.get(name)
        return value if isinstance(value, bytes) else None


_FETCH_START = re.compile(rb"^\s*(\d+) FETCH ", re.IGNORECASE)
# Lists, literals, escapes, whitespace but spaces, or a space inside brackets: not simple.
_NOT_SIMPLE = re.compile(rb"[(){}\\\t\n\r\x0b\x0c]|\[[^\]]*\s")


def simple_fetch(elements: Sequence[bytes | bytearray], index: int) -> tuple[FetchItem, int]:
    """The FETCH response starting at ``elements[index]`` and how many elements it spans,
    when it has the shape of nearly every response the adapter asks for: name/value pairs of
    atoms and plain quoted strings, no nested lists, ending with ")" or with a literal's
    ``{n}`` (then the literal, then a line ")"). Raises ``LookupError`` for any other shape:
    the general parser reads those."""
    line = elements[index]
    if type(line) is not bytes:
        raise LookupError
    number, found, rest = line.partition(b" FETCH (")
    number = number.strip()
    if not found or not number.isdigit():
        raise LookupError
    literal: bytes | None = None
    used = 1
    if rest.endswith(b")"):
        text = rest[:-1]
    elif rest.endswith(b"}"):
        brace = rest.rfind(b"{")
        size = rest[brace + 1 : -1]
        if brace < 0 or not size.isdigit() or index + 2 >= len(elements):
            raise LookupError
        data = elements[index + 1]
        if type(data) is not bytearray or len(data) != int(size) or elements[index + 2] != b")":
            raise LookupError
        literal = bytes(data)
        used = 3
        text = rest[:brace]
    else:
        raise LookupError
    if _NOT_SIMPLE.search(text):
        raise LookupError
    # Atoms as text, quoted strings and the literal as bytes; NIL becomes None below.
    tokens: list[str | bytes] = []
    if b'"' in text:
        parts = text.split(b'"')
        if len(parts) % 2 == 0:
            raise LookupError
        for position, part in enumerate(parts):
            if position % 2:
                tokens.append(part)
            else:
                tokens += part.decode("ascii", errors="replace").split()
    else:
        tokens += text.decode("ascii", errors="replace").split()
    if literal is not None:
        tokens.append(literal)
    if len(tokens) % 2:
        raise LookupError
    attributes: dict[str, Value] = {}
    for name, value in zip(tokens[::2], tokens[1::2], strict=True):
        if type(name) is not str:
            raise LookupError
        key = name.upper()
        if key == "NIL":
            raise LookupError
        attributes[key] = None if type(value) is str and value.upper() == "NIL" else value
    return FetchItem(sequence=int(number), attributes=attributes), used


def parse_fetch(elements: Sequence[bytes | bytearray]) -> list[FetchItem]:
    """Every FETCH response among the untagged ``elements`` of a FETCH or STORE command.

    Other untagged responses are skipped; a FETCH response that does not parse raises
    :class:`ImapParseError`.
    """
    items = []
    index = 0
    # Simple responses first; from the first other one on, the general parser reads the rest.
    while index < len(elements):
        try:
            item, used = simple_fetch(elements, index)
        except LookupError:
            break
        items.append(item)
        index += used
    return items + _parse_fetch_groups(elements[index:])


def _parse_fetch_groups(elements: Sequence[bytes | bytearray]) -> list[FetchItem]:
    """:func:`parse_fetch` by the general parser alone."""
    items = []
    for group in _responses(elements):
        first = group[0]
        assert isinstance(first, bytes)
        start = _FETCH_START.match(first)
        if start is None:
            continue
        values = _values([first[start.end() :], *group[1:]])
        if len(values) != 1 or not isinstance(values[0], list):
            raise ImapParseError("a FETCH response without its attribute list")
        pairs = values[0]
        if len(pairs) % 2:
            raise ImapParseError("a FETCH attribute without a value")
        attributes: dict[str, Value] = {}
        for name, value in zip(pairs[::2], pairs[1::2], strict=True):
            if not isinstance(name, str):
                raise ImapParseError("a FETCH attribute name that is not an atom")
            attributes[name.upper()] = value
        items.append(FetchItem(sequence=int(start.group(1)), attributes=attributes))
    return items


_MONTHS = {
    month: number
    for number, month in enumerate(b"JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), 1)
}
_INTERNALDATE = re.compile(
    rb"^\s*(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-]\d{4})\s*$"
)
# The offsets a folder's dates carry are few: each is worked out once.
_OFFSETS: dict[bytes, timedelta] = {}


def _offset(zone: bytes) -> timedelta:
    known = _OFFSETS.get(zone)
    if known is None:
        known = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
        if zone[0] == 45:  # "-"
            known = -known
        if len(_OFFSETS) < 256:
            _OFFSETS[zone] = known
    return known


def parse_internaldate(value: bytes | None) -> datetime | None:
    """``"05-Jan-2026 08:00:00 +0100"`` as an aware UTC datetime; ``None`` if unreadable."""
    if value is None:
        return None
    found = _INTERNALDATE.match(value)
    if found is None:
        return None
    day, month, year, hour, minute, second, zone = found.groups()
    month_number = _MONTHS.get(month.upper())
    if month_number is None:
        return None
    try:
        local = datetime(
            int(year), month_number, int(day), int(hour), int(minute), int(second), tzinfo=UTC
        )
        # The wall-clock time at the given offset, in UTC.
        return local - _offset(zone) if zone[1:] != b"0000" else local
    except (ValueError, OverflowError):
        return None


# --- SELECT, SEARCH, LIST --------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class MailboxStatus:
    """What SELECT told about a mailbox."""

    uidvalidity: int | None = None
    uidnext: int | None = None
    exists: int | None = None
    highest_modseq: int | None = None
    permanent_flags: frozenset[str] = frozenset()
    keywords_allowed: bool = False
    read_only: bool = False

    def can_store(self, keyword: str) -> bool:
        """Whether ``keyword`` can be set permanently on this mailbox's messages."""
        if self.read_only:
            return False
        return self.keywords_allowed or keyword.upper() in self.permanent_flags


_CODE = re.compile(rb"^\s*(?:OK\s+)?\[([A-Za-z0-9-]+)(?:\s+([^\]]*))?\]")
_EXISTS = re.compile(rb"^\s*(\d+)\s+EXISTS\s*$", re.IGNORECASE)
_SELECT_NUMBERS = {
    "UIDVALIDITY": "uidvalidity",
    "UIDNEXT": "uidnext",
    "HIGHESTMODSEQ": "highest_modseq",
}


def response_code(text: bytes | bytearray) -> tuple[str, bytes] | None:
    """The ``[CODE args]`` at the start of a status text (``OK [UIDNEXT 4] ...``), if any."""
    found = _CODE.match(bytes(text))
    if found is None:
        return None
    return found.group(1).decode("ascii").upper(), found.group(2) or b""


def parse_select(lines: Sequence[bytes | bytearray]) -> MailboxStatus:
    """The untagged lines and the tagged text (last) of a successful SELECT or EXAMINE."""
    numbers: dict[str, int | None] = {}
    flags: frozenset[str] = frozenset()
    keywords_allowed = False
    read_only = False
    for raw in lines:
        if isinstance(raw, bytearray):
            continue
        exists = _EXISTS.match(raw)
        if exists is not None:
            numbers["exists"] = int(exists.group(1))
            continue
        code = response_code(raw)
        if code is None:
            continue
        name, args = code
        if name in _SELECT_NUMBERS and args.strip().isdigit():
            numbers[_SELECT_NUMBERS[name]] = int(args.strip())
        elif name == "NOMODSEQ":
            numbers["highest_modseq"] = None
        elif name == "READ-ONLY":
            read_only = True
        elif name == "PERMANENTFLAGS":
            listed = args.strip().strip(b"()").split()
            flags = frozenset(f.decode("ascii", "replace").upper() for f in listed)
            # aioimaplib removes every "* " in an untagged line, so "(\* \Seen)" arrives as
            # "(\\Seen)": a doubled backslash is a mangled \*.
            keywords_allowed = b"\\*" in args or b"\\\\" in args
    return MailboxStatus(
        uidvalidity=numbers.get("uidvalidity"),
        uidnext=numbers.get("uidnext"),
        exists=numbers.get("exists"),
        highest_modseq=numbers.get("highest_modseq"),
        permanent_flags=flags,
        keywords_allowed=keywords_allowed,
        read_only=read_only,
    )


def parse_search(lines: Sequence[bytes | bytearray]) -> list[int]:
    """The numbers of the untagged SEARCH lines (the tagged text, last, is skipped)."""
    numbers: list[int] = []
    for raw in lines[:-1]:
        if isinstance(raw, bytearray):
            continue
        text = raw
        if text[:7].upper() == b"SEARCH ":  # when aioimaplib kept the response name
            text = text[7:]
        depth = 0
        for token in text.replace(b"(", b" ( ").replace(b")", b" ) ").split():
            # a CONDSTORE server may append "(MODSEQ n)": skip what is in parentheses
            if token == b"(":
                depth += 1
            elif token == b")":
                depth -= 1
            elif depth == 0 and token.isdigit():
                numbers.append(int(token))
    return numbers


@attrs.frozen(kw_only=True)
class ListEntry:
    """One LIST response: the mailbox name as sent (modified UTF-7), delimiter and flags."""

    name: str
    delimiter: str | None
    flags: frozenset[str]


def parse_list(lines: Sequence[bytes | bytearray]) -> list[ListEntry]:
    """The LIST responses among ``lines`` (the tagged text, last, is skipped)."""
    entries = []
    for group in _responses(lines[:-1]):
        first = group[0]
        assert isinstance(first, bytes)
        if first[:5].upper() == b"LIST ":  # when aioimaplib kept the response name
            group = [first[5:], *group[1:]]
        values = _values(group)
        if len(values) < 3 or not isinstance(values[0], list):
            continue
        flags, delimiter, name = values[0], values[1], values[2]
        if isinstance(name, bytes):
            text = name.decode("utf-8", errors="surrogateescape")
        elif isinstance(name, str):
            text = name
        else:
            continue
        entries.append(
            ListEntry(
                name=text,
                delimiter=delimiter.decode("ascii", "replace")
                if isinstance(delimiter, bytes)
                else delimiter
                if isinstance(delimiter, str)
                else None,
                flags=frozenset(f.upper() for f in flags if isinstance(f, str)),
            )
        )
    return entries


# --- helpers ---------------------------------------------------------------------------------


def decode_mailbox_name(name: str) -> str:
    """A mailbox name in IMAP's modified UTF-7 (RFC 3501 5.1.3) as text; as is if invalid."""
    if "&" not in name:
        return name
    out: list[str] = []
    pos = 0
    while pos < len(name):
        char = name[pos]
        if char != "&":
            out.append(char)
            pos += 1
            continue
        end = name.find("-", pos)
        if end < 0:
            return name
        if end == pos + 1:
            out.append("&")
        else:
            chunk = name[pos + 1 : end].replace(",", "/")
            chunk += "=" * (-len(chunk) % 4)
            try:
                out.append(base64.b64decode(chunk, validate=True).decode("utf-16-be"))
            except (binascii.Error, UnicodeDecodeError):
                return name
        pos = end + 1
    return "".join(out)


def quote(text: str) -> str:
    """``text`` as an IMAP quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def uid_set(uids: Iterable[int]) -> str:
    """Sorted UIDs as a compact set: ``1:3,5,9:10``."""
    ordered = sorted(set(uids))
    if not ordered:
        raise ValueError("an empty UID set")
    parts = []
    start = previous = ordered[0]
    for uid in ordered[1:]:
        if uid == previous + 1:
            previous = uid
            continue
        parts.append(f"{start}:{previous}" if previous != start else str(start))
        start = previous = uid
    parts.append(f"{start}:{previous}" if previous != start else str(start))
    return ",".join(parts)
