"""The host-style ACT storage in ``host_act`` type-checks, keeps the contract and syncs."""

from __future__ import annotations

from serversync import ActAction, ActEntity, RunStatus
from serversync.testing import FakeClock, check_act_record_repository

from . import host_act


async def test_host_act_records_keep_the_contract() -> None:
    async def fresh() -> host_act.DictCrmRecords:
        return host_act.DictCrmRecords(FakeClock())

    await check_act_record_repository(fresh)


async def test_host_act_records_sync_to_exchange() -> None:
    report, exchange = await host_act.sync_contacts()
    assert report.status is RunStatus.SUCCEEDED, report.error
    assert [o.action for o in report.act] == [ActAction.CREATED_IN_EXCHANGE]
    (item,) = exchange.items(host_act.ALICE, ActEntity.CONTACT)
    assert item.fields["last_name"] == "Lovelace"
