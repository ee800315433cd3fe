"""The fake Graph's large-message features: JSON drafts, attachments added to a draft, and
attachment upload sessions (byte ranges ``PUT`` to a pre-authenticated ``uploadUrl``, with
``nextExpectedRanges`` and an expiry).

A JSON draft is kept as its JSON and attachments, and its MIME (what the fake sends and
files) is written again from them after every change, so that the rest of the fake works
on MIME alone.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, make_msgid
from typing import Any, Final
from urllib.parse import quote, unquote

import attrs

__all__ = [
    "MAX_ATTACHMENT_BYTES",
    "MAX_RANGE_BYTES",
    "MAX_REQUEST_BYTES",
    "FakeAttachment",
    "JsonDraftState",
    "LargeMessages",
    "UploadSession",
]

MAX_REQUEST_BYTES: Final = 4 * 1024 * 1024
"""Graph's request size limit (about 4 MB): a larger body is answered 413."""
MAX_RANGE_BYTES: Final = 4 * 1024 * 1024
"""The largest byte range one upload ``PUT`` may carry."""
MAX_ATTACHMENT_BYTES: Final = 150 * 1024 * 1024
"""The largest attachment an upload session takes."""
_CONTENT_RANGE: Final = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_SESSION_PATH: Final = re.compile(
    r"/Users\('([^']+)'\)/Messages\('([^']+)'\)/AttachmentSessions\('([^']+)'\)$"
)
_IN_REPLY_TO: Final = "string 0x1042"
_REFERENCES: Final = "string 0x1039"


@attrs.frozen(kw_only=True)
class FakeAttachment:
    """An attachment of a fake JSON draft."""

    id: str
    name: str
    content_type: str
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    is_inline: bool = False
    content_id: str | None = None


@attrs.define
class JsonDraftState:
    """A draft created from JSON: its properties and its attachments."""

    address: str
    message: dict[str, Any]
    attachments: list[FakeAttachment] = attrs.Factory(list)


@attrs.define
class UploadSession:
    """An attachment upload session: where its bytes go and how many have come."""

    id: str
    secret: str
    address: str
    message_id: str
    name: str
    content_type: str
    size: int
    is_inline: bool
    content_id: str | None
    expires: float
    received: bytearray = attrs.Factory(bytearray)

    def next_expected(self) -> list[str]:
        """Graph's ``nextExpectedRanges``: the rest, from the first byte not received."""
        return [f"{len(self.received)}-"] if len(self.received) < self.size else []


def _addresses(values: Any) -> str | None:
    out = []
    for r in values or ():
        email = r.get("emailAddress") if isinstance(r, dict) else None
        if isinstance(email, dict) and email.get("address"):
            out.append(formataddr((str(email.get("name") or ""), str(email["address"]))))
    return ", ".join(out) if out else None


def _head(message: EmailMessage) -> bytes:
    """A message's header lines, folded and encoded for the wire."""
    return b"".join(SMTP.fold_binary(k, v) for k, v in message.items())


def _attachment_part(a: FakeAttachment, boundary: str) -> bytes:
    part = EmailMessage()
    part["Content-Type"] = a.content_type
    part.set_param("name", a.name)
    part["Content-Disposition"] = "inline" if a.is_inline else "attachment"
    part.set_param("filename", a.name, header="Content-Disposition")
    part["Content-Transfer-Encoding"] = "base64"
    if a.content_id:
        part["Content-ID"] = f"<{a.content_id}>"
    head = _head(part)
    # base64 by hand: the email generator takes seconds for a large attachment.
    data = base64.encodebytes(a.data).replace(b"\n", b"\r\n")
    return b"--" + boundary.encode() + b"\r\n" + head + b"\r\n" + data


def draft_mime(state: JsonDraftState, *, now: datetime) -> bytes:
    """The MIME of a JSON draft, as Exchange would send it."""
    props = {
        str(p.get("id", "")).lower(): str(p.get("value", ""))
        for p in state.message.get("singleValueExtendedProperties") or ()
        if isinstance(p, dict)
    }
    msg = EmailMessage()
    author = state.message.get("from")
    msg["From"] = _addresses([author]) if author else state.address
    for header, key in (("To", "toRecipients"), ("Cc", "ccRecipients"), ("Reply-To", "replyTo")):
        value = _addresses(state.message.get(key))
        if value:
            msg[header] = value
    msg["Subject"] = str(state.message.get("subject") or "")
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = str(state.message.get("internetMessageId") or make_msgid())
    if props.get(_IN_REPLY_TO):
        msg["In-Reply-To"] = props[_IN_REPLY_TO]
    if props.get(_REFERENCES):
        msg["References"] = props[_REFERENCES]
    for h in state.message.get("internetMessageHeaders") or ():
        msg[str(h["name"])] = str(h["value"])
    body = state.message.get("body") or {}
    content = str(body.get("content") or "")
    subtype = "html" if str(body.get("contentType", "")).lower() == "html" else "plain"
    if not state.attachments:
        msg.set_content(content, subtype=subtype)
        return msg.as_bytes(policy=SMTP)
    boundary = "=_fake_graph_" + secrets.token_hex(8)
    msg["MIME-Version"] = "1.0"
    msg["Content-Type"] = f'multipart/mixed; boundary="{boundary}"'
    text = EmailMessage()
    text.set_content(content, subtype=subtype)
    del text["MIME-Version"]
    parts = [b"--" + boundary.encode() + b"\r\n" + text.as_bytes(policy=SMTP)]
    parts += [_attachment_part(a, boundary) for a in state.attachments]
    head = _head(msg) + b"\r\n"
    return (
        head
        + b"\r\n".join(p.rstrip(b"\r\n") for p in parts)
        + b"\r\n--"
        + boundary.encode()
        + b"--\r\n"
    )


