"""Composing outgoing CRM email: :func:`serversync.mime.compose` and
:func:`serversync.mime.outgoing_message_id`."""

from __future__ import annotations

import email
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from typing import Any

import attrs
import pytest

from serversync.errors import ConfigurationError, ErrorScope, SyncError
from serversync.mime import compose, outgoing_message_id, parse_headers, parse_message
from serversync.model import (
    ActivityId,
    ActivityParty,
    EmailActivity,
    EmailDirection,
    EmailStatus,
    MessageId,
    OutgoingAttachment,
    OutgoingMessage,
    ParticipationType,
)
from serversync.relevance import parse_message_ids
from serversync.settings import SyncSettings

SENDER = "alice@contoso.example"
NOW = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


def _party(participation: ParticipationType, address: str, name: str = "") -> ActivityParty:
    return ActivityParty(participation=participation, address=address, name=name)


def _email(
    *,
    activity_id: str = "email-1",
    to: Sequence[str] = ("jane@fabrikam.example",),
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    subject: str = "Quote for 20 widgets",
    body: str = "Here is the quote.",
    **overrides: Any,
) -> EmailActivity:
    parties = (
        _party(ParticipationType.SENDER, SENDER, "Alice Example"),
        *(_party(ParticipationType.TO_RECIPIENT, a) for a in to),
        *(_party(ParticipationType.CC_RECIPIENT, a) for a in cc),
        *(_party(ParticipationType.BCC_RECIPIENT, a) for a in bcc),
    )
    activity = EmailActivity(
        id=ActivityId(activity_id),
        direction=EmailDirection.OUTGOING,
        status=EmailStatus.PENDING_SEND,
        subject=subject,
        description=body,
        parties=parties,
        sender=SENDER,
    )
    return attrs.evolve(activity, **overrides) if overrides else activity


def _compose(
    activity: EmailActivity, *, now: datetime = NOW, message_id_domain: str | None = None
) -> OutgoingMessage:
    return compose(activity, sender_address=SENDER, now=now, message_id_domain=message_id_domain)


