"""DeleteFolder: a user folder with its subfolders and items (distinguished folders stay)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from serversync.testing.ews._context import OperationContext
from serversync.testing.ews._operations._common import child, response
from serversync.testing.ews._xml import EwsError, error_message, success_message

OPERATION = "DeleteFolder"


def handle(request: ET.Element, ctx: OperationContext) -> ET.Element:
    messages = []
    for folder in ctx.folders(child(request, "FolderIds")):
        try:
            if isinstance(folder, EwsError):
                raise folder
            if folder.distinguished is not None:
                raise EwsError(
                    "ErrorDeleteDistinguishedFolder", "Distinguished folders cannot be deleted."
                )
            ctx.store.delete_folder(folder)
        except EwsError as error:
            messages.append(error_message(OPERATION, error))
            continue
        messages.append(success_message(OPERATION))
    return response(OPERATION, messages)
