"""Properties of the relevance functions: tokens, subject normalisation, correlation order,
and a pipeline that never raises on arbitrary header values."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta

import attrs
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from serversync import (
    CorrelationMethod,
    EmailDirection,
    EmailStatus,
    OrganizationSettings,
    SmartMatchingSettings,
    TrackingTokenSettings,
)
from serversync.errors import MalformedMessageError
from serversync.mime import parse_headers
from serversync.model import (
    ActivityId,
    ActivityParty,
    EmailActivity,
    MessageId,
    ParsedHeaders,
    ParticipationType,
)
from serversync.ports.relevance import RelevanceFacts
from serversync.relevance import correlate, decide, default_rules
from serversync.relevance.conversation import base_conversation_index_hash
from serversync.relevance.smart_matching import normalize_subject
from serversync.relevance.tokens import append_token, find_tokens, format_token
from serversync.testing import a_mailbox, a_queue, a_user, an_email

prefixes = st.text(
    alphabet=st.characters(
        whitelist_categories=("Lu", "Ll", "Nd", "Pd", "Po"), blacklist_characters="0123456789"
    ),
    min_size=1,
    max_size=20,
).filter(lambda p: not p[-1].isdigit() and p.strip() == p)


@st.composite
def token_settings(draw: st.DrawFn) -> TrackingTokenSettings:
    return TrackingTokenSettings(
        prefix=draw(prefixes),
        base=draw(st.integers(min_value=0, max_value=500)),
        user_digits=draw(st.integers(min_value=1, max_value=10)),
        counter_digits=draw(st.integers(min_value=1, max_value=9)),
    )


@given(settings_=token_settings(), data=st.data())
@settings(max_examples=300)
def test_a_formatted_token_is_found_again_in_any_subject(
    settings_: TrackingTokenSettings, data: st.DataObject
) -> None:
    room = 10**settings_.user_digits - settings_.base
    assume(room > 1)
    user = data.draw(st.integers(min_value=0, max_value=room - 1))
    counter = data.draw(st.integers(min_value=0, max_value=10**12))
    token = format_token(settings_, user_number=user, counter=counter)
    subject = data.draw(st.text(max_size=80).filter(lambda s: not s[-1:].isdigit()))
    stamped = append_token(subject, token, max_length=255)
    assert len(stamped) <= 255
    assert token in find_tokens(stamped, settings_)
    assert stamped.endswith(token)


@given(st.integers(min_value=0, max_value=10**9))
def test_the_counter_wraps_at_its_digits(counter: int) -> None:
    tokens = TrackingTokenSettings()
    assert format_token(tokens, user_number=1, counter=counter) == (f"CRM:0001{counter % 1000:03d}")


@given(st.text(max_size=120))
@example("RE: FW: Re:  Hello")
@example("Out of office: Re: x")
def test_subject_normalisation_is_idempotent(subject: str) -> None:
    smart = SmartMatchingSettings()
    once = normalize_subject(subject, smart)
    assert normalize_subject(once, smart) == once


T0 = datetime(2026, 1, 5, tzinfo=UTC)
METHODS = ["in-reply-to", "token", "conversation", "smart"]


def _candidate(n: int, method: str, org: OrganizationSettings) -> EmailActivity:
    party = ActivityParty(participation=ParticipationType.TO_RECIPIENT, address="b@x.example")
    sender = ActivityParty(participation=ParticipationType.SENDER, address="a@x.example")
    fields: dict[str, object] = {
        "id": ActivityId(f"act-{n}-{method}"),
        "direction": EmailDirection.OUTGOING,
        "status": EmailStatus.SENT,
        "subject": "Widgets order",
        "sent_on": T0 - timedelta(days=n),
        "parties": (sender, party),
    }
    if method == "in-reply-to":
        fields["message_id"] = MessageId("<parent@x.example>")
    elif method == "token":
        fields["tracking_token"] = "CRM:0001001"
    elif method == "conversation":
        fields["base_conversation_index_hash"] = base_conversation_index_hash(_INDEX)
    return EmailActivity(**fields)  # type: ignore[arg-type]


_INDEX = base64.b64encode(bytes(range(22)) + b"\x00" * 5).decode()
_EXPECTED = {
    "in-reply-to": CorrelationMethod.IN_REPLY_TO,
    "token": CorrelationMethod.TRACKING_TOKEN,
    "conversation": CorrelationMethod.CONVERSATION_INDEX,
    "smart": CorrelationMethod.SMART_MATCHING,
}


@given(
    present=st.lists(st.sampled_from(METHODS), min_size=1, unique=True),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_correlation_prefers_headers_then_token_then_conversation_then_smart(
    present: list[str], seed: int
) -> None:
    org = OrganizationSettings(smart_matching=SmartMatchingSettings(enabled=True))
    message = parse_headers(
        an_email(
            sender="b@x.example",
            to=["a@x.example"],
            subject="RE: Widgets order CRM:0001001",
            in_reply_to="<parent@x.example>",
            headers=[("Thread-Index", _INDEX)],
        )
    )
    candidates = [_candidate(n, m, org) for n, m in enumerate(present)]
    shuffled = list(candidates)
    random.Random(seed).shuffle(shuffled)
    facts = RelevanceFacts(
        mailbox=a_mailbox("a@x.example"),
        mailbox_owner=None,
        folder="INBOX",
        records={},
        candidates=tuple(shuffled),
        organization=org,
        now=T0,
    )
    first = correlate(message, facts)
    again = correlate(message, attrs.evolve(facts, candidates=tuple(candidates)))
    assert first == again, "correlation does not depend on the candidates' order"
    expected = next(m for m in METHODS if m in present)
    assert first is not None
    assert first.method is _EXPECTED[expected]


header_values = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"),
    max_size=60,
)


@given(
    subject=header_values,
    sender=header_values,
    to=header_values,
    references=header_values,
    thread_index=header_values,
)
@settings(max_examples=300)
def test_the_relevance_pipeline_never_raises_on_arbitrary_header_values(
    subject: str, sender: str, to: str, references: str, thread_index: str
) -> None:
    raw = (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nReferences: {references}\r\n"
        f"In-Reply-To: {references}\r\nThread-Index: {thread_index}\r\n\r\nbody"
    ).encode("utf-8", errors="surrogateescape")
    try:
        message: ParsedHeaders = parse_headers(raw)
    except MalformedMessageError:
        return
    org = OrganizationSettings(smart_matching=SmartMatchingSettings(enabled=True))
    queue = a_queue("q@x.example")
    facts = RelevanceFacts(
        mailbox=a_mailbox("q@x.example", owner=queue.ref),
        mailbox_owner=queue,
        folder="INBOX",
        records={"q@x.example": (queue,), "u@x.example": (a_user("u@x.example"),)},
        organization=org,
        now=T0,
    )
    decision = decide(default_rules(), message, facts)
    assert decision.trace
    assert decision.trace[-1].reason is decision.verdict.reason
