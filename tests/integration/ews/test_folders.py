"""Folders through exchangelib: the distinguished folders, a tree walk with user folders,
and SyncFolderHierarchy reporting only what changed since the last call."""

from __future__ import annotations

import pytest
from exchangelib.errors import (  # type: ignore[import-untyped]
    ErrorDeleteDistinguishedFolder,
    ErrorFolderExists,
    ErrorInvalidSyncStateData,
)
from exchangelib.folders import (  # type: ignore[import-untyped]
    Calendar,
    Contacts,
    Folder,
    Inbox,
    Tasks,
)

from serversync.testing.ews import EwsTestServer
from tests.integration.ews.conftest import ALICE, Connect, raw_message

pytestmark = pytest.mark.integration


def test_distinguished_folders_have_their_classes(ews: EwsTestServer, connect: Connect) -> None:
    account = connect()

    assert isinstance(account.inbox, Inbox)
    assert account.inbox.name == "Inbox"
    assert account.inbox.id == ews.folder(ALICE, "inbox").id
    assert isinstance(account.calendar, Calendar)
    assert isinstance(account.contacts, Contacts)
    assert isinstance(account.tasks, Tasks)
    assert account.sent.name == "Sent Items"
    assert account.trash.name == "Deleted Items"


def test_the_tree_walk_finds_user_folders_under_their_parents(
    ews: EwsTestServer, connect: Connect
) -> None:
    projects = ews.create_folder(ALICE, "Projects")
    ews.create_folder(ALICE, "Contoso", parent=projects.id)
    ews.create_folder(ALICE, "Receipts", parent="msgfolderroot")
    account = connect()

    walked = {f.name: f for f in account.root.walk()}

    assert {"Inbox", "Sent Items", "Drafts", "Calendar", "Projects", "Contoso", "Receipts"} <= set(
        walked
    )
    assert walked["Contoso"].parent.name == "Projects"
    assert walked["Projects"].parent.name == "Inbox"
    assert walked["Receipts"].parent.name == "Top of Information Store"
    assert walked["Projects"].id == projects.id
    assert [f.name for f in account.inbox.children] == ["Projects"]
    assert account.inbox.child_folder_count == 1


def test_sync_hierarchy_answers_only_new_changes(ews: EwsTestServer, connect: Connect) -> None:
    account = connect()
    top = account.msg_folder_root

    first = list(top.sync_hierarchy())
    assert {kind for kind, _ in first} == {"create"}
    assert {"Inbox", "Sent Items", "Calendar", "Contacts", "Tasks"} <= {f.name for _, f in first}
    assert list(top.sync_hierarchy()) == []

    projects = ews.create_folder(ALICE, "Projects")
    archive = ews.create_folder(ALICE, "Archive")
    old = ews.create_folder(ALICE, "Old")
    ews.rename_folder(projects.id, "Clients")
    ews.move_folder(archive.id, projects.id)
    ews.delete_folder(old.id)

    changes = list(top.sync_hierarchy())

    created = {f.name: f for kind, f in changes if kind == "create"}
    assert set(created) == {"Clients", "Archive"}  # created and changed since: one create
    assert created["Archive"].parent_folder_id.id == projects.id
    assert all(kind != "delete" for kind, _ in changes)  # "Old" came and went in between
    assert list(top.sync_hierarchy()) == []

    ews.rename_folder(archive.id, "Archive 2025")
    ews.delete_folder(projects.id)
    changes = list(top.sync_hierarchy())
    assert sorted((kind, getattr(f, "id", None)) for kind, f in changes) == sorted(
        [("delete", archive.id), ("delete", projects.id)]
    )


def test_a_sync_state_from_elsewhere_is_refused(ews: EwsTestServer, connect: Connect) -> None:
    account = connect()
    top = account.msg_folder_root
    list(top.sync_hierarchy())
    inbox_state = None
    list(account.inbox.sync_items())
    inbox_state = account.inbox.item_sync_state

    with pytest.raises(ErrorInvalidSyncStateData):
        list(top.sync_hierarchy(sync_state=inbox_state))
    with pytest.raises(ErrorInvalidSyncStateData):
        list(top.sync_hierarchy(sync_state="bm90IGEgc3luYyBzdGF0ZQ=="))


def test_clients_create_and_delete_user_folders(ews: EwsTestServer, connect: Connect) -> None:
    account = connect()

    folder = Folder(parent=account.inbox, name="Undeliverable")
    folder.save()

    stored = ews.folder(ALICE, folder.id)
    assert (stored.name, stored.parent_id, stored.folder_class) == (
        "Undeliverable",
        ews.folder(ALICE, "inbox").id,
        "IPF.Note",
    )
    with pytest.raises(ErrorFolderExists):
        Folder(parent=account.inbox, name="undeliverable").save()
    ews.deliver(ALICE, raw_message(1), folder=folder.id)

    folder.delete()
    assert "Undeliverable" not in {f.name for f in ews.folders(ALICE)}
    with pytest.raises(ErrorDeleteDistinguishedFolder):
        account.inbox.delete()
