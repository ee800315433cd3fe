"""Message trees cut out with string searches are the feed parser's trees, or nothing.

``message_tree`` stands in for ``BytesParser(policy=...).parsebytes`` in ``parse_message``:
for any input it must give the very tree the feed parser gives (raw header lists,
payloads, nesting) or ``None``. Generated messages mix what plain mail has with what
makes the feed parser read differently (boundary-like lines, doubled and missing
boundaries, parts without headers, bare line feeds, 8-bit bytes, message/* parts).
"""

from __future__ import annotations

from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serversync.mime._tree import header_fields, message_tree

COMPAT32_PARSER = BytesParser(policy=policy.compat32)
DEFAULT_PARSER = BytesParser(policy=policy.default)


def shape(message: Message) -> tuple[Any, ...]:
    """What the tree holds: the class, the raw header list, the payload or the parts."""
    payload = message._payload  # type: ignore[attr-defined]
    parts = [shape(p) for p in payload] if isinstance(payload, list) else payload
    return (type(message).__name__, tuple(message._headers), parts)  # type: ignore[attr-defined]


# Mostly unrelated boundaries; a few that are prefixes of each other (and of body lines).
_BOUNDARIES = st.sampled_from(
    ["=_part_1", "----=_Part_42_x.y", "q9", "zz"] * 3 + ["b1", "b", "b1x"]
)
_PLAIN_LINES = ["hello", "", " indented", "caf\xe9", "a=b; c", "<p>x</p>"]
_ODD_LINES = [
    "--b1",
    "--b1--",
    "--b1x",
    "--b1  ",
    "--b1-- ",
    "--b",
    "--",
    "From nobody",
    "Subject: not a header here",
    "=?utf-8?q?x?=",
]
# Mostly plain lines, so that most generated multiparts are ones the tree is cut for.
_LINES = st.sampled_from(_PLAIN_LINES * 6 + _ODD_LINES)
_KINDS = st.sampled_from(
    ["text/plain", "text/html", "application/pdf", "text/plain; charset=utf-8"] * 3
    + ["message/rfc822"]
)


@st.composite
def bodies(draw: st.DrawFn) -> str:
    return "\r\n".join(draw(st.lists(_LINES, max_size=5)))


@st.composite
def parts(draw: st.DrawFn, depth: int = 0) -> str:
    """A part's source: a header block, a blank line and a body (or parts)."""
    headers: list[str] = []
    if depth < 2 and draw(st.booleans()):
        boundary = draw(_BOUNDARIES)
        subtype = draw(st.sampled_from(["mixed", "alternative", "related"] * 3 + ["digest"]))
        quoted = draw(st.booleans())
        value = f'"{boundary}"' if quoted else boundary
        headers.append(f"Content-Type: multipart/{subtype};\r\n\tboundary={value}")
        children = draw(
            st.lists(parts(depth + 1), min_size=draw(st.sampled_from([0, 1, 1])), max_size=3)
        )
        body = draw(bodies()) + "\r\n" if draw(st.booleans()) else ""  # a preamble
        for child in children:
            blanks = draw(st.sampled_from(["", " ", "\t"]))
            body += f"--{boundary}{blanks}\r\n" + child + "\r\n"
            if draw(st.integers(0, 9)) == 0:
                body += f"--{boundary}\r\n"  # a doubled boundary
        if draw(st.integers(0, 11)) != 0:
            body += f"--{boundary}--" + draw(st.sampled_from(["", "\r\n", "\r\nepilogue\r\n"]))
    else:
        if draw(st.booleans()):
            headers.append(f"Content-Type: {draw(_KINDS)}")
        if draw(st.booleans()):
            headers.append("Content-Disposition: attachment; filename=a.txt")
        if draw(st.booleans()):
            headers.append("Content-Transfer-Encoding: base64")
        body = draw(bodies())
    if draw(st.integers(0, 19)) == 0:
        headers.append(draw(st.sampled_from(_ODD_LINES)))  # perhaps no header line at all
    head = "".join(h + "\r\n" for h in headers)
    return head + "\r\n" + body


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    text = "From: a@x.example\r\nSubject: s\r\n" + draw(parts())
    if draw(st.integers(0, 9)) == 0:
        text = text.replace("\r\n", "\n", 1)  # a bare line feed somewhere
    return text.encode("utf-8", "surrogateescape")


@settings(max_examples=500)
@given(messages())
def test_a_tree_is_the_feed_parsers_tree_or_none(data: bytes) -> None:
    for factory, parser in ((Message, COMPAT32_PARSER), (EmailMessage, DEFAULT_PARSER)):
        tree = message_tree(data, factory)
        if tree is not None:
            assert shape(tree) == shape(parser.parsebytes(data))


_PLAIN = (
    b"From: a@x.example\r\nSubject: s\r\n"
    b'Content-Type: multipart/mixed; boundary="m"\r\n\r\npreamble\r\n--m\r\n'
    b'Content-Type: multipart/alternative; boundary="a"\r\n\r\n--a\r\n'
    b"Content-Type: text/plain\r\n\r\nhi\r\n--a\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n"
    b"--a--\r\n--m\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
    b"\r\nJVBERi0=\r\n--m--\r\n"
)


@pytest.mark.parametrize("factory", [Message, EmailMessage])
def test_plain_multipart_mail_gets_a_tree(factory: type[Message]) -> None:
    tree = message_tree(_PLAIN, factory)
    assert tree is not None
    parser = COMPAT32_PARSER if factory is Message else DEFAULT_PARSER
    assert shape(tree) == shape(parser.parsebytes(_PLAIN))
    alternative, attachment = tree.get_payload()  # type: ignore[str-unpack]
    assert isinstance(alternative, Message)
    assert isinstance(attachment, Message)
    assert [p.get_payload() for p in alternative.walk()][1:] == ["hi", "<p>hi</p>"]
    assert attachment.get_payload(decode=True) == b"%PDF-"


@pytest.mark.parametrize(
    "data",
    [
        _PLAIN.replace(b"--m--\r\n", b""),  # no close boundary
        _PLAIN.replace(b"--a\r\nContent-Type: text/html", b"--a\nContent-Type: text/html"),
        _PLAIN.replace(b"application/pdf", b"message/rfc822"),
        _PLAIN.replace(b'boundary="a"', b'boundary="m"'),  # the enclosing boundary again
        _PLAIN.replace(b"Subject: s", b"Subject: caf\xc3\xa9"),
        _PLAIN.replace(b'boundary="m"', b"boundary*=us-ascii''m"),
    ],
    ids=["no close", "bare LF", "message part", "reused boundary", "8-bit header", "RFC 2231"],
)
def test_mail_the_feed_parser_must_read_gets_none(data: bytes) -> None:
    assert message_tree(data, Message) is None
    assert message_tree(data, EmailMessage) is None


def test_header_fields_keep_what_the_feed_parser_keeps() -> None:
    assert header_fields("Subject:  hi\r\n\tthere\r\nTo: b@y\r\n") == [
        ("Subject", "hi\r\n\tthere"),
        ("To", "b@y"),
    ]
    assert header_fields(" folded first\r\n") is None
    assert header_fields("no colon\r\n") is None
    assert header_fields("Subject: caf\xe9\r\n") is None
