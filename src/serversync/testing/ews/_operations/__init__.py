"""One handler per EWS operation, by operation name."""

from __future__ import annotations

from collections.abc import Mapping

from serversync.testing.ews._context import Handler
from serversync.testing.ews._operations import (
    create_folder,
    create_item,
    delete_folder,
    delete_item,
    find_folder,
    find_item,
    get_folder,
    get_item,
    move_item,
    send_item,
    sync_folder_hierarchy,
    sync_folder_items,
    update_item,
)

__all__ = ["OPERATIONS"]

OPERATIONS: Mapping[str, Handler] = {
    module.OPERATION: module.handle
    for module in (
        get_folder,
        find_folder,
        create_folder,
        delete_folder,
        sync_folder_hierarchy,
        sync_folder_items,
        find_item,
        get_item,
        create_item,
        update_item,
        delete_item,
        move_item,
        send_item,
    )
}
