"""Message trees for plain messages, cut out with string searches.

:func:`serversync.mime.parse.parse_message` reads bodies and attachments from a tree of
:class:`email.message.Message` (compat32, its fast lane) or ``EmailMessage`` (the general
path). The stdlib's feed parser builds those trees a line at a time in Python, which was
most of the time of storing a tracked email (1.7 ms for compat32, 4.3 ms for
``policy.default``, for a 24 KB message with attachments). :func:`message_tree` builds the
same tree (the same raw header lists, payloads and nesting; both policies keep header
lines alike) by finding header block ends and boundary lines with ``str.find``, and gives
``None`` for anything it cannot promise the feed parser reads alike: bare CR or LF, header
lines that are not plain fields, message/* parts, multipart/digest, a multipart without
its close boundary, empty or doubled parts, and a boundary reused inside its own part.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from email.message import Message
from typing import Final

__all__ = ["header_fields", "message_tree"]

_CRLF: Final = "\r\n"
# A plain header block: fields of a name of printable ASCII but ":", a ":", the rest of the
# line, and continuation lines starting with a blank; CRLF line ends only.
_BLOCK: Final = re.compile(r"(?:[\x21-\x39\x3b-\x7e]+:[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)*")
# One field of such a block: its name and its value as compat32 keeps it (blanks after
# the ":" dropped, continuation lines kept with their line ends, the last line end not).
_FIELD: Final = re.compile(r"([\x21-\x39\x3b-\x7e]+):[ \t]*([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)\r\n")


def message_tree(data: bytes, factory: Callable[[], Message]) -> Message | None:
    """The tree ``BytesParser(policy=...).parsebytes(data)`` gives, of parts made by
    ``factory`` (``Message`` for compat32, ``EmailMessage`` for ``policy.default``), or
    ``None`` when ``data`` is not plain enough to be sure of it."""
    crlf = data.count(b"\r\n")
    if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
        return None  # a bare CR or LF: the feed parser's line splitting decides
    # As BytesParser decodes: every byte kept, 8-bit ones as surrogates.
    text = data.decode("ascii", "surrogateescape")
    return _part(text, factory, top=True, boundaries=())


def header_fields(head: str) -> list[tuple[str, str]] | None:
    """The fields of a plain header block (ASCII, CRLF line ends, every line a field or the
    continuation of one, ending with a line end) as the feed parser keeps them, in order;
    ``None`` for anything else."""
    if not head.isascii() or _BLOCK.fullmatch(head) is None:
        return None
    return _FIELD.findall(head)


def _part(
    text: str, factory: Callable[[], Message], *, top: bool, boundaries: tuple[str, ...]
) -> Message | None:
    """One message or body part: ``text`` is its source, up to and with the line end
    before the boundary line that ends it (the whole message at the top)."""
    if text.startswith(_CRLF):
        fields: list[tuple[str, str]] | None = []
        body = text[2:]
    else:
        end = text.find("\r\n\r\n")
        if end < 0:
            return None
        fields = header_fields(text[: end + 2])
        body = text[end + 4 :]
    if fields is None:
        return None
    part = factory()
    part._headers = fields  # type: ignore[attr-defined]  # as the feed parser's set_raw fills it
    kind = part.get_content_type()
    if kind.startswith("message/") or kind == "multipart/digest":
        return None  # parsed into sub-messages, or parts of another default type
    if kind.startswith("multipart/"):
        children = _children(part, factory, body, boundaries)
        if children is None:
            return None
        part._payload = children  # type: ignore[attr-defined]
    else:
        # The line end before a boundary belongs to the boundary (RFC 2046).
        part._payload = body if top or not body.endswith(_CRLF) else body[:-2]  # type: ignore[attr-defined]
    return part


def _boundary_lines(body: str, separator: str) -> list[tuple[int, int, bool]] | None:
    """Where ``body``'s boundary lines start and end (after their line end) and whether each
    closes, up to the close boundary; ``None`` when none closes."""
    found: list[tuple[int, int, bool]] = []
    search = 0
    size = len(body)
    while True:
        if search == 0 and body.startswith(separator):
            start = 0
        else:
            at = body.find(_CRLF + separator, search)
            if at < 0:
                return None
            start = at + 2
        after = start + len(separator)
        search = after
        close = body.startswith("--", after)
        cursor = after + 2 if close else after
        while cursor < size and body[cursor] in " \t":
            cursor += 1
        if cursor == size:
            line_end = size
        elif body.startswith(_CRLF, cursor):
            line_end = cursor + 2
        else:
            continue  # the separator starts a longer line: no boundary
        found.append((start, line_end, close))
        if close:
            return found


def _children(
    part: Message, factory: Callable[[], Message], body: str, boundaries: tuple[str, ...]
) -> list[Message] | None:
    boundary = part.get_boundary()
    raw = next((v for n, v in part._headers if n.lower() == "content-type"), "")  # type: ignore[attr-defined]
    if not boundary or "*" in raw or "=?" in raw:
        return None  # RFC 2231 or encoded parameters: get_boundary's reading decides
    if any(b.startswith(boundary) or boundary.startswith(b) for b in boundaries):
        return None
    lines = _boundary_lines(body, "--" + boundary)
    if lines is None or len(lines) < 2:
        return None
    children: list[Message] = []
    for (_, begin, _), (end, _, _) in itertools.pairwise(lines):
        if begin == end:
            return None  # two boundary lines in a row: the feed parser skips the second
        child = _part(body[begin:end], factory, top=False, boundaries=(*boundaries, boundary))
        if child is None:
            return None
        children.append(child)
    return children
