"""The IMAP adapter's response parsing and aioimaplib workarounds, without a server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serversync.adapters.transports._imap_parse import (
    ImapParseError,
    decode_mailbox_name,
    parse_fetch,
    parse_internaldate,
    parse_list,
    parse_search,
    parse_select,
    quote,
    uid_set,
)
from serversync.adapters.transports._imap_protocol import _Protocol

TAGGED = b"Fetch completed (0.001 + 0.000 secs)."


def test_fetch_responses_with_literals_are_split_per_message() -> None:
    header = b"Subject: a (b) {3}\r\nX: )\r\n\r\n"
    lines: list[bytes | bytearray] = [
        b"1 FETCH (UID 7 RFC822.SIZE 120 BODY[HEADER] {%d}" % len(header),
        bytearray(header),
        b" FLAGS (\\Seen $Tracked))",
        b"2 FETCH (FLAGS (\\Deleted))",  # an unsolicited flag update, no UID
        b'3 FETCH (UID 9 INTERNALDATE " 5-Jan-2026 08:00:00 -0130" BODY[] {0}',
        bytearray(),
        b")",
        b'4 FETCH (UID 10 BODY[HEADER.FIELDS (FROM TO)] "quoted \\" ) (" BODY[TEXT] NIL)',
    ]
    items = parse_fetch(lines)
    assert [i.sequence for i in items] == [1, 2, 3, 4]
    first, flags_only, empty, odd = items
    assert first.uid == 7
    assert first.number("RFC822.SIZE") == 120
    assert first.data("BODY[HEADER]") == header
    assert first.attributes["FLAGS"] == ["\\Seen", "$Tracked"]
    assert flags_only.uid is None
    assert empty.data("BODY[]") == b""
    assert parse_internaldate(empty.data("INTERNALDATE")) == datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
    assert odd.data("BODY[HEADER.FIELDS (FROM TO)]") == b'quoted " ) ('
    assert odd.attributes["BODY[TEXT]"] is None


@pytest.mark.parametrize(
    "lines",
    [
        [b"1 FETCH (UID 1 BODY[] {5}", bytearray(b"abc"), b")"],  # wrong literal size
        [b"1 FETCH (UID 1 BODY[] {5}"],  # literal missing
        [b"1 FETCH (UID 1 BODY[]"],  # unbalanced
        [b'1 FETCH (UID 1 X "open)'],  # unterminated string
    ],
)
def test_broken_fetch_responses_raise(lines: list[bytes | bytearray]) -> None:
    with pytest.raises(ImapParseError):
        parse_fetch(lines)


def test_select_reports_cursor_fields_and_keyword_support() -> None:
    status = parse_select(
        [
            b"FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
            b"OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags.",
            b"3 EXISTS",
            b"0 RECENT",
            b"OK [UIDVALIDITY 1795634355] UIDs valid",
            b"OK [UIDNEXT 4] Predicted next UID",
            b"OK [HIGHESTMODSEQ 12] Highest",
            b"[READ-WRITE] Select completed.",
        ]
    )
    assert (status.uidvalidity, status.uidnext, status.exists, status.highest_modseq) == (
        1795634355,
        4,
        3,
        12,
    )
    assert status.can_store("$ServerSyncTracked")
    assert not status.read_only
    # aioimaplib turns "(\* \Seen)" into "(\\Seen)"; that still means \* was there
    assert parse_select([b"OK [PERMANENTFLAGS (\\\\Seen)] x", b"done"]).keywords_allowed
    fixed = parse_select([b"OK [PERMANENTFLAGS (\\Seen $ServerSyncTracked)] x", b"done"])
    assert fixed.can_store("$ServerSyncTracked")
    assert not fixed.can_store("$Other")
    read_only = parse_select([b"OK [PERMANENTFLAGS (\\*)] x", b"[READ-ONLY] done"])
    assert not read_only.can_store("$ServerSyncTracked")
    assert parse_select([b"OK [NOMODSEQ] none", b"done"]).highest_modseq is None


def test_search_results_skip_modseq_and_the_tagged_text() -> None:
    assert parse_search([b"2 3 10", b"Search completed."]) == [2, 3, 10]
    assert parse_search([b"4 5 (MODSEQ 917162500)", b"ok"]) == [4, 5]
    assert parse_search([b"", b"ok"]) == []
    assert parse_search([b"Search completed 1 2."]) == []


def test_list_responses_with_quoted_literal_and_nil_names() -> None:
    entries = parse_list(
        [
            b'(\\HasNoChildren) "/" INBOX',
            b'(\\Noselect \\HasChildren) "/" "a \\"b\\""',
            b'() "/" {5}',
            bytearray(b"lit/x"),
            b"() NIL flat",
            b"List completed.",
        ]
    )
    assert [(e.name, e.delimiter) for e in entries] == [
        ("INBOX", "/"),
        ('a "b"', "/"),
        ("lit/x", "/"),
        ("flat", None),
    ]
    assert entries[1].flags == {"\\NOSELECT", "\\HASCHILDREN"}


@pytest.mark.parametrize(
    ("wire", "text"),
    [
        ("INBOX", "INBOX"),
        ("Caf&AOk-", "Café"),
        ("&ZeVnLIqe-", "日本語"),
        ("R&AOk-sum&AOk-s &- notes", "Résumés & notes"),
        ("broken&AOk", "broken&AOk"),
        ("bad&!!!-", "bad&!!!-"),
    ],
)
def test_modified_utf7_names_are_decoded(wire: str, text: str) -> None:
    assert decode_mailbox_name(wire) == text


def test_uid_sets_are_compact_and_quoting_escapes() -> None:
    assert uid_set([10, 1, 2, 3, 5, 9, 3]) == "1:3,5,9:10"
    assert uid_set([4]) == "4"
    with pytest.raises(ValueError, match="empty"):
        uid_set([])
    assert quote('a "b" \\c') == '"a \\"b\\" \\\\c"'


@given(st.lists(st.integers(min_value=1, max_value=10_000), min_size=1))
def test_uid_sets_cover_exactly_the_uids(uids: list[int]) -> None:
    covered: set[int] = set()
    for part in uid_set(uids).split(","):
        low, _, high = part.partition(":")
        covered.update(range(int(low), int(high or low) + 1))
    assert covered == set(uids)


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"5-Foo-2026 08:00:00 +0000",
        b"31-Feb-2026 08:00:00 +0000",
        b"31-Dec-9999 23:59:59 -0100",  # past the last instant a datetime holds
    ],
)
def test_unreadable_internaldates_are_none(value: bytes | None) -> None:
    assert parse_internaldate(value) is None


@given(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 12, 31)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
    st.booleans(),
)
def test_internaldates_name_the_instant_at_their_offset(
    local: datetime, minutes: int, space_padded: bool
) -> None:
    zone = timezone(timedelta(minutes=minutes))
    moment = local.replace(microsecond=0, tzinfo=zone)
    sign = "-" if minutes < 0 else "+"
    day = f"{moment.day:2d}" if space_padded else f"{moment.day:02d}"
    text = f"{day}-{moment:%b-%Y %H:%M:%S} {sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    parsed = parse_internaldate(text.encode())
    assert parsed == moment
    assert parsed is not None
    assert parsed.utcoffset() == timedelta(0)


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent = bytearray()

    def write(self, data: Any) -> None:
        self.sent.extend(data)


async def test_a_response_of_thousands_of_lines_in_one_chunk_is_parsed() -> None:
    # aioimaplib recurses once per line; fed whole, this chunk overflows the stack.
    protocol = _Protocol(asyncio.get_running_loop())
    transport = _Transport()
    protocol.connection_made(transport)
    protocol.state = "AUTH"
    listing = asyncio.ensure_future(protocol.simple_command("LIST", '""', '"*"'))
    await asyncio.sleep(0)
    tag = bytes(transport.sent).split(b" ", 1)[0]
    lines = b"".join(b'* LIST () "/" folder%d\r\n' % n for n in range(5000))
    protocol.data_received(lines + tag + b" OK List completed.\r\n")
    response = await asyncio.wait_for(listing, 5)
    assert response.result == "OK"
    assert len(parse_list(response.lines)) == 5000
