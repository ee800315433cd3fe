"""``serversync.mime``: parsing is total (only MalformedMessageError), parsing recovers what
the stdlib wrote, derived Message-IDs are stable, and composed messages parse back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from serversync.errors import MalformedMessageError
from serversync.mime import compose, derive_message_id, parse_headers, parse_message
from serversync.model import (
    ActivityId,
    ActivityParty,
    MessageId,
    ParsedHeaders,
    ParsedMessage,
    ParticipationType,
)
from serversync.testing import a_mailbox, a_pending_email, an_email
from tests import strategies as s

_SLOW = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- header-ish bytes ----------------------------------------------------------------------

_HEADER_NAMES = [
    b"From",
    b"To",
    b"Cc",
    b"Bcc",
    b"Reply-To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"In-Reply-To",
    b"References",
    b"Thread-Index",
    b"Auto-Submitted",
    b"Content-Type",
    b"Content-Transfer-Encoding",
    b"MIME-Version",
    b"Content-Disposition",
    b"Received",
    b"X-Mailer",
]

_VALUE_PIECES = [
    b"alice@example.com",
    b"Alice <ALICE@Example.COM>",
    b'"Doe, John" <john@example.com>',
    b"undisclosed-recipients:;",
    b"<a@b>",
    b"<",
    b">",
    b"@",
    b",",
    b";",
    b":",
    b'"',
    b"(",
    b")",
    b"\\",
    b"=?utf-8?b?w6k=?=",
    b"=?utf-8?q?caf=C3=A9?=",
    b"=?iso-8859-1?q?=E9?=",
    b"=?x-unknown?b?AAAA?=",
    b"=?utf-8?b?####?=",
    b"=?",
    b"?=",
    b"multipart/mixed; boundary=XX",
    b'multipart/alternative; boundary="YY"',
    b"text/plain; charset=x-unknown",
    b"text/html; charset=utf-8",
    b"message/rfc822",
    b"base64",
    b"quoted-printable",
    b"8bit",
    b"Mon, 5 Jan 2026 08:00:00 +0000",
    b"Fri, 31 Dec 9999 23:59:59 -2359",
    b"Thu, 1 Jan 0000 00:00:00 +9999",
    b"32 Foo 2026 99:99:99 XYZ",
    b'attachment; filename="a.pdf"',
    b"\xff\xfe",
    b"\xc3\xa9",
    b"\x00",
    b" ",
    b"\t",
    b"\r\n ",
    b"\n\t",
]

_header_values = st.lists(st.sampled_from(_VALUE_PIECES) | st.binary(max_size=12), max_size=8).map(
    b"".join
)
_header_names = st.sampled_from(_HEADER_NAMES) | st.binary(min_size=1, max_size=10)
_header_lines = st.builds(
    lambda name, sep, value, eol: name + sep + value + eol,
    _header_names,
    st.sampled_from([b": ", b":", b" : ", b""]),
    _header_values,
    st.sampled_from([b"\r\n", b"\n", b"\r", b""]),
)
_bodies = st.lists(
    st.sampled_from(
        [
            b"--XX\r\n",
            b"--XX--\r\n",
            b"--YY\r\nContent-Type: text/plain\r\n\r\nhi\r\n",
            b"--YY--\r\n",
            b"Content-Type: text/html; charset=x-unknown\r\n\r\n<p>x</p>\r\n",
            b"Content-Transfer-Encoding: base64\r\n\r\n=====\r\n",
            b"\r\n",
            b"hello\r\n",
            b"=C3=A9=\r\n",
        ]
    )
    | st.binary(max_size=20),
    max_size=10,
).map(b"".join)
_header_ish_messages = st.builds(
    lambda lines, blank, body: b"".join(lines) + blank + body,
    st.lists(_header_lines, max_size=10),
    st.sampled_from([b"\r\n", b"\n", b""]),
    _bodies,
)


@_SLOW
@given(st.binary(max_size=500) | _header_ish_messages)
@example(b"")
@example(b"\r\n")
@example(b"\r\n\r\nbody only")
@example(b" folded first line\r\nSubject: x\r\n\r\n")
@example(b"From: \r\n\r\n")
@example(b"Date: Thu, 1 Jan 0000 00:00:00 +9999\r\nFrom: a@b\r\n\r\n")
@example(b"Content-Type: multipart/mixed; boundary=XX\r\nFrom: a@b\r\n\r\n--XX\r\n")
@example(b"From: a@b\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\n\xff\xfe")
def test_parsing_raises_only_malformed_message_error(data: bytes) -> None:
    try:
        headers = parse_headers(data)
    except MalformedMessageError:
        headers = None
    else:
        assert isinstance(headers, ParsedHeaders)
    try:
        message = parse_message(data)
    except MalformedMessageError:
        message = None
    else:
        assert isinstance(message, ParsedMessage)
        assert message.headers == headers
    if headers is None:
        assert message is None, "parse_message succeeded where parse_headers failed"


@_SLOW
@given(st.lists(_header_lines, min_size=1, max_size=10))
def test_parsed_headers_hold_normalized_values(lines: list[bytes]) -> None:
    try:
        headers = parse_headers(b"".join(lines) + b"\r\n")
    except MalformedMessageError:
        return
    for address in (headers.sender, *headers.reply_to, *headers.recipients):
        if address is not None:
            assert address.address == address.address.strip().lower()
            assert "@" in address.address
    for mid in (headers.message_id, *headers.in_reply_to, *headers.references):
        if mid is not None:
            assert mid.startswith("<")
            assert mid.endswith(">")
            assert "".join(mid.split()) == mid
    assert "\n" not in headers.subject
    assert "\r" not in headers.subject
    assert headers.date is None or headers.date.tzinfo is not None


# --- messages written by the stdlib -------------------------------------------------------

_subject_chars = st.characters(
    codec="utf-8", exclude_categories=("Cc", "Cs", "Co", "Cn", "Zl", "Zp")
)
_subjects = st.text(alphabet=_subject_chars, max_size=120).filter(lambda t: "=?" not in t)
_non_ascii_subjects = _subjects.filter(lambda t: not t.isascii())
_display_names = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N")) | st.just(" "), max_size=20
)


def _unfold(text: str) -> str:
    return " ".join(text.split())


def _message(
    *,
    sender: str,
    sender_name: str,
    to: Sequence[str],
    cc: Sequence[str],
    subject: str,
    message_id: str | None,
    in_reply_to: Sequence[str],
    references: Sequence[str],
    date: datetime,
    extra: Sequence[tuple[str, str]] = (),
    raw_threading: bool = True,
) -> bytes:
    """A message written by ``EmailMessage``.

    With ``raw_threading`` In-Reply-To and References are written the way mail clients do
    (one id per line); without, the stdlib writes them and RFC 2047-encodes long id lists,
    which RFC 2047 forbids in msg-id fields but some mailers do.
    """
    msg = EmailMessage()
    for name, value in extra:
        msg[name] = value
    msg["From"] = f"{sender_name} <{sender}>" if sender_name.strip() else sender
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date)
    if message_id is not None:
        msg["Message-ID"] = message_id
    threading = (("In-Reply-To", in_reply_to), ("References", references))
    if not raw_threading:
        for name, ids in threading:
            if ids:
                msg[name] = " ".join(ids)
    msg.set_content("body\n")
    if not raw_threading:
        return msg.as_bytes()
    raw = b"".join(
        f"{name}: {' '.join(ids)}\n".replace("> <", ">\n <").encode()
        for name, ids in threading
        if ids
    )
    return raw + msg.as_bytes()


_dates = st.datetimes(
    min_value=datetime(1980, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.just(UTC),
).map(lambda d: d.replace(microsecond=0))
_addresses = s.email_address_strings()
_address_lists = st.lists(_addresses, min_size=1, max_size=4)
_id_lists = st.lists(s.message_ids(domain_literals=False), max_size=4)


@_SLOW
@given(
    sender=_addresses,
    sender_name=_display_names,
    to=_address_lists,
    cc=st.lists(_addresses, max_size=3),
    subject=_subjects | _non_ascii_subjects,
    message_id=s.message_ids(domain_literals=False),
    in_reply_to=st.lists(s.message_ids(domain_literals=False), max_size=1),
    references=_id_lists,
    date=_dates,
    raw_threading=st.booleans(),
)
@example(
    sender="Customer@Fabrikam.Example",
    sender_name="Zoë",
    to=["User@Contoso.Example"],
    cc=[],
    subject="Réunion à 10 h — café ☕",
    message_id=MessageId("<abc@fabrikam.example>"),
    in_reply_to=[],
    references=[],
    date=datetime(2026, 1, 5, 8, tzinfo=UTC),
    raw_threading=True,
)
@example(
    sender="a@b.example",
    sender_name="",
    to=["c@d.example"],
    cc=[],
    subject="Re: x",
    message_id=MessageId("<abc@fabrikam.example>"),
    in_reply_to=[MessageId("<" + "a" * 66 + "@x.example>")],
    references=[MessageId("<b@x.example>"), MessageId("<" + "c" * 70 + "@x.example>")],
    date=datetime(2026, 1, 5, 8, tzinfo=UTC),
    raw_threading=False,  # the stdlib RFC 2047-encodes these long ids
)
def test_parse_headers_recovers_what_the_stdlib_wrote(
    sender: str,
    sender_name: str,
    to: list[str],
    cc: list[str],
    subject: str,
    message_id: MessageId,
    in_reply_to: list[MessageId],
    references: list[MessageId],
    date: datetime,
    raw_threading: bool,
) -> None:
    data = _message(
        sender=sender,
        sender_name=sender_name,
        to=to,
        cc=cc,
        subject=subject,
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=references,
        date=date,
        raw_threading=raw_threading,
    )
    headers = parse_headers(data)
    assert headers.subject == _unfold(subject)
    assert headers.sender is not None
    assert headers.sender.address == sender.lower()
    assert headers.sender.name == _unfold(sender_name)
    assert [a.address for a in headers.to] == [a.lower() for a in to]
    assert [a.address for a in headers.cc] == [a.lower() for a in cc]
    assert headers.message_id == message_id
    assert headers.in_reply_to == tuple(in_reply_to)
    assert headers.references == tuple(dict.fromkeys(references))
    assert headers.date == date
    assert parse_message(data).headers == headers


@_SLOW
@given(subject=_non_ascii_subjects.filter(lambda t: t.strip() != ""))
@example(subject="é")
@example(subject="日本語の件名とても長い件名" * 6)
def test_non_ascii_subjects_travel_rfc2047_encoded(subject: str) -> None:
    data = an_email(subject=subject)
    header_block = data.split(b"\n\n", 1)[0]
    assert header_block.isascii(), "EmailMessage should encode the subject"
    assert b"=?utf-8?" in header_block.lower()
    assert parse_headers(data).subject == _unfold(subject)


# --- derived Message-IDs ------------------------------------------------------------------

_extra_headers = st.lists(
    st.tuples(
        st.sampled_from(["Received", "X-Mailer", "X-Spam-Score", "X-Original-To", "Return-Path"]),
        st.text(alphabet=st.characters(codec="ascii", categories=("L", "N")), max_size=30),
    ),
    max_size=4,
)


@_SLOW
@given(
    sender=_addresses,
    to=_address_lists,
    cc=st.lists(_addresses, max_size=2),
    subject=_subjects,
    date=_dates,
    first_extra=_extra_headers,
    second_extra=_extra_headers,
)
def test_derived_message_id_depends_only_on_from_to_cc_date_and_subject(
    sender: str,
    to: list[str],
    cc: list[str],
    subject: str,
    date: datetime,
    first_extra: list[tuple[str, str]],
    second_extra: list[tuple[str, str]],
) -> None:
    def derived(extra: list[tuple[str, str]]) -> MessageId:
        headers = parse_headers(
            _message(
                sender=sender,
                sender_name="",
                to=to,
                cc=cc,
                subject=subject,
                message_id=None,
                in_reply_to=(),
                references=(),
                date=date,
                extra=extra,
            )
        )
        assert headers.message_id is None
        return derive_message_id(headers)

    first = derived(first_extra)
    assert first == derived(first_extra)
    assert first == derived(second_extra)
    assert first.startswith("<")
    assert first.endswith("@serversync.invalid>")
    assert "".join(first.split()) == first


@given(
    st.builds(
        ParsedHeaders,
        message_id=st.none(),
        subject=st.text(),
        sender=s.optional(s.email_addresses()),
        to=st.lists(s.email_addresses(), max_size=3).map(tuple),
        cc=st.lists(s.email_addresses(), max_size=3).map(tuple),
        date=s.optional(s.aware_datetimes()),
    )
)
def test_derive_message_id_is_total_and_deterministic(headers: ParsedHeaders) -> None:
    derived = derive_message_id(headers)
    assert derived == derive_message_id(headers)
    assert derived.startswith("<")
    assert derived.endswith("@serversync.invalid>")
    assert derived[1:-1].count("@") == 1


@given(subject=st.text(), other=st.text())
def test_derived_message_ids_differ_by_subject(subject: str, other: str) -> None:
    if subject == other:
        return
    first = ParsedHeaders(message_id=None, subject=subject)
    second = ParsedHeaders(message_id=None, subject=other)
    assert derive_message_id(first) != derive_message_id(second)


# --- composing ------------------------------------------------------------------------------

_NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@_SLOW
@given(
    sender=_addresses,
    to=_address_lists,
    subject=_subjects,
    body=st.text(max_size=200),
    later=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30)),
)
@example(
    sender="Alice@Contoso.Example",
    to=["Bob@Fabrikam.Example", "carol@fabrikam.example"],
    subject="Angebot für Müller — Größe",
    body="<p>Hello</p>",
    later=timedelta(minutes=5),
)
def test_composed_messages_parse_back(
    sender: str, to: list[str], subject: str, body: str, later: timedelta
) -> None:
    mailbox = a_mailbox(sender)
    activity = a_pending_email(sender_mailbox=mailbox, to=to, subject=subject, body=body)
    first = compose(activity, sender_address=mailbox.email_address, now=_NOW)
    headers = parse_headers(first.data)
    assert headers.message_id == first.message_id
    assert headers.subject == _unfold(subject)
    assert [a.address for a in headers.to] == [a.lower() for a in to]
    assert headers.sender is not None
    assert headers.sender.address == mailbox.email_address
    assert first.recipients == tuple(dict.fromkeys(to))
    assert first.message_id.endswith(f"@{mailbox.email_address.rpartition('@')[2]}>")
    # A retry composes again later: same Message-ID, so replies still correlate.
    retry = compose(activity, sender_address=mailbox.email_address, now=_NOW + later)
    assert retry.message_id == first.message_id
    assert parse_headers(retry.data).message_id == first.message_id
    parsed = parse_message(first.data)
    assert parsed.headers == headers


@_SLOW
@given(
    activity_id=st.text(min_size=1, max_size=40),
    message_id=s.optional(s.message_ids(domain_literals=False)),
    in_reply_to=s.optional(s.message_ids(domain_literals=False)),
    domain=st.sampled_from(["contoso.example", "mail.fabrikam.example"]),
)
def test_composed_message_ids_come_from_the_activity(
    activity_id: str,
    message_id: MessageId | None,
    in_reply_to: MessageId | None,
    domain: str,
) -> None:
    mailbox = a_mailbox("queue@contoso.example")
    activity = a_pending_email(
        sender_mailbox=mailbox,
        to=["customer@fabrikam.example"],
        subject="Re: order",
        id=ActivityId(activity_id),
        message_id=message_id,
        in_reply_to=in_reply_to,
    )
    composed = compose(
        activity, sender_address=mailbox.email_address, now=_NOW, message_id_domain=domain
    )
    again = compose(
        activity,
        sender_address=mailbox.email_address,
        now=_NOW + timedelta(hours=1),
        message_id_domain=domain,
    )
    assert composed.message_id == again.message_id
    if message_id is not None:
        assert composed.message_id == message_id
    else:
        assert composed.message_id.endswith(f"@{domain}>")
        assert "".join(composed.message_id.split()) == composed.message_id
    headers = parse_headers(composed.data)
    assert headers.message_id == composed.message_id
    expected_thread = (in_reply_to,) if in_reply_to is not None else ()
    assert headers.in_reply_to == expected_thread
    assert headers.references == expected_thread


@_SLOW
@given(in_reply_to=s.message_ids(domain_literals=False))
@example(in_reply_to=MessageId("<" + "a" * 65 + "@x.example>"))  # 77 characters
@example(in_reply_to=MessageId("<" + "a" * 66 + "@x.example>"))  # 78: the stdlib would encode it
@example(
    # The shape of an Exchange Online Message-ID (80 characters).
    in_reply_to=MessageId(
        "<DM6PR11MB4691E6A8F3B9D5B0A2C1E6F4A8D92@DM6PR11MB4691.namprd11.prod.outlook.com>"
    )
)
def test_composed_threading_headers_keep_long_ids(in_reply_to: MessageId) -> None:
    """A reply carries the id it answers verbatim in In-Reply-To and References, however long:
    RFC 2047 encoded words are not allowed in msg-id fields, so a receiver could not thread."""
    mailbox = a_mailbox("queue@contoso.example")
    activity = a_pending_email(
        sender_mailbox=mailbox,
        to=["customer@fabrikam.example"],
        subject="Re: order",
        in_reply_to=in_reply_to,
    )
    composed = compose(activity, sender_address=mailbox.email_address, now=_NOW)
    headers = parse_headers(composed.data)
    assert headers.in_reply_to == (in_reply_to,), composed.data.decode("ascii", "replace")
    assert headers.references == (in_reply_to,), composed.data.decode("ascii", "replace")


def test_bcc_recipients_join_the_envelope_only() -> None:
    mailbox = a_mailbox("queue@contoso.example")
    activity = a_pending_email(
        sender_mailbox=mailbox,
        to=["to@fabrikam.example"],
        subject="Hi",
        parties=(
            ActivityParty(participation=ParticipationType.SENDER, address=mailbox.email_address),
            ActivityParty(participation=ParticipationType.TO_RECIPIENT, address="to@fab.example"),
            ActivityParty(participation=ParticipationType.CC_RECIPIENT, address="cc@fab.example"),
            ActivityParty(participation=ParticipationType.BCC_RECIPIENT, address="bc@fab.example"),
        ),
    )
    composed = compose(activity, sender_address=mailbox.email_address, now=_NOW)
    headers = parse_headers(composed.data)
    assert composed.recipients == ("to@fab.example", "cc@fab.example", "bc@fab.example")
    assert [a.address for a in headers.to] == ["to@fab.example"]
    assert [a.address for a in headers.cc] == ["cc@fab.example"]
    assert headers.bcc == ()
    assert b"bc@fab.example" not in composed.data


def test_malformed_input_is_reported_with_a_reason() -> None:
    with pytest.raises(MalformedMessageError) as excinfo:
        parse_headers(b"")
    assert excinfo.value.reason