def _error(status: int, code: str, message: str = "") -> dict[str, Any]:
    return {"status": status, "json": {"error": {"code": code, "message": message or code}}}


class LargeMessages:
    """JSON drafts and upload sessions of a fake tenant (its lock is the caller's)."""

    def __init__(self, *, new_id: Callable[[str], str]) -> None:
        self._new_id = new_id
        self.drafts: dict[str, JsonDraftState] = {}
        self.sessions: dict[str, UploadSession] = {}
        self.session_lifetime = timedelta(minutes=15)
        self.upload_host: str | None = None

    def draft(self, address: str, body: bytes) -> JsonDraftState | str:
        """A JSON draft from a ``POST /messages`` body, or why it is refused."""
        try:
            message = json.loads(body or b"{}")
        except ValueError:
            return "the body is no JSON"
        if not isinstance(message, dict):
            return "the body is no JSON object"
        for h in message.get("internetMessageHeaders") or ():
            if not str(h.get("name", "")).lower().startswith("x-"):
                return f"InvalidInternetMessageHeader: {h.get('name')!r} is no x- header"
        return JsonDraftState(address=address, message=message)

    def attachment(self, body: bytes) -> FakeAttachment | str:
        """A file attachment from a ``POST …/attachments`` body, or why it is refused."""
        try:
            item = json.loads(body or b"{}")
            data = base64.b64decode(str(item.get("contentBytes") or ""), validate=True)
        except (ValueError, binascii.Error, AttributeError):
            return "contentBytes is no base64"
        if item.get("@odata.type") != "#microsoft.graph.fileAttachment":
            return "only file attachments are served"
        return FakeAttachment(
            id=self._new_id("att"),
            name=str(item.get("name") or "attachment"),
            content_type=str(item.get("contentType") or "application/octet-stream"),
            data=data,
            is_inline=bool(item.get("isInline")),
            content_id=item.get("contentId"),
        )

    def open_session(self, address: str, message_id: str, body: bytes) -> UploadSession | str:
        """An upload session for ``createUploadSession``, or why it is refused."""
        try:
            item = json.loads(body or b"{}").get("AttachmentItem") or {}
            size = int(item["size"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return "AttachmentItem with a size is required"
        if item.get("attachmentType", "file") != "file":
            return "only file attachments are served"
        if not 0 < size <= MAX_ATTACHMENT_BYTES:
            return f"the attachment size must be between 1 and {MAX_ATTACHMENT_BYTES} bytes"
        session = UploadSession(
            id=self._new_id("upload"),
            secret=secrets.token_urlsafe(24),
            address=address,
            message_id=message_id,
            name=str(item.get("name") or "attachment"),
            content_type=str(item.get("contentType") or "application/octet-stream"),
            size=size,
            is_inline=bool(item.get("isInline")),
            content_id=item.get("contentId"),
            expires=time.monotonic() + self.session_lifetime.total_seconds(),
        )
        self.sessions[session.id] = session
        return session

    def upload_url(self, session: UploadSession, base: str) -> str:
        """Where the session's ranges go: Outlook's REST path on the fake's host (or on
        :attr:`upload_host`)."""
        scheme, _, rest = base.partition("://")
        host = self.upload_host or rest.split("/")[0]
        return (
            f"{scheme}://{host}/api/v2.0/Users('{quote(session.address, safe='@')}')"
            f"/Messages('{session.message_id}')/AttachmentSessions('{session.id}')"
            f"?authtoken={session.secret}"
        )

    @staticmethod
    def is_upload(path: str) -> bool:
        """Whether ``path`` is an upload session's."""
        return _SESSION_PATH.search(unquote(path)) is not None

    def put(
        self,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> tuple[dict[str, Any], UploadSession | None]:
        """One range ``PUT``: the answer (status, JSON, headers) and the session once its
        last byte came."""
        match = _SESSION_PATH.search(unquote(path))
        session = self.sessions.get(match.group(3)) if match else None
        if session is None or not secrets.compare_digest(
            query.get("authtoken", ""), session.secret
        ):
            return _error(404, "ErrorItemNotFound", "The upload session was not found."), None
        if "authorization" in headers:
            # Graph's documentation: the upload URL is pre-authenticated, and an
            # Authorization header may make the upload fail.
            return _error(
                401, "InvalidAuthenticationToken", "Do not send Authorization to uploadUrl."
            ), None
        if time.monotonic() > session.expires:
            del self.sessions[session.id]
            return _error(404, "ErrorItemNotFound", "The upload session expired."), None
        found = _CONTENT_RANGE.match(headers.get("content-range", "").strip())
        if found is None:
            return _error(400, "InvalidContentRange", "Content-Range is required."), None
        first, last, total = (int(g) for g in found.groups())
        if len(body) > MAX_RANGE_BYTES:
            return _error(413, "RequestEntityTooLarge", "A range is at most 4 MB."), None
        if total != session.size or last < first or last - first + 1 != len(body):
            return _error(400, "InvalidContentRange", "The range does not match."), None
        if first != len(session.received):
            answer = _error(
                416, "InvalidRange", "The range does not start at the next expected byte."
            )
            answer["json"]["nextExpectedRanges"] = session.next_expected()
            return answer, None
        session.received += body
        if len(session.received) < session.size:
            return {
                "status": 200,
                "json": {
                    "expirationDateTime": datetime.fromtimestamp(
                        time.time() + session.expires - time.monotonic(), UTC
                    ).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "nextExpectedRanges": session.next_expected(),
                },
            }, None
        del self.sessions[session.id]
        return {"status": 201, "json": None}, session
