"""The fast lanes of the hot paths give exactly what the general code gives.

Header blocks and address lists (``serversync.mime``), FETCH responses and the IMAP reader,
and POP3 multi-line answers each have a fast lane for the common shape and step aside for
anything else; these properties compare both lanes on generated input.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import poplib
from collections.abc import Callable
from email.header import decode_header, make_header
from email.utils import getaddresses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serversync.adapters.transports import _imap_parse, pop3
from serversync.adapters.transports._imap_protocol import ImapClient, Reply, _Protocol
from serversync.mime import parse as mime_parse

# --- header blocks -------------------------------------------------------------------------

_NAMES = st.sampled_from(
    ["From", "To", "Cc", "Subject", "Message-ID", "X-Thing", "received", "DKIM-Signature"]
)
_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
_ODD = st.sampled_from(["", " ", "\t", "\r", "\n", "\xe9", ":", "From ", "=?utf-8?q?x?="])


@st.composite
def header_blocks(draw: st.DrawFn) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(_NAMES)
        value = draw(_TEXT) + draw(_ODD)
        lines.append(f"{name}:{draw(st.sampled_from(['', ' ', '  ', chr(9)]))}{value}")
        for _ in range(draw(st.integers(0, 2))):
            lines.append(draw(st.sampled_from([" ", "\t", "  "])) + draw(_TEXT))
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), draw(_TEXT) + draw(_ODD))
    ending = draw(st.sampled_from(["\r\n", "\n", "\r\n\r\nbody\r\n", ""]))
    text = "\r\n".join(lines) + ending
    return text.encode("utf-8")


def _slow_fields(data: bytes) -> mime_parse._Fields:
    return mime_parse._Fields.of(mime_parse._HEADER_PARSER.parsebytes(data))


@settings(max_examples=400)
@given(header_blocks())
def test_split_header_fields_are_the_feed_parsers(data: bytes) -> None:
    fast = mime_parse._split_fields(data)
    if fast is not None:
        assert fast == _slow_fields(data)


def test_plain_header_blocks_take_the_fast_lane() -> None:
    data = b"From: a@b.example\r\nSubject: hi\r\n\tthere\r\nTo: c@d.example\r\n\r\nbody"
    fields = mime_parse._split_fields(data)
    assert fields is not None
    assert fields == _slow_fields(data)
    assert fields.get("subject") == "hi\r\n\tthere"
    assert mime_parse._split_fields(b"From: a@b\nSubject: x\n\n") is None, "LF line ends"
    assert mime_parse._split_fields("Subject: é\r\n".encode()) is None, "8-bit"


_WORD = st.text(alphabet="abcXYZ09'-_.+=?!", min_size=1, max_size=6)
_ITEM = st.one_of(
    st.builds(lambda a, b, c: f"{a}@{b}.{c}", _WORD, _WORD, _WORD),
    st.builds(
        lambda n, a, b, gap: f"{n}{gap}<{a}@{b}.example>",
        st.lists(_WORD, min_size=1, max_size=3).map(" ".join),
        _WORD,
        _WORD,
        st.sampled_from(["", " ", "  ", "\r\n "]),
    ),
    st.sampled_from(["", " ", '"Quoted, Name" <q@x.example>', "(comment) c@x", "a@b@c", "<>"]),
)


@settings(max_examples=500)
@given(st.lists(_ITEM, max_size=4).map(", ".join))
def test_plain_address_lists_are_read_as_getaddresses_reads_them(text: str) -> None:
    fast = mime_parse._plain_addresses(text)
    if fast is not None:
        expected = [(name, address) for name, address in getaddresses([text]) if "@" in address]
        assert [(name, address.strip()) for name, address in fast] == [
            (name, address.strip()) for name, address in expected
        ]


@given(_TEXT)
def test_plain_text_needs_no_decoding(text: str) -> None:
    assert mime_parse._decode(text) == str(make_header(decode_header(text)))


# --- FETCH responses -----------------------------------------------------------------------

_ATOMS = st.sampled_from(["UID", "RFC822.SIZE", "FLAGS", "X-GM-MSGID", "NIL", "12", "BODY[]"])
_QUOTED = st.text(alphabet="abc 0-:+", max_size=12).map(lambda t: f'"{t}"')


@st.composite
def fetch_responses(draw: st.DrawFn) -> list[bytes | bytearray]:
    elements: list[bytes | bytearray] = []
    for number in range(1, draw(st.integers(1, 4)) + 1):
        pairs = [
            f"{draw(_ATOMS)} {draw(st.one_of(_ATOMS, _QUOTED))}"
            for _ in range(draw(st.integers(0, 3)))
        ]
        head = f"{number} FETCH ({' '.join(pairs)}"
        if draw(st.booleans()):
            literal = draw(st.binary(max_size=20))
            elements += [
                f"{head} BODY[HEADER] {{{len(literal)}}}".encode(),
                bytearray(literal),
                b")",
            ]
        else:
            elements.append(f"{head})".encode())
    return elements


@given(fetch_responses())
def test_simple_fetch_responses_parse_as_the_general_parser_parses_them(
    elements: list[bytes | bytearray],
) -> None:
    try:
        expected = _imap_parse._parse_fetch_groups(elements)
    except _imap_parse.ImapParseError:
        with pytest.raises(_imap_parse.ImapParseError):
            _imap_parse.parse_fetch(elements)
    else:
        assert _imap_parse.parse_fetch(elements) == expected


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent = bytearray()

    def write(self, data: Any) -> None:
        self.sent.extend(data)


_RESPONSE = (
    b'* 1 FETCH (UID 7 INTERNALDATE "05-Jan-2026 08:00:00 +0000" RFC822.SIZE 120)\r\n'
    b"* 2 FETCH (UID 8 BODY[HEADER] {14}\r\nSubject: a\r\n\r\n)\r\n"
    b"* 3 FETCH (UID 9 BODY[HEADER] {0}\r\n)\r\n"
    b"* 4 EXISTS\r\n"
    b"* 4 FETCH (FLAGS (\\Seen) UID 10)\r\n"
)


async def _fetch_in(
    pieces: list[bytes], on_item: Callable[[_imap_parse.FetchItem], None] | None = None
) -> Reply:
    """A UID FETCH whose response arrives in ``pieces``, then the tagged OK."""
    protocol = _Protocol(asyncio.get_running_loop())
    transport = _Transport()
    protocol.connection_made(transport)
    protocol.state = "SELECTED"
    client = ImapClient(protocol)
    reply = asyncio.ensure_future(client.uid_fetch("1:*", "(UID)", on_item=on_item))
    await asyncio.sleep(0)
    tag = bytes(transport.sent).split(b" ", 1)[0]
    for piece in pieces:
        protocol.data_received(piece)
    protocol.data_received(tag + b" OK Fetch completed.\r\n")
    return await asyncio.wait_for(reply, 5)


@settings(max_examples=200)
@given(st.lists(st.integers(1, len(_RESPONSE) - 1), max_size=12))
def test_the_imap_reader_gives_the_same_reply_however_the_bytes_arrive(cuts: list[int]) -> None:
    whole = asyncio.run(_fetch_in([_RESPONSE]))
    positions = sorted({0, *cuts, len(_RESPONSE)})
    pieces = [_RESPONSE[a:b] for a, b in itertools.pairwise(positions)]
    parts = asyncio.run(_fetch_in(pieces))
    assert parts.lines == whole.lines
    assert parts.items is not None
    assert parts.items == whole.items == _imap_parse.parse_fetch(whole.lines[:-1])
    assert [i.uid for i in parts.items] == [7, 8, 9, 10]
    assert parts.items[1].data("BODY[HEADER]") == b"Subject: a\r\n\r\n"
    assert parts.items[2].data("BODY[HEADER]") == b""


def _wire(elements: list[bytes | bytearray]) -> bytes:
    """Generated FETCH responses as a server sends them."""
    wire = bytearray()
    for element in elements:
        if isinstance(element, bytearray):
            wire += element
        else:
            wire += b"* " + element + b"\r\n" if b" FETCH (" in element else element + b"\r\n"
    return bytes(wire)


@settings(max_examples=300)
@given(fetch_responses(), st.lists(st.integers(1, 400), max_size=6))
def test_the_reader_parses_generated_responses_as_the_general_parser_does(
    elements: list[bytes | bytearray], cuts: list[int]
) -> None:
    wire = _wire(elements)
    positions = sorted({0, *(c for c in cuts if c < len(wire)), len(wire)})
    reply = asyncio.run(_fetch_in([wire[a:b] for a, b in itertools.pairwise(positions)]))
    assert reply.lines[:-1] == elements
    try:
        expected = _imap_parse._parse_fetch_groups(elements)
    except _imap_parse.ImapParseError:
        assert reply.items is None, "left to the caller, which reports the broken response"
    else:
        assert reply.items == expected


def test_each_item_is_handed_over_as_it_is_parsed() -> None:
    seen: list[_imap_parse.FetchItem] = []
    half = _RESPONSE.index(b"* 3 FETCH")

    reply = asyncio.run(_fetch_in([_RESPONSE[:half], _RESPONSE[half:]], on_item=seen.append))
    assert reply.items == [], "handed over, not kept"
    assert seen == asyncio.run(_fetch_in([_RESPONSE])).items
    assert [item.uid for item in seen] == [7, 8, 9, 10]


def test_a_failing_item_handler_leaves_the_items_to_the_caller() -> None:
    seen: list[int | None] = []

    def handler(item: _imap_parse.FetchItem) -> None:
        seen.append(item.uid)
        if item.uid == 8:
            raise ValueError("not this one")

    reply = asyncio.run(_fetch_in([_RESPONSE], on_item=handler))
    assert seen == [7, 8], "not called again after it failed"
    assert reply.ok
    assert reply.items is None, "the caller parses the lines and meets the error itself"
    assert [item.uid for item in _imap_parse.parse_fetch(reply.lines[:-1])] == [7, 8, 9, 10]


def test_a_fetch_response_the_reader_cannot_parse_is_left_to_the_caller() -> None:
    broken = b"* 1 FETCH (UID 7 BODY[] {5}\r\nabcde FLAGS)\r\n* 2 FETCH (UID 8)\r\n"
    reply = asyncio.run(_fetch_in([broken]))
    assert reply.ok
    assert reply.items is None, "parsed at the end instead, where the error is reported"
    with pytest.raises(_imap_parse.ImapParseError):
        _imap_parse.parse_fetch(reply.lines[:-1])


# --- POP3 multi-line answers ----------------------------------------------------------------


class _Socket:
    def __init__(self) -> None:
        self.sent = bytearray()

    def sendall(self, data: bytes) -> None:
        self.sent += data


class _Reader(io.BufferedReader):
    """Hands out at most ``block`` bytes per read1, as a socket does."""

    def __init__(self, data: bytes, block: int) -> None:
        super().__init__(io.BytesIO(data))
        self._block = block

    def read1(self, size: int = -1) -> bytes:
        return super().read1(min(self._block, size if size > 0 else self._block))


def _client(answer: bytes, block: int = 7) -> Any:
    client: Any = poplib.POP3.__new__(poplib.POP3)
    client.sock = _Socket()
    client.file = _Reader(answer, block)
    client.encoding = "UTF-8"
    return client


@pytest.mark.parametrize("block", [1, 5, 4096])
def test_pop3_answers_are_read_whole_with_dot_stuffing_undone(block: int) -> None:
    answer = b"+OK 40 octets\r\nSubject: x\r\n\r\n..dotted\r\n...\r\n.\r\n"
    client = _client(answer, block)
    data, octets = pop3._long_command(client, "RETR 1")
    assert client.sock.sent == b"RETR 1\r\n"
    assert data == b"Subject: x\r\n\r\n.dotted\r\n..\r\n"
    assert octets == len(answer)
    assert pop3._long_command(_client(b"+OK\r\n.\r\n", block), "TOP 1 0") == (b"", 8)


def test_pop3_answers_with_bare_line_feeds_and_refusals() -> None:
    data, _ = pop3._long_command(_client(b"+OK\nA: b\n..c\n.\n"), "RETR 1")
    assert data == b"A: b\r\n.c\r\n"
    with pytest.raises(poplib.error_proto, match="no such message"):
        pop3._long_command(_client(b"-ERR no such message\r\n"), "RETR 9")
    with pytest.raises(ConnectionResetError):
        pop3._long_command(_client(b"+OK\r\nA: b\r\n.\r\n+OK extra\r\n", 4096), "RETR 1")
    with pytest.raises(poplib.error_proto, match="EOF"):
        pop3._long_command(_client(b"+OK\r\nA: b\r\n"), "RETR 1")


# --- whole messages ------------------------------------------------------------------------

_HEAD = "From: a@x.example\r\nTo: b@y.example\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
_MESSAGES = {
    "plain": _HEAD + "Content-Type: text/plain; charset=utf-8\r\n\r\nH\xe9llo\r\n",
    "alternative with attachments": _HEAD
    + 'Content-Type: multipart/mixed;\r\n\tboundary="b1"\r\n\r\n--b1\r\n'
    + 'Content-Type: multipart/alternative; boundary="b2"\r\n\r\n--b2\r\n'
    + "Content-Type: text/plain; charset=iso-8859-1\r\n"
    + "Content-Transfer-Encoding: quoted-printable\r\n\r\nCaf=E9\r\n--b2\r\n"
    + "Content-Type: text/html\r\n\r\n<p>Caf</p>\r\n--b2--\r\n--b1\r\n"
    + 'Content-Type: application/pdf; name="q.pdf"\r\n'
    + 'Content-Disposition: attachment; filename="q 1.pdf"\r\n'
    + "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQ=\r\n--b1\r\n"
    + "Content-Type: text/plain\r\nContent-Disposition: attachment; filename=notes.txt\r\n\r\n"
    + "notes\r\n--b1--\r\n",
    "related": _HEAD
    + 'Content-Type: multipart/related; boundary="r"\r\n\r\n--r\r\n'
    + "Content-Type: text/html; charset=us-ascii\r\n\r\n<img src=cid:i>\r\n--r\r\n"
    + "Content-Type: image/png\r\nContent-ID: <i>\r\n\r\nPNG\r\n--r--\r\n",
    "unquoted name with spaces": _HEAD
    + 'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
    + "Content-Type: text/plain\r\n\r\nbody\r\n--m\r\n"
    + "Content-Type: text/plain\r\nContent-Disposition: attachment; filename=This is a.txt\r\n"
    + "\r\nx\r\n--m--\r\n",
    "encoded filename": _HEAD
    + 'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
    + "Content-Type: text/plain\r\n\r\nbody\r\n--m\r\n"
    + "Content-Type: text/plain\r\n"
    + 'Content-Disposition: attachment; filename="=?utf-8?q?R=C3=A9.txt?="'
    + "\r\n\r\nx\r\n--m--\r\n",
    "unknown charset": _HEAD + "Content-Type: text/plain; charset=x-nothing\r\n\r\nhi\r\n",
}


@pytest.mark.parametrize("text", list(_MESSAGES.values()), ids=list(_MESSAGES))
def test_parse_message_fast_lane_is_the_general_path(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = text.encode("utf-8")
    fast = mime_parse.parse_message(data)
    monkeypatch.setattr(mime_parse, "_fast_message", lambda headers, data: None)
    monkeypatch.setattr(mime_parse, "message_tree", lambda data, factory: None)
    assert fast == mime_parse.parse_message(data)
