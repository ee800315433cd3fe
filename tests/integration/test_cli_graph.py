"""The operator CLI with an Exchange Online profile over Microsoft Graph: the fake Graph on
loopback, a mailbox whose secret is an access token in the environment, Test & Enable, a
run that tracks a delivered message, and one that brings a contact made in Outlook into the
store's CRM tables."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from serversync.model.act import ActEntity
from serversync.sql import SqlActRecords, SqlStorage
from serversync.testing import an_email
from serversync.testing.graph import FakeGraph
from tests.integration.test_cli import Cli

pytestmark = pytest.mark.integration

ALICE = "alice@contoso.example"


def test_an_operator_runs_a_graph_mailbox(tmp_path: Path) -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    token = fake.issue_token(user=ALICE)
    cli = Cli(tmp_path / "store.db", token)
    with fake.serve_blocking() as url:
        cli("init")
        cli("profile", "add", "online", "--type", "graph", "--incoming", url, "--tls", "none")
        assert url in cli("profile", "list")
        cli(
            "mailbox",
            "add",
            ALICE,
            "--profile",
            "online",
            "--filter",
            "all",
            "--password-env",
            "SS_TEST_PASSWORD",
            "--oauth2",
        )
        cli("mailbox", "approve", ALICE)
        tested = cli("mailbox", "test", ALICE)
        assert tested.count("SUCCESS") == 2, tested

        fake.deliver(
            ALICE, an_email(sender="jane@fabrikam.example", to=[ALICE], subject="Graph order")
        )
        ran = cli("run", "--once")
    row = next(line for line in ran.splitlines() if "incoming" in line)
    assert "succeeded" in row, ran
    assert " 1 " in row, "one message tracked"
    assert all(token not in output for output in cli.outputs), "a token was printed"
    assert token.encode() not in (tmp_path / "store.db").read_bytes(), "a token was stored"


async def _contacts_in(store: Path) -> list[str]:
    storage = await SqlStorage.open(f"sqlite:///{store}")
    try:
        records = await SqlActRecords(storage).list_act_records(ActEntity.CONTACT)
        return [str(record.fields.get("last_name")) for record in records]
    finally:
        await storage.aclose()


def test_an_operator_syncs_a_graph_mailbox_with_its_contacts(tmp_path: Path) -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    token = fake.issue_token(user=ALICE)
    cli = Cli(tmp_path / "store.db", token)
    with fake.serve_blocking() as url:
        cli("init")
        cli("profile", "add", "online", "--type", "graph", "--incoming", url, "--tls", "none")
        cli(
            "mailbox",
            "add",
            ALICE,
            "--profile",
            "online",
            "--filter",
            "all",
            "--act",
            "--approve",
            "--password-env",
            "SS_TEST_PASSWORD",
            "--oauth2",
        )
        tested = cli("mailbox", "test", ALICE)
        assert tested.count("SUCCESS") == 3, tested

        fake.items.add_contact(ALICE, {"givenName": "Ada", "surname": "Lovelace"})
        ran = cli("run", "--once")
    row = next(line for line in ran.splitlines() if " act " in line)
    assert "succeeded" in row, ran
    assert " 1 " in row, "one record written"
    assert asyncio.run(_contacts_in(tmp_path / "store.db")) == ["Lovelace"]
    assert all(token not in output for output in cli.outputs), "a token was printed"
