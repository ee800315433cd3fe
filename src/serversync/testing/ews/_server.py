"""The EWS test server: HTTP, authentication, impersonation, injected faults, dispatch to
the operation handlers, and the helpers a test uses to arrange and inspect a mailbox."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import ssl
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import Message
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs

from serversync.testing.ews._context import OperationContext
from serversync.testing.ews._faults import (
    Delay,
    DropConnection,
    EwsFault,
    Fault,
    FaultPlan,
    HttpError,
    ServerBusy,
)
from serversync.testing.ews._http import HttpServer, Reply
from serversync.testing.ews._mime import props_from_mime
from serversync.testing.ews._operations import OPERATIONS
from serversync.testing.ews._render import parse_shape
from serversync.testing.ews._schema import MESSAGE
from serversync.testing.ews._store import ExchangeStore, Folder, Item, Mailbox, Principal
from serversync.testing.ews._views import FolderView, ItemView, OutboxMessage, RequestRecord
from serversync.testing.ews._xml import (
    M,
    S,
    SoapFault,
    T,
    envelope,
    fault_body,
    local_name,
    qname,
    serialize,
    t,
    text_of,
)

__all__ = ["EWS_PATH", "EwsTestServer"]

EWS_PATH = "/EWS/Exchange.asmx"
_TOKEN_SUFFIX = "/oauth2/v2.0/token"
_IMPERSONATION_KEYS = ("PrimarySmtpAddress", "SmtpAddress", "PrincipalName", "SID")


def _operation_name(request: ET.Element) -> str:
    """The operation a SOAP body element names; the availability operations name theirs
    ``...Request``."""
    return local_name(request.tag).removesuffix("Request")


def _operation_of(body: bytes) -> str:
    """The operation a SOAP request names, or "" when it names none."""
    try:
        soap_body = ET.fromstring(body).find(qname(S, "Body"))
    except ET.ParseError:
        return ""
    if soap_body is None or not len(soap_body):
        return ""
    return _operation_name(soap_body[0])


class _Outbox:
    """Sent mail: recorded for the test, and delivered to mailboxes of this server."""

    def __init__(self, server: EwsTestServer) -> None:
        self._server = server
        self.messages: list[OutboxMessage] = []

    def send(
        self,
        mailbox: Mailbox,
        mime: bytes,
        recipients: list[str],
        *,
        kind: str,
        disposition: str,
        saved_item_id: str | None,
    ) -> None:
        props = props_from_mime(mime, is_local=self._server._is_local, is_read=False)
        self.messages.append(
            OutboxMessage(
                mailbox=mailbox.address,
                recipients=tuple(recipients),
                mime=mime,
                kind=kind,
                disposition=disposition,
                saved_item_id=saved_item_id,
                message_id=text_of(props.get("InternetMessageId")) or None,
            )
        )
        if self._server.local_delivery and kind == "Message":
            for address in dict.fromkeys(a.lower() for a in recipients):
                if self._server._store.mailbox(address) is not None:
                    self._server._deliver(address, mime, "inbox", is_read=False, received=None)


class EwsTestServer:
    """An Exchange Web Services endpoint on loopback, for tests that use an unmodified EWS
    client (exchangelib) over real HTTP and SOAP.

    It keeps mailboxes in memory and answers GetFolder, FindFolder, SyncFolderHierarchy,
    SyncFolderItems, FindItem, GetItem, CreateItem, UpdateItem, DeleteItem, MoveItem and
    SendItem. Clients authenticate with HTTP Basic or an OAuth bearer token; a user with
    impersonation rights can act for any mailbox through the ExchangeImpersonation header.

    Use it as a context manager (sync or async)::

        with EwsTestServer() as server:
            server.add_mailbox("alice@contoso.example", password="secret")
            server.deliver("alice@contoso.example", raw_message_bytes)
            ... Configuration(service_endpoint=server.url, ...) ...

    ``tls`` is a server-side :class:`ssl.SSLContext` (certificate and key loaded) to serve
    HTTPS instead of HTTP. ``now`` gives the server's clock (received and modified times).
    With ``local_delivery`` (the default), mail sent to another mailbox of this server is
    delivered to its Inbox.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        local_delivery: bool = True,
    ) -> None:
        self._store = ExchangeStore(now)
        self._outbox = _Outbox(self)
        self._faults = FaultPlan()
        self._records: list[RequestRecord] = []
        self._stopping = threading.Event()
        self._http = HttpServer(self._answer, host, port, tls)
        self._started = False
        self.local_delivery = local_delivery
        scheme = "https" if tls is not None else "http"
        self.host = host
        self.port = self._http.port
        self.base_url = f"{scheme}://{host}:{self.port}"

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The EWS endpoint (``.../EWS/Exchange.asmx``): exchangelib's ``service_endpoint``."""
        return self.base_url + EWS_PATH

    @property
    def token_url(self) -> str:
        """An OAuth 2.0 token endpoint (client credentials grant) for applications added
        with :meth:`add_application`."""
        return self.base_url + "/common" + _TOKEN_SUFFIX

    def start(self) -> Self:
        """Start serving in a background thread (once per instance)."""
        if not self._started:
            self._http.start()
            self._started = True
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and join every thread."""
        self._stopping.set()
        self._http.stop()
        self._started = False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Joining the connection threads blocks; keep the event loop free meanwhile.
        await asyncio.to_thread(self.stop)

    # -- principals ---------------------------------------------------------------------

    def add_mailbox(
        self, address: str, *, password: str | None = None, display_name: str | None = None
    ) -> str:
        """A mailbox with the distinguished folders (Inbox, Sent Items, Drafts, Deleted
        Items, Outbox, Junk Email, Calendar, Contacts, Tasks) and its user, who logs in as
        ``address`` with ``password``. Returns the address."""
        with self._store.lock:
            if self._store.principal(address) is not None:
                raise ValueError(f"{address} already exists")
            self._store.add_mailbox(address, display_name or address.partition("@")[0])
            self._store.add_principal(Principal(login=address, password=password, mailbox=address))
        return address

    def add_user(
        self, login: str, *, password: str | None = None, can_impersonate: bool = False
    ) -> str:
        """A user without a mailbox, e.g. a service account with impersonation rights."""
        with self._store.lock:
            self._store.add_principal(
                Principal(login=login, password=password, can_impersonate=can_impersonate)
            )
        return login

    def add_application(
        self, client_id: str, client_secret: str, *, can_impersonate: bool = True
    ) -> str:
        """An application that gets tokens from :attr:`token_url` (client credentials)."""
        with self._store.lock:
            self._store.add_principal(
                Principal(
                    login=client_id, client_secret=client_secret, can_impersonate=can_impersonate
                )
            )
        return client_id

    def allow_impersonation(self, login: str, allowed: bool = True) -> None:
        """Give (or take) the ApplicationImpersonation role."""
        with self._store.lock:
            self._principal(login).can_impersonate = allowed

    def grant_full_access(self, login: str, mailbox: str) -> None:
        """Let ``login`` open ``mailbox`` as a delegate (full mailbox access)."""
        with self._store.lock:
            self._store.require_mailbox(mailbox)
            self._principal(login).full_access.add(mailbox.lower())

    def set_password(self, login: str, password: str | None) -> None:
        """Change a user's password (None: no Basic login at all)."""
        with self._store.lock:
            self._principal(login).password = password

    def issue_token(self, login: str) -> str:
        """A bearer token that authenticates as ``login``."""
        with self._store.lock:
            self._principal(login)
            return self._store.issue_token(login)

    def revoke_token(self, token: str) -> None:
        """Make a bearer token invalid: requests with it get HTTP 401."""
        with self._store.lock:
            self._store.tokens.pop(token, None)

    def _principal(self, login: str) -> Principal:
        principal = self._store.principal(login)
        if principal is None:
            raise KeyError(f"no user {login}")
        return principal

    # -- mailbox content ----------------------------------------------------------------

    def _folder(self, mailbox: str, folder: str) -> tuple[Mailbox, Folder]:
        owner = self._store.require_mailbox(mailbox)
        folder_id = owner.distinguished.get(folder, folder)
        found = owner.folders.get(folder_id)
        if found is None:
            raise KeyError(f"no folder {folder} in {mailbox}")
        return owner, found

    def _is_local(self, address: str) -> bool:
        return self._store.mailbox(address) is not None

    def _deliver(
        self, mailbox: str, mime: bytes, folder: str, *, is_read: bool, received: datetime | None
    ) -> ItemView:
        owner, target = self._folder(mailbox, folder)
        props = props_from_mime(mime, is_local=self._is_local, is_read=is_read)
        item = self._store.add_item(target, MESSAGE, props, mime=mime, received=received)
        return ItemView.of(item, owner)

    def deliver(
        self,
        mailbox: str,
        mime: bytes,
        *,
        folder: str = "inbox",
        is_read: bool = False,
        received: datetime | None = None,
    ) -> ItemView:
        """Put a message (RFC 5322 bytes) into a folder (a distinguished name such as
        ``inbox``, or a folder id), as mail delivery does."""
        with self._store.lock:
            return self._deliver(mailbox, mime, folder, is_read=is_read, received=received)

    def create_folder(
        self,
        mailbox: str,
        name: str,
        *,
        parent: str = "inbox",
        folder_class: str | None = "IPF.Note",
    ) -> FolderView:
        """A folder under ``parent`` (a distinguished name or a folder id)."""
        with self._store.lock:
            owner, parent_folder = self._folder(mailbox, parent)
            folder = self._store.create_folder(owner, parent_folder, name, folder_class)
            return FolderView.of(folder, owner)

    def rename_folder(self, folder_id: str, name: str) -> None:
        """Rename a folder; its id stays."""
        with self._store.lock:
            folder = self._existing_folder(folder_id)
            self._store.rename_folder(folder, name)

    def move_folder(self, folder_id: str, parent: str) -> None:
        """Move a folder under ``parent`` (a distinguished name or folder id of its mailbox)."""
        with self._store.lock:
            folder = self._existing_folder(folder_id)
            _, new_parent = self._folder(folder.mailbox, parent)
            self._store.move_folder(folder, new_parent)

    def delete_folder(self, folder_id: str) -> None:
        """Delete a folder, its subfolders and their items."""
        with self._store.lock:
            self._store.delete_folder(self._existing_folder(folder_id))

    def _existing_folder(self, folder_id: str) -> Folder:
        folder = self._store.folder(folder_id)
        if folder is None:
            raise KeyError(f"no folder {folder_id}")
        return folder

    def folder(self, mailbox: str, folder: str) -> FolderView:
        """A folder by distinguished name (``inbox``, ``calendar``, ...) or id."""
        with self._store.lock:
            owner, found = self._folder(mailbox, folder)
            return FolderView.of(found, owner)

    def folders(self, mailbox: str) -> list[FolderView]:
        """Every folder of a mailbox, the distinguished ones included."""
        with self._store.lock:
            owner = self._store.require_mailbox(mailbox)
            return [FolderView.of(f, owner) for f in owner.folders.values()]

    def items(self, mailbox: str, folder: str = "inbox") -> list[ItemView]:
        """The items of a folder, oldest first."""
        with self._store.lock:
            owner, found = self._folder(mailbox, folder)
            items = sorted(owner.items_in(found.id), key=lambda i: (i.received, i.created))
            return [ItemView.of(i, owner) for i in items]

    def item(self, item_id: str) -> ItemView | None:
        """An item by id, or None when there is no such item (any more)."""
        with self._store.lock:
            item = self._store.item(item_id)
            return None if item is None else ItemView.of(item, self._store.mailboxes[item.mailbox])

    def set_properties(self, item_id: str, **properties: str | ET.Element | None) -> ItemView:
        """Change an item as a user in Outlook would: text values (``Subject="x"``,
        ``IsRead="true"``), whole ``t:`` elements, or None to remove a property. The item
        gets a new change key and the change shows in SyncFolderItems."""
        with self._store.lock:
            item = self._existing_item(item_id)
            for name, value in properties.items():
                if value is None:
                    item.props.pop(name, None)
                elif isinstance(value, str):
                    item.props[name] = t(name, value)
                else:
                    item.props[name] = value
            if item.kind == MESSAGE and set(properties) - {"IsRead", "Categories"}:
                item.mime = None  # content-bearing properties changed: new MIME content
            self._store.touch_item(item, properties)
            return ItemView.of(item, self._store.mailboxes[item.mailbox])

    def move_item(self, item_id: str, folder: str) -> ItemView:
        """Move an item within its mailbox; it gets a new id, as in Exchange."""
        with self._store.lock:
            item = self._existing_item(item_id)
            owner, target = self._folder(item.mailbox, folder)
            return ItemView.of(self._store.move_item(item, target), owner)

    def delete_item(self, item_id: str) -> None:
        """Delete an item for good, as a user emptying it from Deleted Items would."""
        with self._store.lock:
            self._store.remove_item(self._existing_item(item_id))

    def _existing_item(self, item_id: str) -> Item:
        item = self._store.item(item_id)
        if item is None:
            raise KeyError(f"no item {item_id}")
        return item

    def reset_sync_states(self, mailbox: str) -> None:
        """Forget every sync state issued for ``mailbox``: the next SyncFolderItems or
        SyncFolderHierarchy with one answers ErrorInvalidSyncStateData."""
        with self._store.lock:
            self._store.require_mailbox(mailbox).sync_epoch += 1

    # -- what happened --------------------------------------------------------------------

    @property
    def outbox(self) -> tuple[OutboxMessage, ...]:
        """Everything sent, oldest first."""
        with self._store.lock:
            return tuple(self._outbox.messages)

    @property
    def requests(self) -> tuple[RequestRecord, ...]:
        """Every request answered, oldest first."""
        with self._store.lock:
            return tuple(self._records)

    def operations(self) -> list[str]:
        """The operation of every request answered, oldest first."""
        return [r.operation for r in self.requests]

    def clear_requests(self) -> None:
        """Forget the requests recorded so far."""
        with self._store.lock:
            self._records.clear()

    # -- faults -------------------------------------------------------------------------

    def inject(self, fault: Fault, *, times: int = 1, operation: str | None = None) -> None:
        """Answer the next ``times`` requests (of ``operation``, or of any) with ``fault``.
        Authentication is checked first: a request with wrong credentials gets its 401."""
        self._faults.add(fault, times, operation)

    def clear_faults(self) -> None:
        """Drop the faults still waiting."""
        self._faults.clear()

    @property
    def pending_faults(self) -> int:
        """Requests still to be failed by :meth:`inject`."""
        return self._faults.remaining

    # -- HTTP ---------------------------------------------------------------------------

    def _record(self, record: RequestRecord) -> None:
        with self._store.lock:
            self._records.append(record)

    def _answer(self, path: str, headers: Message, body: bytes) -> Reply:
        route = path.split("?", 1)[0].rstrip("/").lower()
        if route.endswith(_TOKEN_SUFFIX):
            return self._token(headers, body)
        if route != EWS_PATH.lower():
            return Reply(404, b"Not Found", {"Content-Type": "text/plain"})
        principal = self._authenticate(headers.get("Authorization", ""))
        if principal is None:
            self._record(RequestRecord(_operation_of(body), None, None, frozenset(), 401, None))
            challenge = 'Basic realm="EWS test server"'
            if headers.get("Authorization", "").startswith("Bearer"):
                challenge = 'Bearer error="invalid_token"'
            return Reply(401, b"", {"WWW-Authenticate": challenge, "Content-Type": "text/plain"})
        return self._soap(principal, body)

    def _authenticate(self, authorization: str) -> Principal | None:
        scheme, _, value = authorization.partition(" ")
        with self._store.lock:
            if scheme.lower() == "basic":
                try:
                    login, _, password = (
                        base64.b64decode(value, validate=True).decode().partition(":")
                    )
                except (binascii.Error, UnicodeDecodeError):
                    return None
                principal = self._store.principal(login)
                if (
                    principal is None
                    or principal.password is None
                    or principal.password != password
                ):
                    return None
                return principal
            if scheme.lower() == "bearer":
                holder = self._store.tokens.get(value.strip())
                return self._store.principal(holder) if holder is not None else None
        return None

    def _token(self, headers: Message, body: bytes) -> Reply:
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        scheme, _, value = headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            with contextlib.suppress(binascii.Error, UnicodeDecodeError):  # then: unknown client
                client_id, _, secret = base64.b64decode(value).decode().partition(":")
        with self._store.lock:
            principal = self._store.principal(client_id) if client_id else None
            valid = (
                principal is not None
                and principal.client_secret is not None
                and principal.client_secret == secret
            )
            if form.get("grant_type") != "client_credentials" or not valid:
                self._record(RequestRecord("token", None, None, frozenset(), 401, "invalid_client"))
                error = json.dumps(
                    {"error": "invalid_client", "error_description": "Unknown client or secret."}
                )
                return Reply(401, error.encode(), {"Content-Type": "application/json"})
            token = self._store.issue_token(client_id)
            self._records.append(RequestRecord("token", client_id, None, frozenset(), 200, None))
        answer = {
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": token,
        }
        return Reply(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})

    def _soap(self, principal: Principal, body: bytes) -> Reply:
        operation, impersonated, field_uris = "", None, frozenset[str]()
        try:
            try:
                env = ET.fromstring(body)
            except ET.ParseError as error:
                raise SoapFault(
                    "ErrorSchemaValidation", f"The request is not well-formed XML: {error}"
                ) from None
            soap_body = env.find(qname(S, "Body"))
            if soap_body is None or not len(soap_body):
                raise SoapFault("ErrorSchemaValidation", "The request has no SOAP body.")
            request = soap_body[0]
            operation = _operation_name(request)
            shape = request.find(qname(M, "ItemShape"))
            if shape is None:
                shape = request.find(qname(M, "FolderShape"))
            field_uris = parse_shape(shape).field_uris
            impersonated = self._impersonation_target(env.find(qname(S, "Header")))
            fault = self._faults.take(operation)
            if fault is not None and not isinstance(fault, Delay):
                return self._fault_reply(fault, principal, operation, impersonated, field_uris)
            if isinstance(fault, Delay) and self._stopping.wait(fault.seconds):
                return Reply(0, drop=True)  # stopping: give up on the delayed answer
            handler = OPERATIONS.get(operation)
            if handler is None:
                raise SoapFault(
                    "ErrorInvalidOperation", f"The EWS test server does not implement {operation}."
                )
            with self._store.lock:
                actor = self._actor(principal, impersonated)
                answer = handler(request, OperationContext(self._store, actor, self._outbox))
                payload = serialize(envelope(answer))
                self._records.append(
                    RequestRecord(operation, principal.login, impersonated, field_uris, 200, None)
                )
            return Reply(200, payload)
        except SoapFault as fault:
            self._record(
                RequestRecord(operation, principal.login, impersonated, field_uris, 500, fault.code)
            )
            return Reply(500, serialize(fault_body(fault)))
        except Exception as error:  # a bug in this server: answer it, visibly
            text = f"The EWS test server failed: {type(error).__name__}: {error}"
            self._record(
                RequestRecord(
                    operation,
                    principal.login,
                    impersonated,
                    field_uris,
                    500,
                    "ErrorInternalServerError",
                )
            )
            return Reply(500, serialize(fault_body(SoapFault("ErrorInternalServerError", text))))

    def _impersonation_target(self, header: ET.Element | None) -> str | None:
        if header is None:
            return None
        sid = header.find(f"{qname(T, 'ExchangeImpersonation')}/{qname(T, 'ConnectingSID')}")
        if sid is None:
            return None
        for key in _IMPERSONATION_KEYS:
            value = text_of(sid.find(qname(T, key))).strip()
            if value:
                return value
        raise SoapFault(
            "ErrorInvalidExchangeImpersonationHeaderData", "ConnectingSID names nobody."
        )

    def _actor(self, principal: Principal, impersonated: str | None) -> Principal:
        """Who the request acts as (impersonation checked), under the store lock."""
        if impersonated is None:
            return principal
        if not principal.can_impersonate:
            raise SoapFault(
                "ErrorImpersonateUserDenied",
                "The account does not have permission to impersonate the requested user.",
            )
        target = self._store.principal(impersonated)
        if target is None or target.mailbox is None:
            mailbox = self._store.mailbox(impersonated)
            if mailbox is None:
                raise SoapFault(
                    "ErrorNonExistentMailbox",
                    f"The SMTP address {impersonated} has no mailbox associated with it.",
                )
            target = self._store.principal(mailbox.address) or Principal(
                login=mailbox.address, mailbox=mailbox.address
            )
        return target

    def _fault_reply(
        self,
        fault: Fault,
        principal: Principal,
        operation: str,
        impersonated: str | None,
        field_uris: frozenset[str],
    ) -> Reply:
        def record(status: int, error: str) -> None:
            self._record(
                RequestRecord(operation, principal.login, impersonated, field_uris, status, error)
            )

        if isinstance(fault, ServerBusy):
            record(500, "ErrorServerBusy")
            soap = SoapFault(
                "ErrorServerBusy",
                "The server cannot service this request right now. Try again later.",
                message_xml={"BackOffMilliseconds": str(fault.back_off_ms)},
            )
            return Reply(500, serialize(fault_body(soap)))
        if isinstance(fault, EwsFault):
            record(500, fault.code)
            return Reply(500, serialize(fault_body(SoapFault(fault.code, fault.text))))
        if isinstance(fault, HttpError):
            record(fault.status, f"HTTP {fault.status}")
            page = f"<html><body><h1>HTTP {fault.status}</h1></body></html>".encode()
            return Reply(fault.status, page, {"Content-Type": "text/html"})
        if isinstance(fault, DropConnection):
            record(0, "DropConnection")
            return Reply(0, drop=True)
        raise TypeError(f"not a fault: {fault!r}")
