"""The operator CLI with an Exchange profile: the EWS test server on loopback, a mailbox set
up for appointment, contact and task sync, Test & Enable of all three workloads, and a run
that brings a contact made in Outlook into the store's CRM tables."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from exchangelib import (  # type: ignore[import-untyped]
    DELEGATE,
    Account,
    Configuration,
    Contact,
)
from exchangelib import Credentials as ExchangelibCredentials
from exchangelib.protocol import FailFast, close_connections  # type: ignore[import-untyped]
from exchangelib.transport import BASIC  # type: ignore[import-untyped]
from exchangelib.version import EXCHANGE_2016, Version  # type: ignore[import-untyped]

from serversync.model.act import ActEntity
from serversync.sql import SqlActRecords, SqlStorage
from serversync.testing.ews import EwsTestServer
from tests.integration.test_cli import Cli

pytestmark = pytest.mark.integration

ALICE = "alice@contoso.example"
PASSWORD = "correct horse"


def _outlook_adds_a_contact(server: EwsTestServer) -> None:
    config = Configuration(
        service_endpoint=server.url,
        credentials=ExchangelibCredentials(ALICE, PASSWORD),
        auth_type=BASIC,
        version=Version(build=EXCHANGE_2016),
        retry_policy=FailFast(),
    )
    try:
        account = Account(ALICE, config=config, autodiscover=False, access_type=DELEGATE)
        Contact(
            account=account,
            folder=account.contacts,
            display_name="Ada Lovelace",
            given_name="Ada",
            surname="Lovelace",
        ).save()
    finally:
        close_connections()


async def _contacts_in(store: Path) -> list[str]:
    storage = await SqlStorage.open(f"sqlite:///{store}")
    try:
        records = await SqlActRecords(storage).list_act_records(ActEntity.CONTACT)
        return [str(record.fields.get("last_name")) for record in records]
    finally:
        await storage.aclose()


def test_an_operator_syncs_an_exchange_mailbox_with_its_contacts(tmp_path: Path) -> None:
    with EwsTestServer() as server:
        server.add_mailbox(ALICE, password=PASSWORD)
        cli = Cli(tmp_path / "store.db", PASSWORD)
        cli("init")
        cli(
            "profile",
            "add",
            "onprem",
            "--type",
            "exchange",
            "--incoming",
            server.url,
            "--tls",
            "none",
        )
        cli(
            "mailbox",
            "add",
            ALICE,
            "--profile",
            "onprem",
            "--filter",
            "all",
            "--act",
            "--approve",
            "--password-env",
            "SS_TEST_PASSWORD",
        )
        tested = cli("mailbox", "test", ALICE)
        assert tested.count("SUCCESS") == 3, tested

        _outlook_adds_a_contact(server)
        ran = cli("run", "--once")
    row = next(line for line in ran.splitlines() if " act " in line)
    assert "succeeded" in row, ran
    assert " 1 " in row, "one record written"
    assert asyncio.run(_contacts_in(tmp_path / "store.db")) == ["Lovelace"]
