"""The folder tree of a Graph mailbox from the folder delta (``mailFolders/delta``), and
folder-level tracking by Graph folder id through the engine."""

from __future__ import annotations

import pytest

from serversync import OutcomeKind
from serversync.adapters.transports.graph import GraphTransport
from serversync.model import (
    INBOX,
    CredentialKind,
    Credentials,
    EmailServerProfile,
    EntityName,
    Mailbox,
    MailboxTrackingFolder,
    RecordRef,
    Secret,
    ServerEndpoint,
    ServerType,
    TrackingFolderId,
)
from serversync.testing import a_mailbox, a_profile, an_email
from serversync.testing.graph import FAKE_GRAPH_URL, FakeGraph
from tests.integration.test_graph_engine import ALICE, JANE, GraphWorld

pytestmark = pytest.mark.integration

ACCOUNT = RecordRef(EntityName.ACCOUNT.value, "account-1")


def setup(fake: FakeGraph) -> tuple[Mailbox, EmailServerProfile, Credentials]:
    profile = a_profile(
        server_type=ServerType.MICROSOFT_GRAPH, incoming=ServerEndpoint(host=FAKE_GRAPH_URL)
    )
    credentials = Credentials(
        username=ALICE,
        secret=Secret(fake.issue_token(user=ALICE)),
        kind=CredentialKind.OAUTH2_ACCESS_TOKEN,
    )
    return a_mailbox(ALICE), profile, credentials


def tree(fake: FakeGraph) -> dict[str, str]:
    projects = fake.add_folder(ALICE, "Projects")
    contoso = fake.add_folder(ALICE, "Contoso", parent=projects)
    fabrikam = fake.add_folder(ALICE, "Fabrikam", parent=projects)
    q1 = fake.add_folder(ALICE, "Q1", parent=contoso)
    return {"projects": projects, "contoso": contoso, "fabrikam": fabrikam, "q1": q1}


@pytest.mark.parametrize("top_level_only", [False, True])
async def test_the_folder_tree_comes_from_the_folder_delta_nested_folders_included(
    top_level_only: bool,
) -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    ids = tree(fake)
    fake.folder_delta_lists_top_level_only(top_level_only)
    mailbox, profile, credentials = setup(fake)
    graph = GraphTransport(http_transport=fake.transport(), page_size=3)

    async with graph.incoming.open(mailbox, profile, credentials) as session:
        folders = await session.list_folders()

    by_id = {f.id: f for f in folders}
    assert by_id[ids["projects"]].parent_id == INBOX
    assert by_id[ids["contoso"]].parent_id == ids["projects"]
    assert by_id[ids["q1"]].parent_id == ids["contoso"]
    assert by_id[INBOX].parent_id is None
    assert by_id[fake.folder_id(ALICE, "sentitems")].special_use == "\\Sent"
    assert len(folders) == len({f.id for f in folders}), "each folder once"
    deltas = [r for r in fake.requests if r.path.endswith("/mailFolders/delta")]
    assert len(deltas) >= 2, "the round went over several pages"
    walks = [r for r in fake.requests if r.path.endswith("/childFolders")]
    if top_level_only:
        # The children the delta left out are walked: Inbox, Projects, Contoso.
        assert len(walks) == 3
    else:
        assert walks == [], "the delta listed the whole tree"
    assert len([r for r in fake.requests if r.path.endswith("/$batch")]) == 1, (
        "the well-known folders in one batch"
    )


async def test_a_removed_folder_is_gone_from_the_next_listing() -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    ids = tree(fake)
    mailbox, profile, credentials = setup(fake)
    graph = GraphTransport(http_transport=fake.transport())

    async with graph.incoming.open(mailbox, profile, credentials) as session:
        before = {f.id for f in await session.list_folders()}
        fake.remove_folder(ALICE, ids["q1"])
        after = {f.id for f in await session.list_folders()}

    assert before - after == {ids["q1"]}


async def test_folder_level_tracking_follows_the_graph_folder_id_across_a_rename() -> None:
    world = GraphWorld()
    mailbox = world.add_mailbox()
    ids = tree(world.fake)
    world.storage.add_tracking_folder(
        MailboxTrackingFolder(
            id=TrackingFolderId("rule-1"),
            mailbox_id=mailbox.id,
            exchange_folder_id=ids["q1"],
            exchange_folder_name="Q1",
            regarding=ACCOUNT,
        )
    )
    world.fake.deliver(
        ALICE,
        an_email(sender=JANE, to=[ALICE], message_id="<filed-1@fabrikam.example>"),
        folder=ids["q1"],
    )

    first = await world.sync(mailbox)
    world.fake.rename_folder(ALICE, ids["q1"], "Q1 2026")
    world.fake.deliver(
        ALICE,
        an_email(sender=JANE, to=[ALICE], message_id="<filed-2@fabrikam.example>"),
        folder=ids["q1"],
    )
    second = await world.sync(mailbox)

    tracked = [i for i in (*first.items, *second.items) if i.kind is OutcomeKind.TRACKED]
    assert [i.folder for i in tracked] == [ids["q1"], ids["q1"]]
    assert [str(i.message_id) for i in tracked] == [
        "<filed-1@fabrikam.example>",
        "<filed-2@fabrikam.example>",
    ]
    assert all(a.regarding == ACCOUNT for a in world.storage.activities())
