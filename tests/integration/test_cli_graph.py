"""The operator CLI with an Exchange Online profile over Microsoft Graph: the fake Graph on
loopback, a mailbox whose secret is an access token in the environment, Test & Enable, and
a run that tracks a delivered message."""

from __future__ import annotations

from pathlib import Path

import pytest

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
