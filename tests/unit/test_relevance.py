"""Pure relevance decisions: :func:`serversync.relevance.evaluate` with the default rules over
hand-built facts (email-relevance.md §1 filtering methods and reason codes, §2 correlation)."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import pytest

from serversync.mime import parse_headers
from serversync.model import (
    ActivityId,
    CorrelationMethod,
    CrmRecord,
    DecisionReason,
    EmailActivity,
    EmailDirection,
    EmailStatus,
    IncomingFilteringMethod,
    MessageId,
    ParsedHeaders,
    RecordRef,
)
from serversync.ports import Reject, RelevanceFacts, RelevanceRule, Track, Verdict
from serversync.relevance import correlate, default_rules, evaluate
from serversync.relevance.tokens import find_tokens
from serversync.settings import (
    OrganizationSettings,
    SmartMatchingSettings,
    TrackingTokenSettings,
)
from serversync.testing import a_contact, a_mailbox, a_queue, a_user, an_account, an_email

ALL = IncomingFilteringMethod.ALL_EMAIL_MESSAGES
IN_RESPONSE = IncomingFilteringMethod.IN_RESPONSE_TO_CRM_EMAIL
FROM_CUSTOMERS = IncomingFilteringMethod.FROM_LEADS_CONTACTS_ACCOUNTS
FROM_RECORDS = IncomingFilteringMethod.FROM_EMAIL_ENABLED_RECORDS
NONE = IncomingFilteringMethod.NO_EMAIL_MESSAGES

USER = "alice@contoso.example"
OTHER_USER = "bob@contoso.example"
QUEUE = "support@contoso.example"
CUSTOMER = "jane@fabrikam.example"
STRANGER = "someone@elsewhere.example"
DISTRIBUTION_LIST = "sales-team@contoso.example"

OPPORTUNITY = RecordRef("opportunity", "opp-42")
SENT_ID = "<quote-42@contoso.example>"


def _headers(
    *,
    sender: str = CUSTOMER,
    to: Sequence[str] = (USER,),
    cc: Sequence[str] = (),
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    headers: Sequence[tuple[str, str]] = (),
) -> ParsedHeaders:
    return parse_headers(
        an_email(
            sender=sender,
            to=to,
            cc=cc,
            in_reply_to=in_reply_to,
            references=references,
            headers=headers,
        )
    )


def _facts(
    owner: CrmRecord | None,
    *records: CrmRecord,
    thread: Sequence[EmailActivity] = (),
    organization: OrganizationSettings | None = None,
) -> RelevanceFacts:
    """Facts for the mailbox of ``owner``; ``records`` (and the owner) resolve by address."""
    by_address: dict[str, list[CrmRecord]] = {}
    for record in (*([owner] if owner is not None else []), *records):
        entries = by_address.setdefault(record.email_address, [])
        if record not in entries:
            entries.append(record)
    address = owner.email_address if owner is not None else "forward@contoso.example"
    return RelevanceFacts(
        mailbox=a_mailbox(address, owner=owner.ref if owner is not None else None),
        mailbox_owner=owner,
        folder="INBOX",
        records={a: tuple(rs) for a, rs in by_address.items()},
        candidates=tuple(thread),
        organization=organization or OrganizationSettings(),
    )


def _sent_email(
    message_id: str = SENT_ID,
    *,
    activity_id: str = "email-sent-1",
    regarding: RecordRef | None = OPPORTUNITY,
) -> EmailActivity:
    return EmailActivity(
        id=ActivityId(activity_id),
        direction=EmailDirection.OUTGOING,
        status=EmailStatus.SENT,
        subject="Quote",
        message_id=MessageId(message_id),
        regarding=regarding,
        owner=RecordRef("systemuser", USER),
    )


def _decide(message: ParsedHeaders, facts: RelevanceFacts) -> Verdict:
    return evaluate(default_rules(), message, facts)


def _tracked(verdict: Verdict) -> Track:
    assert isinstance(verdict, Track), f"expected Track, got {verdict!r}"
    return verdict


def _rejected(verdict: Verdict) -> Reject:
    assert isinstance(verdict, Reject), f"expected Reject, got {verdict!r}"
    return verdict


# -- filter 0: all email messages ---------------------------------------------------------------


def test_all_email_messages_accepts_any_message_with_the_accepting_user() -> None:
    user = a_user(USER, filtering=ALL)

    track = _tracked(_decide(_headers(sender=STRANGER), _facts(user)))

    assert track.reason is DecisionReason.ACCEPT_ALL
    assert track.accepting_entity == user.ref
    assert track.rule == "filtering-method"
    assert track.correlation is None


def test_all_email_messages_still_correlates_a_reply() -> None:
    user = a_user(USER, filtering=ALL)
    sent = _sent_email()

    track = _tracked(_decide(_headers(in_reply_to=SENT_ID), _facts(user, thread=[sent])))

    assert track.reason is DecisionReason.ACCEPT_ALL
    assert track.correlation is not None
    assert track.correlation.correlated_activity_id == sent.id
    assert track.correlation.regarding == OPPORTUNITY


def test_all_email_messages_queue_accepts_with_the_queue_as_accepting_entity() -> None:
    queue = a_queue(QUEUE, filtering=ALL)

    track = _tracked(_decide(_headers(to=[QUEUE]), _facts(queue)))

    assert track.reason is DecisionReason.ACCEPT_ALL
    assert track.accepting_entity == queue.ref


# -- filter 1: in response to CRM email --------------------------------------------------------


def test_reply_by_in_reply_to_is_a_correlation_match_linked_to_the_sent_email() -> None:
    user = a_user(USER, filtering=IN_RESPONSE)
    sent = _sent_email()

    track = _tracked(_decide(_headers(in_reply_to=SENT_ID), _facts(user, thread=[sent])))

    assert track.reason is DecisionReason.CORRELATION_MATCH
    assert track.accepting_entity == user.ref
    correlation = track.correlation
    assert correlation is not None
    assert correlation.method is CorrelationMethod.IN_REPLY_TO
    assert correlation.correlated_activity_id == sent.id
    assert correlation.parent_activity_id == sent.id
    assert correlation.regarding == OPPORTUNITY
    assert correlation.owner == sent.owner


def test_reply_matching_only_through_references_correlates() -> None:
    user = a_user(USER, filtering=IN_RESPONSE)
    sent = _sent_email()
    message = _headers(references=["<unrelated@elsewhere.example>", SENT_ID])
    assert message.in_reply_to == ()

    track = _tracked(_decide(message, _facts(user, thread=[sent])))

    assert track.reason is DecisionReason.CORRELATION_MATCH
    assert track.correlation is not None
    assert track.correlation.correlated_activity_id == sent.id
    assert track.correlation.regarding == OPPORTUNITY


def test_in_reply_to_wins_over_references() -> None:
    user = a_user(USER, filtering=IN_RESPONSE)
    older = _sent_email("<older@contoso.example>", activity_id="email-older")
    newer = _sent_email("<newer@contoso.example>", activity_id="email-newer")
    message = _headers(
        in_reply_to="<older@contoso.example>",
        references=["<newer@contoso.example>", "<older@contoso.example>"],
    )

    track = _tracked(_decide(message, _facts(user, thread=[newer, older])))

    assert track.correlation is not None
    assert track.correlation.correlated_activity_id == older.id


def test_references_are_tried_newest_first() -> None:
    user = a_user(USER, filtering=IN_RESPONSE)
    first = _sent_email("<first@contoso.example>", activity_id="email-first")
    last = _sent_email("<last@contoso.example>", activity_id="email-last")
    message = _headers(references=["<first@contoso.example>", "<last@contoso.example>"])

    track = _tracked(_decide(message, _facts(user, thread=[first, last])))

    assert track.correlation is not None
    assert track.correlation.correlated_activity_id == last.id


def test_correlation_copies_an_empty_regarding_as_empty() -> None:
    user = a_user(USER, filtering=IN_RESPONSE)
    sent = _sent_email(regarding=None)

    track = _tracked(_decide(_headers(in_reply_to=SENT_ID), _facts(user, thread=[sent])))

    assert track.correlation is not None
    assert track.correlation.regarding is None


def test_new_message_without_a_correlated_email_is_no_correlation_match() -> None:
    user = a_user(USER, filtering=IN_RESPONSE)

    reject = _rejected(_decide(_headers(), _facts(user, a_contact(CUSTOMER))))

    assert reject.reason is DecisionReason.NO_CORRELATION_MATCH


def test_reply_to_an_email_not_in_the_crm_is_no_correlation_match() -> None:
    user = a_user(USER, filtering=IN_RESPONSE)
    sent = _sent_email()

    message = _headers(in_reply_to="<not-tracked@elsewhere.example>")
    reject = _rejected(_decide(message, _facts(user, thread=[sent])))

    assert reject.reason is DecisionReason.NO_CORRELATION_MATCH


def test_disabled_correlation_makes_in_response_reject_a_reply() -> None:
    user = a_user(USER, filtering=IN_RESPONSE)
    org = OrganizationSettings(email_correlation_enabled=False)
    facts = _facts(user, thread=[_sent_email()], organization=org)

    reject = _rejected(_decide(_headers(in_reply_to=SENT_ID), facts))

    assert reject.reason is DecisionReason.NO_CORRELATION_MATCH


def test_disabled_correlation_leaves_accepted_mail_uncorrelated() -> None:
    user = a_user(USER, filtering=ALL)
    org = OrganizationSettings(email_correlation_enabled=False)
    facts = _facts(user, thread=[_sent_email()], organization=org)

    track = _tracked(_decide(_headers(in_reply_to=SENT_ID), facts))

    assert track.reason is DecisionReason.ACCEPT_ALL
    assert track.correlation is None


def test_addresses_match_whatever_their_case_and_display_name() -> None:
    user = a_user(USER, filtering=FROM_CUSTOMERS)
    message = _headers(
        sender="Jane Doe <JANE@Fabrikam.Example>", to=["Alice <ALICE@contoso.EXAMPLE>"]
    )

    track = _tracked(_decide(message, _facts(user, a_contact(CUSTOMER))))

    assert track.reason is DecisionReason.SENDER_MATCH
    assert track.accepting_entity == user.ref


# -- no CRM user or queue among the recipients -------------------------------------------------


def test_no_crm_user_or_queue_recipient_is_no_recipient_match() -> None:
    user = a_user(USER, filtering=IN_RESPONSE)

    message = _headers(to=[STRANGER])
    reject = _rejected(_decide(message, _facts(user, a_contact(STRANGER))))

    assert reject.reason is DecisionReason.NO_RECIPIENT_MATCH
    assert reject.rule == "no-acceptance"


def test_mail_without_any_resolved_record_is_no_recipient_match() -> None:
    reject = _rejected(_decide(_headers(to=[STRANGER]), _facts(None)))

    assert reject.reason is DecisionReason.NO_RECIPIENT_MATCH


def test_inactive_user_recipient_does_not_count_as_a_crm_recipient() -> None:
    inactive = a_user(OTHER_USER, filtering=ALL, is_active=False)

    message = _headers(to=[OTHER_USER])
    reject = _rejected(_decide(message, _facts(None, inactive)))

    assert reject.reason is DecisionReason.NO_RECIPIENT_MATCH


# -- filters 2 and 3: by sender ------------------------------------------------------------------


@pytest.mark.parametrize(
    "sender",
    [
        a_contact(CUSTOMER),
        an_account(CUSTOMER),
        attrs.evolve(a_contact(CUSTOMER), ref=RecordRef("lead", CUSTOMER)),
    ],
    ids=["contact", "account", "lead"],
)
def test_leads_contacts_accounts_accepts_a_customer_sender(sender: CrmRecord) -> None:
    user = a_user(USER, filtering=FROM_CUSTOMERS)

    track = _tracked(_decide(_headers(sender=CUSTOMER), _facts(user, sender)))

    assert track.reason is DecisionReason.SENDER_MATCH
    assert track.accepting_entity == user.ref


def test_leads_contacts_accounts_rejects_a_custom_table_sender() -> None:
    user = a_user(USER, filtering=FROM_CUSTOMERS)
    supplier = attrs.evolve(a_contact(CUSTOMER), ref=RecordRef("new_supplier", "s-1"))

    reject = _rejected(_decide(_headers(sender=CUSTOMER), _facts(user, supplier)))

    assert reject.reason is DecisionReason.NO_CORRELATION_MATCH


def test_leads_contacts_accounts_rejects_an_unknown_sender() -> None:
    user = a_user(USER, filtering=FROM_CUSTOMERS)

    reject = _rejected(_decide(_headers(sender=STRANGER), _facts(user)))

    assert reject.reason is DecisionReason.NO_CORRELATION_MATCH


def test_email_enabled_records_accepts_a_custom_table_sender() -> None:
    user = a_user(USER, filtering=FROM_RECORDS)
    supplier = attrs.evolve(a_contact(CUSTOMER), ref=RecordRef("new_supplier", "s-1"))

    track = _tracked(_decide(_headers(sender=CUSTOMER), _facts(user, supplier)))

    assert track.reason is DecisionReason.SENDER_MATCH
    assert track.accepting_entity == user.ref


def test_email_enabled_records_accepts_a_contact_sender() -> None:
    user = a_user(USER, filtering=FROM_RECORDS)

    track = _tracked(_decide(_headers(sender=CUSTOMER), _facts(user, a_contact(CUSTOMER))))

    assert track.reason is DecisionReason.SENDER_MATCH


def test_email_enabled_records_rejects_an_unknown_sender() -> None:
    user = a_user(USER, filtering=FROM_RECORDS)

    reject = _rejected(_decide(_headers(sender=STRANGER), _facts(user)))

    assert reject.reason is DecisionReason.NO_CORRELATION_MATCH


def test_sender_match_also_carries_the_correlation_of_a_reply() -> None:
    user = a_user(USER, filtering=FROM_CUSTOMERS)
    sent = _sent_email()
    facts = _facts(user, a_contact(CUSTOMER), thread=[sent])

    track = _tracked(_decide(_headers(in_reply_to=SENT_ID), facts))

    assert track.reason is DecisionReason.SENDER_MATCH
    assert track.correlation is not None
    assert track.correlation.correlated_activity_id == sent.id


# -- filter 4: no email messages -----------------------------------------------------------------


def test_no_email_messages_never_accepts() -> None:
    user = a_user(USER, filtering=NONE)
    sent = _sent_email()
    facts = _facts(user, a_contact(CUSTOMER), thread=[sent])

    for message in (_headers(), _headers(in_reply_to=SENT_ID), _headers(sender=STRANGER)):
        reject = _rejected(_decide(message, facts))
        assert reject.reason is DecisionReason.NO_CORRELATION_MATCH


# -- acceptance across recipients (§1.2) ---------------------------------------------------------


def test_queue_accepting_all_tracks_mail_the_processing_user_would_not() -> None:
    # email-relevance.md §12 behaviour 4.
    user = a_user(USER, filtering=NONE)
    queue = a_queue(QUEUE, filtering=ALL)

    track = _tracked(_decide(_headers(to=[USER, QUEUE]), _facts(user, queue)))

    assert track.reason is DecisionReason.ACCEPT_ALL
    assert track.accepting_entity == queue.ref


def test_another_recipient_in_cc_may_accept() -> None:
    user = a_user(USER, filtering=IN_RESPONSE)
    colleague = a_user(OTHER_USER, filtering=FROM_CUSTOMERS)
    facts = _facts(user, colleague, a_contact(CUSTOMER))

    track = _tracked(_decide(_headers(to=[USER], cc=[OTHER_USER]), facts))

    assert track.reason is DecisionReason.SENDER_MATCH
    assert track.accepting_entity == colleague.ref


def test_processing_mailbox_owner_is_asked_first() -> None:
    user = a_user(USER, filtering=ALL)
    queue = a_queue(QUEUE, filtering=ALL)

    track = _tracked(_decide(_headers(to=[QUEUE, USER]), _facts(user, queue)))

    assert track.accepting_entity == user.ref


def test_nobody_accepting_among_several_crm_recipients_is_no_correlation_match() -> None:
    user = a_user(USER, filtering=NONE)
    queue = a_queue(QUEUE, filtering=IN_RESPONSE)

    reject = _rejected(_decide(_headers(to=[USER, QUEUE]), _facts(user, queue)))

    assert reject.reason is DecisionReason.NO_CORRELATION_MATCH


def test_queue_without_own_filter_uses_the_organisation_default() -> None:
    queue = attrs.evolve(a_queue(QUEUE), incoming_filtering_method=None)
    in_response = _facts(queue)
    accept_all = _facts(
        queue, organization=OrganizationSettings(default_queue_filtering_method=ALL)
    )

    assert _rejected(_decide(_headers(to=[QUEUE]), in_response)).reason is (
        DecisionReason.NO_CORRELATION_MATCH
    )
    track = _tracked(_decide(_headers(to=[QUEUE]), accept_all))
    assert track.reason is DecisionReason.ACCEPT_ALL
    assert track.accepting_entity == queue.ref


# -- the processing mailbox is not a visible recipient (distribution list, Bcc) -------------------


def test_hidden_mailbox_owner_accepting_all_tracks_distribution_list_mail() -> None:
    user = a_user(USER, filtering=ALL)

    track = _tracked(_decide(_headers(to=[DISTRIBUTION_LIST]), _facts(user)))

    assert track.reason is DecisionReason.ACCEPT_ALL
    assert track.accepting_entity == user.ref


def test_hidden_mailbox_owner_in_response_does_not_accept_a_reply() -> None:
    user = a_user(USER, filtering=IN_RESPONSE)
    facts = _facts(user, thread=[_sent_email()])

    reject = _rejected(_decide(_headers(to=[DISTRIBUTION_LIST], in_reply_to=SENT_ID), facts))

    assert reject.reason is DecisionReason.NO_RECIPIENT_MATCH


@pytest.mark.parametrize("filtering", [FROM_CUSTOMERS, FROM_RECORDS])
def test_hidden_mailbox_owner_filtering_by_sender_does_not_accept(
    filtering: IncomingFilteringMethod,
) -> None:
    user = a_user(USER, filtering=filtering)
    facts = _facts(user, a_contact(CUSTOMER))

    reject = _rejected(_decide(_headers(to=[DISTRIBUTION_LIST]), facts))

    assert reject.reason is DecisionReason.NO_RECIPIENT_MATCH


def test_inactive_hidden_mailbox_owner_does_not_accept() -> None:
    user = a_user(USER, filtering=ALL, is_active=False)

    reject = _rejected(_decide(_headers(to=[DISTRIBUTION_LIST]), _facts(user)))

    assert reject.reason is DecisionReason.NO_RECIPIENT_MATCH


# -- invalid sender ------------------------------------------------------------------------------


def test_message_without_a_sender_address_is_invalid_sender() -> None:
    user = a_user(USER, filtering=ALL)
    message = _headers(sender="not an address")
    assert message.sender is None

    reject = _rejected(_decide(message, _facts(user)))

    assert reject.reason is DecisionReason.INVALID_SENDER
    assert reject.rule == "invalid-sender"


def test_message_without_from_header_is_invalid_sender() -> None:
    user = a_user(USER, filtering=ALL)
    message = parse_headers(b"To: alice@contoso.example\r\nSubject: no from\r\n\r\nbody\r\n")
    assert message.sender is None

    reject = _rejected(_decide(message, _facts(user)))

    assert reject.reason is DecisionReason.INVALID_SENDER


# -- custom rules --------------------------------------------------------------------------------


@attrs.define
class RecordingRule:
    """A host rule that records the messages it saw and answers a fixed verdict."""

    verdict: Verdict | None
    name: str = "host-rule"
    seen: list[ParsedHeaders] = attrs.field(factory=list)

    def evaluate(self, message: ParsedHeaders, facts: RelevanceFacts) -> Verdict | None:
        self.seen.append(message)
        return self.verdict


HOST_REJECT = Reject(
    reason=DecisionReason.UNKNOWN, rule="host-rule", explanation="auto-submitted mail"
)
HOST_TRACK = Track(reason=DecisionReason.SENDER_MATCH, rule="host-rule", explanation="VIP sender")


def test_custom_rule_before_the_defaults_wins() -> None:
    user = a_user(USER, filtering=ALL)
    rule = RecordingRule(HOST_REJECT)
    rules: list[RelevanceRule] = [rule, *default_rules()]

    verdict = evaluate(rules, _headers(headers=[("Auto-Submitted", "auto-replied")]), _facts(user))

    assert verdict == HOST_REJECT
    assert len(rule.seen) == 1
    assert rule.seen[0].auto_submitted == "auto-replied"


def test_custom_rule_before_the_defaults_may_accept_what_they_reject() -> None:
    user = a_user(USER, filtering=IN_RESPONSE)
    rules: list[RelevanceRule] = [RecordingRule(HOST_TRACK), *default_rules()]

    assert evaluate(rules, _headers(), _facts(user)) == HOST_TRACK


def test_custom_rule_before_the_defaults_that_abstains_leaves_them_to_decide() -> None:
    user = a_user(USER, filtering=ALL)
    rule = RecordingRule(None)
    rules: list[RelevanceRule] = [rule, *default_rules()]

    track = _tracked(evaluate(rules, _headers(), _facts(user)))

    assert track.reason is DecisionReason.ACCEPT_ALL
    assert len(rule.seen) == 1


def test_custom_rule_after_the_defaults_is_not_asked_when_they_accept() -> None:
    user = a_user(USER, filtering=ALL)
    rule = RecordingRule(HOST_REJECT)
    rules: list[RelevanceRule] = [*default_rules(), rule]

    track = _tracked(evaluate(rules, _headers(), _facts(user)))

    assert track.reason is DecisionReason.ACCEPT_ALL
    assert rule.seen == []


def test_custom_rule_after_the_defaults_is_not_asked_when_they_reject() -> None:
    user = a_user(USER, filtering=ALL)
    rule = RecordingRule(HOST_TRACK)
    rules: list[RelevanceRule] = [*default_rules(), rule]

    reject = _rejected(evaluate(rules, _headers(sender="not an address"), _facts(user)))

    assert reject.reason is DecisionReason.INVALID_SENDER
    assert rule.seen == []


def test_custom_rule_after_the_defaults_decides_when_they_abstain() -> None:
    user = a_user(USER, filtering=IN_RESPONSE)
    rule = RecordingRule(HOST_TRACK)
    rules: list[RelevanceRule] = [*default_rules(), rule]

    assert evaluate(rules, _headers(), _facts(user)) == HOST_TRACK
    assert len(rule.seen) == 1


def test_custom_rule_after_the_defaults_that_abstains_gives_the_fallback_rejection() -> None:
    user = a_user(USER, filtering=IN_RESPONSE)
    rules: list[RelevanceRule] = [*default_rules(), RecordingRule(None)]

    reject = _rejected(evaluate(rules, _headers(), _facts(user)))

    assert reject.reason is DecisionReason.NO_CORRELATION_MATCH


def test_default_rules_run_in_dynamics_order() -> None:
    assert [rule.name for rule in default_rules()] == [
        "loop-guard",
        "invalid-sender",
        "internal-email",
        "folder-tracking",
        "filtering-method",
    ]


def test_a_token_glued_to_other_text_is_not_a_token() -> None:
    tokens = TrackingTokenSettings()
    assert find_tokens("Quote XCRM:0001005", tokens) == ()
    assert find_tokens("Quote CRM:0001005", tokens) == ("CRM:0001005",)


def test_smart_matching_without_a_clock_looks_at_every_candidate() -> None:
    org = OrganizationSettings(smart_matching=SmartMatchingSettings(enabled=True))
    message = parse_headers(an_email(sender=OTHER_USER, to=[USER], subject="RE: Widgets"))
    facts = RelevanceFacts(
        mailbox=a_mailbox(USER),
        mailbox_owner=None,
        folder="INBOX",
        records={},
        organization=org,
    )
    assert facts.now is None
    assert correlate(message, facts) is None
