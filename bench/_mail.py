"""Deterministic, realistic test mail for the benchmarks.

Every message is a pure function of ``(seed, index)``: the same bytes on every machine and
in every run. Shapes follow delivered mail, not test fixtures: header blocks of 1-8 KB
(``Received`` chains, DKIM and ARC signatures, authentication results, mailing-list and
Outlook headers), RFC 2047 subjects and display names, reply threads, and bodies between
2 KB and 200 KB (log-uniform: median about 20 KB): plain text, text with an HTML
alternative, or either with one to three attachments (PDF/PNG/ZIP/DOCX-like bytes or CSV,
in base64), in seven charsets and four transfer encodings.

Bodies are the slow part to build, so a mailbox of any size draws its bodies from a pool of
``BODY_POOL`` and only the header block is made per message. Line endings are CRLF (the
form IMAP, POP3 and SMTP carry).
"""

from __future__ import annotations

import base64
import functools
import math
import quopri
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.header import Header
from email.utils import format_datetime, formataddr

import attrs

__all__ = [
    "BODY_POOL",
    "CRM_DOMAIN",
    "MailPlan",
    "crm_message_id",
    "message",
]

BODY_POOL = 1500
"""How many distinct bodies a mailbox draws from."""
CRM_DOMAIN = "contoso.example"
"""The organisation's domain: mailbox owners and the emails the CRM sent."""

_MIN_SIZE = 2 * 1024
_MAX_SIZE = 200 * 1024
_EPOCH = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)

_WORDS = [
    "account",
    "meeting",
    "invoice",
    "order",
    "shipment",
    "quarter",
    "report",
    "update",
    "project",
    "customer",
    "contract",
    "proposal",
    "review",
    "schedule",
    "budget",
    "forecast",
    "pipeline",
    "lead",
    "deal",
    "renewal",
    "support",
    "ticket",
    "issue",
    "release",
    "feature",
    "request",
    "feedback",
    "call",
    "follow-up",
    "agenda",
    "minutes",
    "summary",
    "action",
    "item",
    "deadline",
    "approval",
    "signature",
    "payment",
    "reminder",
    "discount",
    "offer",
    "quote",
    "pricing",
    "license",
    "subscription",
    "onboarding",
    "training",
    "demo",
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "for",
    "on",
    "with",
    "at",
    "by",
    "from",
    "as",
    "is",
    "are",
    "was",
    "be",
    "this",
    "that",
    "will",
    "please",
    "thanks",
    "regards",
    "best",
    "kind",
    "let",
    "me",
    "know",
    "if",
    "you",
    "have",
    "any",
    "questions",
]
_INTL = {
    "utf-8": "Grüße aus München – Straße, Größe; café, naïve; Приветствие; こんにちは; 你好 😀",
    "iso-8859-1": "Grüße aus München, Straße, Größe, café, naïve, façade, £ © ",
    "windows-1252": "Smart “quotes” – dashes — €uro … Grüße ",
    "iso-2022-jp": "こんにちは、お世話になっております。よろしくお願いします。",
    "koi8-r": "Здравствуйте, это тестовое письмо. С уважением, отдел продаж.",
}
_CHARSETS = ("us-ascii", "utf-8", "iso-8859-1", "windows-1252", "iso-2022-jp", "koi8-r")
_CHARSET_WEIGHTS = (30, 40, 10, 10, 5, 5)
_NAMES = (
    "Alice Müller",
    "Bob O'Neil",
    "Carol Nguyễn",
    "Dmitri Иванов",
    "Eve Smith",
    "Frank Zhang 张",
    "Grace Hopper",
    "Heidi Sørensen",
    "Ivan Petrov",
    "Judy Lee",
)
_DOMAINS = ("fabrikam.example", "adatum.example", "litware.example", "tailspin.example")
_MAILERS = (
    "Microsoft Outlook 16.0",
    "Apple Mail (2.3774.500.171.1.1)",
    "Mozilla Thunderbird 115.6.0",
    "Roundcube Webmail/1.6.5",
)