def _parsed(message: OutgoingMessage) -> EmailMessage:
    parsed = email.message_from_bytes(message.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


# -- the Message-ID ------------------------------------------------------------------------------


def test_message_id_is_derived_from_the_activity_id() -> None:
    assert outgoing_message_id(ActivityId("email-1"), "contoso.example") == (
        "<serversync.email-1@contoso.example>"
    )


def test_message_ids_of_different_activities_differ() -> None:
    first = outgoing_message_id(ActivityId("email-1"), "contoso.example")
    second = outgoing_message_id(ActivityId("email-2"), "contoso.example")
    assert first != second


@pytest.mark.parametrize(
    ("activity_id", "local_part"),
    [
        ("{6F9619FF-8B86-D011-B42D-00C04FC964FF}", "-6F9619FF-8B86-D011-B42D-00C04FC964FF-"),
        ("a b/c<d>@e", "a-b-c-d--e"),
        ("ümlaut", "-mlaut"),
        ("keep_these.chars-0", "keep_these.chars-0"),
    ],
)
def test_unsafe_characters_in_the_activity_id_are_replaced(
    activity_id: str, local_part: str
) -> None:
    message_id = outgoing_message_id(ActivityId(activity_id), "contoso.example")

    assert message_id == f"<serversync.{local_part}@contoso.example>"
    assert parse_message_ids(message_id) == (message_id,)


def test_empty_activity_id_still_gives_a_valid_message_id() -> None:
    message_id = outgoing_message_id(ActivityId(""), "contoso.example")

    assert message_id == "<serversync.activity@contoso.example>"


def test_composed_message_carries_the_derived_message_id() -> None:
    message = _compose(_email(activity_id="email-7"))

    expected = outgoing_message_id(ActivityId("email-7"), "contoso.example")
    assert message.message_id == expected
    assert parse_headers(message.data).message_id == expected


def test_message_id_domain_defaults_to_the_sender_domain() -> None:
    message = _compose(_email())

    assert message.message_id.endswith("@contoso.example>")


def test_message_id_domain_setting_is_honoured() -> None:
    settings = SyncSettings(message_id_domain="crm.contoso.example")
    activity = _email(activity_id="email-7")

    message = _compose(activity, message_id_domain=settings.message_id_domain)

    assert message.message_id == "<serversync.email-7@crm.contoso.example>"
    assert parse_headers(message.data).message_id == message.message_id


def test_long_guid_message_id_reads_back_unchanged() -> None:
    activity = _email(activity_id="0f8fad5b-d9cb-469f-a165-70867728950e")

    message = _compose(activity, message_id_domain="crm.contoso.example")

    assert parse_headers(message.data).message_id == message.message_id


def test_retry_reuses_the_message_id() -> None:
    activity = _email()
    first = _compose(activity)
    retried = attrs.evolve(
        activity, delivery_attempts=1, postpone_sending_until=NOW + timedelta(minutes=5)
    )

    second = _compose(retried, now=NOW + timedelta(minutes=5))

    assert second.message_id == first.message_id
    assert parse_headers(second.data).message_id == first.message_id


def test_activity_with_its_own_message_id_keeps_it() -> None:
    activity = _email(message_id=MessageId("<chosen@contoso.example>"))

    message = _compose(activity, message_id_domain="crm.contoso.example")

    assert message.message_id == "<chosen@contoso.example>"
    assert parse_headers(message.data).message_id == "<chosen@contoso.example>"


# -- headers and envelope ------------------------------------------------------------------------


def test_to_and_cc_become_headers() -> None:
    activity = _email(
        to=["jane@fabrikam.example", "joe@fabrikam.example"], cc=["bob@contoso.example"]
    )

    headers = parse_headers(_compose(activity).data)

    assert [a.address for a in headers.to] == ["jane@fabrikam.example", "joe@fabrikam.example"]
    assert [a.address for a in headers.cc] == ["bob@contoso.example"]


def test_bcc_is_only_in_the_envelope() -> None:
    activity = _email(
        to=["jane@fabrikam.example"], cc=["bob@contoso.example"], bcc=["audit@contoso.example"]
    )

    message = _compose(activity)

    assert message.recipients == (
        "jane@fabrikam.example",
        "bob@contoso.example",
        "audit@contoso.example",
    )
    assert b"audit@contoso.example" not in message.data
    assert _parsed(message)["Bcc"] is None


def test_bcc_only_email_has_no_to_header_but_is_sent() -> None:
    message = _compose(_email(to=[], bcc=["audit@contoso.example"]))

    assert message.recipients == ("audit@contoso.example",)
    assert _parsed(message)["To"] is None


def test_a_recipient_listed_twice_is_sent_once() -> None:
    message = _compose(_email(to=["jane@fabrikam.example"], cc=["jane@fabrikam.example"]))

    assert message.recipients == ("jane@fabrikam.example",)


def test_from_is_the_sending_mailbox_with_the_sender_party_name() -> None:
    message = _compose(_email())

    headers = parse_headers(message.data)
    assert headers.sender is not None
    assert headers.sender.address == SENDER
    assert headers.sender.name == "Alice Example"
    assert message.sender == SENDER


def test_display_names_with_commas_are_quoted() -> None:
    activity = _email(
        to=[],
        parties=(_party(ParticipationType.TO_RECIPIENT, "jane@fabrikam.example", "Doe, Jane"),),
    )

    headers = parse_headers(_compose(activity).data)

    assert [(a.address, a.name) for a in headers.to] == [("jane@fabrikam.example", "Doe, Jane")]


def test_subject_and_date_headers() -> None:
    message = _compose(_email(subject="Quote for 20 widgets"))

    headers = parse_headers(message.data)
    assert headers.subject == "Quote for 20 widgets"
    assert headers.date == NOW


def test_reply_sets_in_reply_to_and_references() -> None:
    parent = MessageId("<question@fabrikam.example>")

    headers = parse_headers(_compose(_email(in_reply_to=parent)).data)

    assert headers.in_reply_to == (parent,)
    assert headers.references == (parent,)


def test_new_email_has_no_in_reply_to_or_references() -> None:
    parsed = _parsed(_compose(_email()))

    assert parsed["In-Reply-To"] is None
    assert parsed["References"] is None


# -- the body ------------------------------------------------------------------------------------


def test_html_description_is_sent_as_html_with_a_plain_text_alternative() -> None:
    body = "<p>Hello <b>Jane</b>,</p><p>here is the quote.</p><script>x()</script>"

    message = _compose(_email(body=body))

    assert _parsed(message).get_content_type() == "multipart/alternative"
    parsed = parse_message(message.data)
    assert parsed.body_html is not None
    assert "<b>Jane</b>" in parsed.body_html
    assert parsed.body_text is not None
    assert parsed.body_text.splitlines() == ["Hello Jane,", "here is the quote."]


def test_attachments_are_attached_and_limits_fail_only_that_email() -> None:
    files = [
        OutgoingAttachment(filename="quote.pdf", content_type="application/pdf", data=b"%PDF-1"),
        OutgoingAttachment(filename="notes.txt", content_type="text/plain", data=b"hi"),
    ]
    message = compose(
        _email(), sender_address=SENDER, now=NOW, attachments=files, max_attachment_size=10
    )
    parsed = parse_message(message.data)
    assert [(a.filename, a.content_type, a.size) for a in parsed.attachments] == [
        ("quote.pdf", "application/pdf", 6),
        ("notes.txt", "text/plain", 2),
    ]
    with pytest.raises(ConfigurationError, match="larger than 3 bytes") as too_big:
        compose(_email(), sender_address=SENDER, now=NOW, attachments=files, max_attachment_size=3)
    assert too_big.value.scope is ErrorScope.ITEM
    with pytest.raises(ConfigurationError, match="blocked file type"):
        compose(
            _email(),
            sender_address=SENDER,
            now=NOW,
            attachments=[OutgoingAttachment(filename="run.EXE", data=b"MZ")],
            blocked_extensions=("exe",),
        )


def test_plain_description_is_sent_as_text() -> None:
    message = _compose(_email(body="Hello Jane,\nif a < b then b > a.\n"))

    assert _parsed(message).get_content_type() == "text/plain"
    parsed = parse_message(message.data)
    assert parsed.body_text is not None
    assert "if a < b then b > a." in parsed.body_text
    assert parsed.body_html is None


def test_empty_description_gives_an_empty_text_body() -> None:
    message = _compose(_email(body=""))

    parsed = parse_message(message.data)
    assert (parsed.body_text or "").strip() == ""


# -- refusals ------------------------------------------------------------------------------------


def test_email_without_recipients_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="email-9"):
        _compose(_email(activity_id="email-9", to=[]))


