"""A composed message as a Graph JSON draft (pure): body, recipients, custom and threading
headers, attachments, and the byte ranges of an upload."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from serversync.adapters.transports.graph._headers import (
    IN_REPLY_TO_PROPERTY,
    REFERENCES_PROPERTY,
)
from serversync.adapters.transports.graph._json_draft import (
    UPLOAD_CHUNK,
    json_draft,
    upload_ranges,
)
from serversync.model import MessageId, OutgoingMessage

MID = MessageId("<big-1@contoso.example>")


def message(*, html: bool = True) -> OutgoingMessage:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@contoso.example>"
    msg["To"] = "Jane <jane@fabrikam.example>, bob@fabrikam.example"
    msg["Cc"] = "carol@fabrikam.example"
    msg["Reply-To"] = "support@contoso.example"
    msg["Subject"] = "Plans"
    msg["Message-ID"] = MID
    msg["In-Reply-To"] = "<q@fabrikam.example>"
    msg["References"] = "<p@fabrikam.example> <q@fabrikam.example>"
    msg["X-Case"] = "CAS-7"
    msg.set_content("plain text")
    if html:
        msg.add_alternative("<p>html text</p>", subtype="html")
        html_part = msg.get_payload()[1]  # type: ignore[index]
        assert isinstance(html_part, EmailMessage)
        html_part.add_related(
            b"\x89PNGlogo", maintype="image", subtype="png", cid="<logo@contoso.example>"
        )
    msg.add_attachment(b"%PDF-1.7 plans", maintype="application", subtype="pdf", filename="p.pdf")
    return OutgoingMessage(
        message_id=MID,
        sender="alice@contoso.example",
        recipients=(
            "jane@fabrikam.example",
            "bob@fabrikam.example",
            "carol@fabrikam.example",
            "audit@contoso.example",
        ),
        data=msg.as_bytes(),
    )


def test_the_html_body_recipients_and_headers_become_draft_properties() -> None:
    draft = json_draft(message())
    body = draft.message
    assert body["subject"] == "Plans"
    assert body["body"]["contentType"] == "html"
    assert "html text" in body["body"]["content"]
    assert body["internetMessageId"] == MID
    assert [r["emailAddress"]["address"] for r in body["toRecipients"]] == [
        "jane@fabrikam.example",
        "bob@fabrikam.example",
    ]
    assert body["toRecipients"][0]["emailAddress"]["name"] == "Jane"
    assert [r["emailAddress"]["address"] for r in body["ccRecipients"]] == [
        "carol@fabrikam.example"
    ]
    assert [r["emailAddress"]["address"] for r in body["bccRecipients"]] == [
        "audit@contoso.example"
    ], "envelope-only recipients are Bcc"
    assert body["replyTo"][0]["emailAddress"]["address"] == "support@contoso.example"
    assert body["from"]["emailAddress"]["address"] == "alice@contoso.example"
    assert body["internetMessageHeaders"] == [{"name": "X-Case", "value": "CAS-7"}]
    props = {p["id"]: p["value"] for p in body["singleValueExtendedProperties"]}
    assert props == {
        IN_REPLY_TO_PROPERTY: "<q@fabrikam.example>",
        REFERENCES_PROPERTY: "<p@fabrikam.example> <q@fabrikam.example>",
    }


def test_every_part_but_the_body_and_its_plain_alternative_is_an_attachment() -> None:
    draft = json_draft(message())
    assert [(a.name, a.content_type, a.is_inline, a.content_id) for a in draft.attachments] == [
        ("attachment-1", "image/png", True, "logo@contoso.example"),
        ("p.pdf", "application/pdf", False, None),
    ]
    assert draft.attachments[1].data == b"%PDF-1.7 plans"
    item = draft.attachments[1].item()
    assert item == {
        "attachmentType": "file",
        "name": "p.pdf",
        "size": 14,
        "contentType": "application/pdf",
        "isInline": False,
    }
    assert draft.attachments[0].file_attachment()["contentId"] == "logo@contoso.example"


def test_a_plain_body_stays_text() -> None:
    draft = json_draft(message(html=False))
    assert draft.message["body"] == {"contentType": "text", "content": "plain text\n"}
    assert [a.name for a in draft.attachments] == ["p.pdf"]


def test_upload_ranges_cover_every_byte_once_in_chunks() -> None:
    size = 2 * UPLOAD_CHUNK + 5
    ranges = upload_ranges(size)
    assert ranges == [
        (0, UPLOAD_CHUNK - 1),
        (UPLOAD_CHUNK, 2 * UPLOAD_CHUNK - 1),
        (2 * UPLOAD_CHUNK, size - 1),
    ]
    assert UPLOAD_CHUNK % 327_680 == 0
    assert UPLOAD_CHUNK < 4 * 1024 * 1024
    assert upload_ranges(0) == []
    with pytest.raises(ValueError, match="positive"):
        upload_ranges(10, 0)
