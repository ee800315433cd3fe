"""GetFolder: folders by id or distinguished name."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from serversync.testing.ews._context import OperationContext
from serversync.testing.ews._operations._common import child, response
from serversync.testing.ews._render import parse_shape, render_folder
from serversync.testing.ews._xml import EwsError, error_message, m, success_message

OPERATION = "GetFolder"


def handle(request: ET.Element, ctx: OperationContext) -> ET.Element:
    shape = parse_shape(child(request, "FolderShape"))
    messages = []
    for folder in ctx.folders(child(request, "FolderIds")):
        if isinstance(folder, EwsError):
            messages.append(error_message(OPERATION, folder))
            continue
        mailbox = ctx.store.mailbox_of_folder(folder)
        rendered = render_folder(folder, mailbox, shape)
        messages.append(success_message(OPERATION, [m("Folders", children=[rendered])]))
    return response(OPERATION, messages)