def test_recipients_without_an_address_do_not_count() -> None:
    with pytest.raises(ConfigurationError):
        _compose(_email(to=[""]))


def test_missing_recipients_fail_only_that_email() -> None:
    # One bad email must not fail the mailbox's whole outgoing run: the error is about the
    # item, so the engine should record it as Failed and go on with the other emails.
    with pytest.raises(ConfigurationError) as caught:
        _compose(_email(to=[]))

    assert caught.value.scope is ErrorScope.ITEM


def test_line_breaks_in_the_subject_never_escape_as_a_stdlib_error() -> None:
    # Either the subject is kept on one line, or the email fails alone with a SyncError; a bare
    # ValueError fails the mailbox's outgoing run and leaves the email stuck in Sending.
    activity = _email(subject="Quote\r\nBcc: attacker@evil.example")
    outcome: OutgoingMessage | SyncError
    try:
        outcome = _compose(activity)
    except SyncError as exc:
        outcome = exc
    if isinstance(outcome, SyncError):
        assert outcome.scope is ErrorScope.ITEM
    else:
        assert outcome.recipients == ("jane@fabrikam.example",)
        assert _parsed(outcome)["Bcc"] is None
        subject = parse_headers(outcome.data).subject
        assert subject.startswith("Quote")
        assert "\n" not in subject


@pytest.mark.parametrize(
    ("field", "activity"),
    [
        ("subject", _email(subject="Quote\r\nBcc: attacker@evil.example")),
        ("subject", _email(subject="Quote\nBcc: attacker@evil.example")),
        (
            "to_recipient",
            attrs.evolve(
                _email(),
                parties=(
                    _party(ParticipationType.TO_RECIPIENT, "jane@fabrikam.example\r\nBcc: x@y.z"),
                ),
            ),
        ),
        ("In-Reply-To", _email(in_reply_to="<a@b>\r\nBcc: x@y.z")),
    ],
)
def test_header_injection_is_refused_with_a_clear_error_for_that_email(
    field: str, activity: EmailActivity
) -> None:
    with pytest.raises(ConfigurationError, match=f"line break in the {field}") as refused:
        _compose(activity)
    assert refused.value.scope is ErrorScope.ITEM
