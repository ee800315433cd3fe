"""Mail through exchangelib: listing and filtering the inbox, MIME download, sending
(send only, send and save, drafts), read flags, moving and deleting."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy

import pytest
from exchangelib import FileAttachment, Mailbox, Message  # type: ignore[import-untyped]
from exchangelib.errors import (  # type: ignore[import-untyped]
    ErrorInvalidRecipients,
    ErrorItemNotFound,
)

from serversync.testing.ews import EwsTestServer
from tests.integration.ews.conftest import ALICE, BOB, Connect, raw_message

pytestmark = pytest.mark.integration


def test_inbox_listing_filters_and_mime_download(ews: EwsTestServer, connect: Connect) -> None:
    delivered = [raw_message(n) for n in range(3)]
    for n, mime in enumerate(delivered):
        ews.deliver(ALICE, mime, received=datetime(2026, 1, 5, 9, n, tzinfo=UTC), is_read=n == 0)
    account = connect()
    inbox = account.inbox

    assert [m.subject for m in inbox.all().only("subject")] == ["hello 2", "hello 1", "hello 0"]
    assert [m.subject for m in inbox.all().order_by("subject").only("subject")] == [
        "hello 0",
        "hello 1",
        "hello 2",
    ]
    assert [m.subject for m in inbox.filter(subject="hello 1")] == ["hello 1"]
    assert inbox.filter(is_read=False).count() == 2
    later = datetime(2026, 1, 5, 9, 1, tzinfo=UTC)
    assert {m.subject for m in inbox.filter(datetime_received__gte=later).only("subject")} == {
        "hello 1",
        "hello 2",
    }
    assert [m.subject for m in inbox.filter(subject__icontains="LO 2").only("subject")] == [
        "hello 2"
    ]
    assert list(inbox.filter(subject__contains="LO 2")) == []  # case-sensitive

    listed = list(inbox.all().only("subject"))
    fetched = list(
        account.fetch(ids=listed, only_fields=["mime_content", "author", "to_recipients"])
    )
    assert [m.mime_content for m in fetched] == delivered[::-1]
    assert fetched[0].author.email_address == "bob@fabrikam.example"
    assert [r.email_address for r in fetched[0].to_recipients] == [ALICE]


def test_find_item_pages_through_a_large_folder(ews: EwsTestServer, connect: Connect) -> None:
    for n in range(7):
        ews.deliver(ALICE, raw_message(n))
    account = connect()
    ews.clear_requests()

    query = account.inbox.all().only("subject")
    query.page_size = 3
    subjects = [m.subject for m in query]

    assert sorted(subjects) == [f"hello {n}" for n in range(7)]
    assert ews.operations().count("FindItem") == 3


def test_summaries_carry_no_addresses_bodies_or_mime(ews: EwsTestServer, connect: Connect) -> None:
    ews.deliver(ALICE, raw_message(1))
    account = connect()

    [(kind, summary)] = list(
        account.inbox.sync_items(only_fields=["subject", "author", "to_recipients", "body"])
    )
    [full] = account.fetch(ids=[summary], only_fields=["author", "to_recipients", "body"])

    assert kind == "create"
    assert summary.subject == "hello 1"
    assert summary.author.name == "Bob Fabrikam"
    assert summary.author.email_address is None
    assert summary.to_recipients is None
    assert summary.body is None
    assert full.author.email_address == "bob@fabrikam.example"
    assert full.body.strip() == "body 1"


def test_send_only_leaves_no_copy(ews: EwsTestServer, connect: Connect) -> None:
    account = connect()
    message = Message(
        account=account,
        subject="quote",
        body="Here is the quote.",
        to_recipients=[Mailbox(email_address="carol@fabrikam.example")],
    )

    message.send(save_copy=False)

    [sent] = ews.outbox
    assert sent.disposition == "SendOnly"
    assert sent.recipients == ("carol@fabrikam.example",)
    assert sent.saved_item_id is None
    parsed = email.message_from_bytes(sent.mime, policy=policy.default)
    assert parsed["Subject"] == "quote"
    assert parsed["From"].addresses[0].addr_spec == ALICE
    assert parsed.get_content().strip() == "Here is the quote."
    assert ews.items(ALICE, "sentitems") == []


def test_send_and_save_keeps_the_copy_with_the_same_message_id(
    ews: EwsTestServer, connect: Connect
) -> None:
    account = connect()
    message = Message(
        account=account,
        folder=account.sent,
        subject="order",
        body="Order 7",
        to_recipients=[Mailbox(email_address="carol@fabrikam.example")],
        cc_recipients=[Mailbox(email_address=BOB)],
        message_id="<order-7@contoso.example>",
    )
    message.attach(FileAttachment(name="order.txt", content=b"7 widgets"))

    message.send_and_save()

    [sent] = ews.outbox
    assert sent.disposition == "SendAndSaveCopy"
    assert sent.message_id == "<order-7@contoso.example>"
    assert set(sent.recipients) == {"carol@fabrikam.example", BOB}
    [copy] = ews.items(ALICE, "sentitems")
    assert copy.id == sent.saved_item_id
    assert copy.message_id == "<order-7@contoso.example>"
    assert copy.is_read
    assert copy.mime == sent.mime
    [found] = account.sent.filter(message_id="<order-7@contoso.example>")
    assert found.subject == "order"
    assert found.has_attachments
    attachment = email.message_from_bytes(sent.mime, policy=policy.default)
    [part] = list(attachment.iter_attachments())
    assert part.get_filename() == "order.txt"
    assert part.get_content() == "7 widgets"
    # bob's mailbox is on this server: the message was delivered to his inbox
    [delivered] = ews.items(BOB)
    assert delivered.message_id == "<order-7@contoso.example>"


def test_a_message_sent_as_mime_keeps_its_bytes(ews: EwsTestServer, connect: Connect) -> None:
    account = connect()
    mime = raw_message(9, to="carol@fabrikam.example", sender=ALICE, subject="as composed")

    Message(account=account, folder=account.sent, mime_content=mime).send_and_save()

    [sent] = ews.outbox
    assert sent.mime == mime
    assert sent.recipients == ("carol@fabrikam.example",)
    [copy] = ews.items(ALICE, "sentitems")
    assert copy.subject == "as composed"
    assert copy.message_id == "<9.test@fabrikam.example>"


def test_a_saved_draft_is_sent_later(ews: EwsTestServer, connect: Connect) -> None:
    account = connect()
    draft = Message(
        account=account,
        folder=account.drafts,
        subject="draft",
        body="later",
        to_recipients=[Mailbox(email_address="carol@fabrikam.example")],
    )
    draft.save()
    [stored] = ews.items(ALICE, "drafts")
    assert stored.properties["IsDraft"] == "true"
    nothing_sent = ews.outbox
    assert nothing_sent == ()

    draft.send()

    assert ews.items(ALICE, "drafts") == []
    [sent] = ews.outbox
    assert sent.disposition == "SendItem"
    [copy] = ews.items(ALICE, "sentitems")
    assert copy.subject == "draft"
    assert copy.properties["IsDraft"] == "false"


def test_sending_without_recipients_is_refused(ews: EwsTestServer, connect: Connect) -> None:
    account = connect()
    with pytest.raises(ErrorInvalidRecipients, match="At least one recipient"):
        Message(account=account, subject="nobody", body="x").send(save_copy=False)
    assert ews.outbox == ()


def test_read_flag_categories_move_and_delete(ews: EwsTestServer, connect: Connect) -> None:
    first = ews.deliver(ALICE, raw_message(1))
    ews.deliver(ALICE, raw_message(2))
    tracked = ews.create_folder(ALICE, "Tracked")
    account = connect()
    one, two = sorted(account.inbox.all(), key=lambda m: m.subject)
    changekey = one.changekey

    one.is_read = True
    one.categories = ["Tracked to CRM"]
    one.save(update_fields=["is_read", "categories"])

    stored = ews.item(first.id)
    assert stored is not None
    assert stored.is_read
    assert stored.categories == ("Tracked to CRM",)
    assert one.changekey != changekey
    assert stored.changekey == one.changekey

    old_id = one.id
    one.move(account.inbox / "Tracked")
    assert one.id != old_id
    assert [i.id for i in ews.items(ALICE, tracked.id)] == [one.id]
    [missing] = account.fetch(ids=[(old_id, None)])
    assert isinstance(missing, ErrorItemNotFound)

    two.move_to_trash()
    assert [i.subject for i in ews.items(ALICE, "deleteditems")] == ["hello 2"]
    one.delete()
    assert ews.items(ALICE, tracked.id) == []
    assert ews.items(ALICE) == []
