"""What an operation handler gets: the store, who is acting, and the lookups every
operation shares (folder and item ids, with the access checks Exchange makes)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Protocol

import attrs

from serversync.testing.ews._store import ExchangeStore, Folder, Item, Mailbox, Principal
from serversync.testing.ews._xml import EwsError, T, local_name, qname, text_of

__all__ = ["Handler", "OperationContext", "Outbox"]


class Outbox(Protocol):
    """Where sent messages go: the server's outbox record and local delivery."""

    def send(
        self,
        mailbox: Mailbox,
        mime: bytes,
        recipients: list[str],
        *,
        kind: str,
        disposition: str,
        saved_item_id: str | None,
    ) -> None: ...


@attrs.frozen
class OperationContext:
    """One request's view of the server."""

    store: ExchangeStore
    actor: Principal
    """Who acts: the impersonated user, or the authenticated one."""
    outbox: Outbox

    def mailbox_for(self, address: str | None) -> Mailbox:
        """A mailbox the actor may open: its own (``address`` None) or one it has full
        access to."""
        if address is None:
            if self.actor.mailbox is None:
                raise EwsError("ErrorNonExistentMailbox", f"{self.actor.login} has no mailbox.")
            address = self.actor.mailbox
        mailbox = self.store.mailbox(address)
        if mailbox is None:
            raise EwsError(
                "ErrorNonExistentMailbox",
                f"The SMTP address {address} has no mailbox associated with it.",
            )
        self.check_access(mailbox)
        return mailbox

    def check_access(self, mailbox: Mailbox) -> None:
        own = (
            self.actor.mailbox is not None and self.actor.mailbox.lower() == mailbox.address.lower()
        )
        if not own and mailbox.address.lower() not in self.actor.full_access:
            raise EwsError(
                "ErrorAccessDenied", "Access is denied. Check credentials and try again."
            )

    def folder(self, elem: ET.Element) -> Folder:
        """The folder a ``t:FolderId`` or ``t:DistinguishedFolderId`` names."""
        kind = local_name(elem.tag)
        if kind == "DistinguishedFolderId":
            owner = elem.find(qname(T, "Mailbox"))
            address = text_of(owner.find(qname(T, "EmailAddress"))) if owner is not None else None
            mailbox = self.mailbox_for(address or None)
            folder_id = mailbox.distinguished.get(elem.get("Id", ""))
            if folder_id is None:
                raise EwsError(
                    "ErrorFolderNotFound", "The specified folder could not be found in the store."
                )
            return mailbox.folders[folder_id]
        if kind == "FolderId":
            folder = self.store.folder(elem.get("Id", ""))
            if folder is None:
                raise EwsError(
                    "ErrorFolderNotFound", "The specified folder could not be found in the store."
                )
            self.check_access(self.store.mailbox_of_folder(folder))
            return folder
        raise EwsError(
            "ErrorInvalidOperation", f"The EWS test server does not support {kind} here."
        )

    def folders(self, container: ET.Element | None) -> list[Folder | EwsError]:
        """Each folder id of a container element, or the error it gives."""
        out: list[Folder | EwsError] = []
        for elem in container if container is not None else ():
            try:
                out.append(self.folder(elem))
            except EwsError as error:
                out.append(error)
        return out

    def item(self, elem: ET.Element) -> Item:
        """The item a ``t:ItemId`` names, the occurrence of a ``t:OccurrenceItemId``
        (master id and 1-based index), or the master of a ``t:RecurringMasterItemId``."""
        kind = local_name(elem.tag)
        if kind == "OccurrenceItemId":
            master = self._stored(elem.get("RecurringMasterId", ""))
            try:
                index = int(elem.get("InstanceIndex", ""))
            except ValueError:
                raise EwsError(
                    "ErrorInvalidIdMalformed", "InstanceIndex is not a number."
                ) from None
            return self.store.occurrence(master, index)
        if kind == "RecurringMasterItemId":
            occurrence = self._stored(elem.get("OccurrenceId", ""))
            if occurrence.master_id is None:
                raise EwsError("ErrorItemNotFound", "The specified object is not an occurrence.")
            return self._stored(occurrence.master_id)
        if kind != "ItemId":
            raise EwsError("ErrorInvalidOperation", f"The EWS test server does not support {kind}.")
        return self._stored(elem.get("Id", ""))

    def _stored(self, item_id: str) -> Item:
        item = self.store.item(item_id)
        if item is None:
            raise EwsError("ErrorItemNotFound", "The specified object was not found in the store.")
        self.check_access(self.store.mailboxes[item.mailbox])
        return item

    def mailbox_of(self, item: Item) -> Mailbox:
        return self.store.mailboxes[item.mailbox]

    def is_local(self, address: str) -> bool:
        return self.store.mailbox(address) is not None


Handler = Callable[[ET.Element, OperationContext], ET.Element]
"""One EWS operation: the request element (``m:GetFolder``, ...) to the response element
(``m:GetFolderResponse``)."""
