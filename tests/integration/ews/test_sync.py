"""SyncFolderItems through exchangelib: the sync state is a position, each call answers
the changes after it (folded per item), in pages of MaxChangesReturned."""

from __future__ import annotations

from typing import Any

import pytest
from exchangelib.errors import ErrorInvalidSyncStateData  # type: ignore[import-untyped]

from serversync.testing.ews import EwsTestServer
from tests.integration.ews.conftest import ALICE, Connect, raw_message

pytestmark = pytest.mark.integration


def summarize(changes: list[tuple[str, Any]]) -> list[tuple[str, str]]:
    """(change, subject or id) for each change, sorted."""
    out = []
    for kind, item in changes:
        if kind == "delete":
            out.append((kind, str(item.id)))
        elif kind == "read_flag_change":
            item_id, is_read = item
            out.append((kind, f"{item_id.id} read={is_read}"))
        else:
            out.append((kind, str(item.subject)))
    return sorted(out)


def test_a_second_sync_answers_only_new_changes(ews: EwsTestServer, connect: Connect) -> None:
    first = ews.deliver(ALICE, raw_message(1))
    second = ews.deliver(ALICE, raw_message(2))
    third = ews.deliver(ALICE, raw_message(3))
    inbox = connect().inbox

    assert summarize(list(inbox.sync_items())) == [
        ("create", "hello 1"),
        ("create", "hello 2"),
        ("create", "hello 3"),
    ]
    state = inbox.item_sync_state
    assert list(inbox.sync_items()) == []
    assert inbox.item_sync_state == state

    ews.deliver(ALICE, raw_message(4))
    ews.set_properties(first.id, Subject="hello 1 (edited)")
    ews.set_properties(second.id, IsRead="true")
    ews.delete_item(third.id)
    fifth = ews.deliver(ALICE, raw_message(5))
    ews.delete_item(fifth.id)  # created and deleted between two syncs: not reported

    changes = summarize(list(inbox.sync_items()))
    assert changes == sorted(
        [
            ("create", "hello 4"),
            ("update", "hello 1 (edited)"),
            ("read_flag_change", f"{second.id} read=True"),
            ("delete", third.id),
        ]
    )
    assert list(inbox.sync_items()) == []
    # A state is a position: syncing again from the old one answers the same changes.
    assert summarize(list(inbox.sync_items(sync_state=state))) == changes


def test_changes_come_in_pages_of_max_changes_returned(
    ews: EwsTestServer, connect: Connect
) -> None:
    for n in range(5):
        ews.deliver(ALICE, raw_message(n))
    inbox = connect().inbox
    ews.clear_requests()

    changes = list(inbox.sync_items(max_changes_returned=2))

    assert summarize(changes) == [("create", f"hello {n}") for n in range(5)]
    assert ews.operations() == ["SyncFolderItems"] * 3


def test_moved_items_leave_one_folder_and_enter_another(
    ews: EwsTestServer, connect: Connect
) -> None:
    item = ews.deliver(ALICE, raw_message(1))
    folder = ews.create_folder(ALICE, "Customers")
    account = connect()
    inbox, customers = account.inbox, account.inbox / "Customers"
    list(inbox.sync_items())
    list(customers.sync_items())

    moved = ews.move_item(item.id, folder.id)

    assert summarize(list(inbox.sync_items())) == [("delete", item.id)]
    assert summarize(list(customers.sync_items())) == [("create", "hello 1")]
    assert moved.id != item.id


def test_ignored_items_are_left_out(ews: EwsTestServer, connect: Connect) -> None:
    ews.deliver(ALICE, raw_message(1))
    skipped = ews.deliver(ALICE, raw_message(2))
    inbox = connect().inbox

    changes = list(inbox.sync_items(ignore=[(skipped.id, skipped.changekey)]))

    assert summarize(changes) == [("create", "hello 1")]


def test_an_unknown_or_reset_sync_state_is_refused(ews: EwsTestServer, connect: Connect) -> None:
    ews.deliver(ALICE, raw_message(1))
    inbox = connect().inbox
    list(inbox.sync_items())
    state = inbox.item_sync_state

    with pytest.raises(ErrorInvalidSyncStateData):
        list(inbox.sync_items(sync_state="Tm90IGEgc3luYyBzdGF0ZQ=="))
    with pytest.raises(ErrorInvalidSyncStateData):
        list(connect().sent.sync_items(sync_state=state))  # another folder's state

    ews.reset_sync_states(ALICE)
    with pytest.raises(ErrorInvalidSyncStateData):
        list(inbox.sync_items(sync_state=state))
    # Starting over (no state) answers everything again.
    inbox.item_sync_state = None
    assert summarize(list(inbox.sync_items())) == [("create", "hello 1")]