def _address(rng: random.Random, domain: str | None = None) -> str:
    name = rng.choice(_NAMES)
    local = name.split()[0].lower().encode("ascii", "ignore").decode() or "user"
    address = f"{local}.{rng.randint(1, 400)}@{domain or rng.choice(_DOMAINS)}"
    if rng.random() < 0.3:
        return address
    return formataddr((name, address), charset="utf-8")


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choices(_WORDS, k=count))


def _text(rng: random.Random, size: int, charset: str) -> str:
    lines: list[str] = []
    total = 0
    intl = _INTL.get(charset, "")
    while total < size:
        line = _words(rng, rng.randint(6, 14))
        if intl and rng.random() < 0.25:
            line += " " + intl
        line = line[0].upper() + line[1:] + "."
        lines.append(line)
        total += len(line) + 2
        if rng.random() < 0.15:
            lines.append("")
    if rng.random() < 0.3:
        lines += ["", "On Mon, 5 Jan 2026, someone wrote:", *("> " + p for p in lines[:5])]
    return "\r\n".join(lines) + "\r\n"


def _wrap(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _encode_text(rng: random.Random, text: str, charset: str) -> tuple[str, bytes]:
    """The Content-Transfer-Encoding and the encoded body of ``text`` in ``charset``."""
    raw = text.encode("ascii" if charset == "us-ascii" else charset, "replace")
    if charset in ("us-ascii", "iso-2022-jp"):
        return "7bit", raw
    if charset == "koi8-r":
        return "8bit", raw
    encoding = rng.choice(("quoted-printable", "base64", "8bit"))
    if encoding == "quoted-printable":
        return encoding, quopri.encodestring(raw.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
    if encoding == "base64":
        return encoding, _wrap(raw)
    return encoding, raw


def _text_part(rng: random.Random, size: int, subtype: str = "plain") -> bytes:
    charset = rng.choices(_CHARSETS, weights=_CHARSET_WEIGHTS)[0] if subtype == "plain" else "utf-8"
    text = _text(rng, size, charset)
    if subtype == "html":
        paragraphs = "".join(f"<p>{p}</p>\r\n" for p in text.split("\r\n") if p)
        text = (
            '<!DOCTYPE html><html><head><meta charset="utf-8"><style>p{font-family:Arial}'
            "</style></head><body>\r\n" + paragraphs + "</body></html>\r\n"
        )
    encoding, body = _encode_text(rng, text, charset)
    head = (
        f'Content-Type: text/{subtype}; charset="{charset}"\r\n'
        f"Content-Transfer-Encoding: {encoding}\r\n\r\n"
    )
    return head.encode("ascii") + body


def _attachment(rng: random.Random, size: int) -> bytes:
    kind = rng.choice(("pdf", "png", "csv", "docx", "zip"))
    stem = rng.choice(("Angebot_Übersicht", "invoice", "report Q3", "файл", "scan"))
    filename = f"{stem}.{kind}"
    if filename.isascii():
        disposition = f'attachment; filename="{filename}"'
    else:
        disposition = "attachment; filename*=utf-8''" + "".join(
            c if c.isascii() and c.isalnum() else "".join(f"%{b:02X}" for b in c.encode())
            for c in filename
        )
    if kind == "csv":
        rows = ["id,name,amount,currency,date"] + [
            f"{i},{rng.choice(_NAMES)},{rng.randint(1, 99999) / 100},EUR,"
            f"2026-01-{rng.randint(10, 28)}"
            for i in range(max(1, size // 48))
        ]
        body = _wrap("\n".join(rows).encode())
        content_type = 'text/csv; charset="utf-8"'
    else:
        magic = {"pdf": b"%PDF-1.7\n", "png": b"\x89PNG\r\n\x1a\n", "zip": b"PK\x03\x04"}
        body = _wrap(magic.get(kind, b"PK\x03\x04") + rng.randbytes(size))
        content_type = {
            "pdf": "application/pdf",
            "png": "image/png",
            "zip": "application/zip",
            "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        }[kind]
    head = (
        f'Content-Type: {content_type}; name="{stem.encode("ascii", "replace").decode()}.{kind}"'
        f"\r\nContent-Disposition: {disposition}\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    )
    return head.encode("utf-8") + body


def _multipart(rng: random.Random, subtype: str, parts: list[bytes]) -> bytes:
    boundary = f"----=_Part_{rng.getrandbits(64):016x}"
    out = [f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'.encode()]
    out.append(b"This is a multi-part message in MIME format.\r\n")
    for part in parts:
        out.append(f"\r\n--{boundary}\r\n".encode())
        out.append(part)
    out.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(out)


@functools.lru_cache(maxsize=BODY_POOL)
def _body(seed: int, slot: int) -> bytes:
    """A MIME body (its Content-* header lines, a blank line, the content) of body pool slot
    ``slot``."""
    rng = random.Random(f"body-{seed}-{slot}")
    target = int(math.exp(rng.uniform(math.log(_MIN_SIZE), math.log(_MAX_SIZE))))
    with_attachments = target > 20 * 1024 and rng.random() < 0.6
    text_budget = rng.randint(600, 6000) if with_attachments else max(600, target - 3000)
    if rng.random() < 0.4:
        body = _multipart(
            rng,
            "alternative",
            [_text_part(rng, text_budget // 2), _text_part(rng, text_budget // 2, "html")],
        )
    else:
        body = _text_part(rng, text_budget)
    if with_attachments:
        count = rng.choice((1, 1, 1, 2, 3))
        remaining = max(1024, target - text_budget - 2000)
        # base64 grows by 4/3: aim the encoded size at the target
        parts = [_attachment(rng, max(512, remaining * 3 // 4 // count)) for _ in range(count)]
        body = _multipart(rng, "mixed", [body, *parts])
    elif rng.random() < 0.05:
        inner = (
            f"From: {_address(rng)}\r\nSubject: original message\r\n"
            f"Content-Type: text/plain; charset=us-ascii\r\n\r\n{_text(rng, 800, 'us-ascii')}"
        ).encode()
        forward = b"Content-Type: message/rfc822\r\n\r\n" + inner
        body = _multipart(rng, "mixed", [body, forward])
    return b"MIME-Version: 1.0\r\n" + body


def crm_message_id(index: int) -> str:
    """The Message-ID of the ``index``-th email the CRM sent (what tracked mail replies to)."""
    return f"<crm-{index}.sent@{CRM_DOMAIN}>"


def _folded_signature(rng: random.Random, name: str, domain: str) -> str:
    signature = base64.b64encode(rng.randbytes(rng.choice((128, 256)))).decode()
    body_hash = base64.b64encode(rng.randbytes(32)).decode()
    chunks = [signature[i : i + 70] for i in range(0, len(signature), 70)]
    return (
        f"{name}: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain};\r\n"
        f"\ts=selector{rng.randint(1, 2)}; t={rng.randint(1_700_000_000, 1_800_000_000)};\r\n"
        "\th=from:to:subject:date:message-id:references:in-reply-to:mime-version;\r\n"
        f"\tbh={body_hash};\r\n\tb=" + "\r\n\t ".join(chunks) + "\r\n"
    )


@attrs.frozen(kw_only=True)
class MailPlan:
    """The mail of one benchmark mailbox: ``count`` messages to ``owner``.

    Every ``tracked_every``-th message (from ``tracked_offset``) answers an email the CRM
    sent (``In-Reply-To`` one of ``crm_message_id(0 .. crm_emails - 1)``), so the default
    filter ("in response to CRM email") tracks it; a third of the others answer mail the
    CRM never saw. ``tag`` keeps Message-IDs apart between mailboxes. Header blocks follow
    ``seed``; bodies come from the pool of ``body_seed``, shared by every mailbox of a run.
    """

    seed: int
    owner: str
    count: int
    tag: str = "m"
    tracked_every: int = 10
    tracked_offset: int = 3
    crm_emails: int = 200
    body_seed: int = 1

    def tracked(self, index: int) -> bool:
        """Whether message ``index`` answers a CRM email."""
        return self.tracked_every > 0 and index % self.tracked_every == self.tracked_offset

    def message_id(self, index: int) -> str:
        """The Message-ID of message ``index``."""
        return f"<{self.tag}.{index}.{self.seed}@{_DOMAINS[index % len(_DOMAINS)]}>"

    def messages(self) -> Iterator[bytes]:
        """Every message, oldest first."""
        for index in range(self.count):
            yield message(self, index)


def message(plan: MailPlan, index: int) -> bytes:
    """Message ``index`` of ``plan`` (CRLF line endings)."""
    rng = random.Random(f"head-{plan.seed}-{plan.tag}-{index}")
    domain = rng.choice(_DOMAINS)
    when = _EPOCH + timedelta(minutes=10 * index, seconds=rng.randint(0, 599))
    lines: list[str] = [f"Return-Path: <bounce-{rng.getrandbits(32):x}@{domain}>\r\n"]
    for hop in range(rng.randint(1, 4)):
        stamp = format_datetime(when - timedelta(seconds=hop))
        lines.append(
            f"Received: from mx{hop}.{domain} (mx{hop}.{domain} [192.0.2.{hop + 1}])\r\n"
            f"\tby mail.{CRM_DOMAIN} (Postfix) with ESMTPS id {rng.getrandbits(40):X}\r\n"
            f"\tfor <{plan.owner}>; {stamp}\r\n"
        )
    lines.append(
        f"Authentication-Results: mail.{CRM_DOMAIN};\r\n\tdkim=pass header.d={domain};\r\n"
        f"\tspf=pass smtp.mailfrom={domain}; dmarc=pass header.from={domain}\r\n"
    )
    if rng.random() < 0.3:
        lines.append(_folded_signature(rng, "ARC-Message-Signature", domain))
        lines.append(
            f"ARC-Seal: i=1; a=rsa-sha256; d={domain}; cv=none;\r\n\tb=" + "A" * 88 + "\r\n"
        )
    lines.append(_folded_signature(rng, "DKIM-Signature", domain))
    lines.append(f"From: {_address(rng, domain)}\r\n")
    recipients = [plan.owner] + [_address(rng) for _ in range(rng.randint(0, 2))]
    rng.shuffle(recipients)
    lines.append("To: " + ",\r\n ".join(recipients) + "\r\n")
    if rng.random() < 0.3:
        lines.append(f"Cc: {_address(rng)}, {_address(rng, CRM_DOMAIN)}\r\n")
    words = _words(rng, rng.randint(3, 9))
    choice = rng.random()
    if choice < 0.25:
        subject = Header(f"Re: {words} – Grüße ✓", "utf-8").encode(linesep="\r\n")
    elif choice < 0.35:
        subject = Header(f"Angebot für {words}", "iso-8859-1").encode(linesep="\r\n")
    else:
        subject = ("Re: " if rng.random() < 0.3 else "") + words.capitalize() + f" #{index}"
    lines.append(f"Subject: {subject}\r\n")
    lines.append(f"Date: {format_datetime(when)}\r\n")
    lines.append(f"Message-ID: {plan.message_id(index)}\r\n")
    thread: list[str] = []
    if plan.tracked(index):
        thread = [crm_message_id(rng.randrange(plan.crm_emails))]
    elif rng.random() < 0.33:
        thread = [
            f"<{rng.getrandbits(48):x}@{rng.choice(_DOMAINS)}>" for _ in range(rng.randint(1, 8))
        ]
    if thread:
        lines.append(f"In-Reply-To: {thread[-1]}\r\n")
        lines.append("References: " + "\r\n ".join(thread) + "\r\n")
    if rng.random() < 0.2:
        index_bytes = rng.randbytes(22 + 5 * rng.randint(0, 4))
        lines.append(f"Thread-Index: {base64.b64encode(index_bytes).decode()}\r\n")
        lines.append(f"X-MS-Exchange-Organization-SCL: {rng.randint(-1, 5)}\r\n")
    if rng.random() < 0.2:
        lines.append(f"List-Id: Sales team <sales.{domain}>\r\n")
        lines.append(f"List-Unsubscribe: <mailto:unsubscribe@{domain}>, <https://{domain}/u>\r\n")
    lines.append(f"X-Mailer: {rng.choice(_MAILERS)}\r\n")
    head = "".join(lines).encode("utf-8")
    return head + _body(plan.body_seed, index % BODY_POOL)
