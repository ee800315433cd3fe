"""Start the CRM API of crm_api.py over an in-memory world and call its endpoints.

httpx's ASGI transport calls the app in this process, and the app's own lifespan runs around
the calls, exactly as an ASGI server runs it: no port, no mail server, no database. Run it
with ``python examples/fastapi_host/try_it.py``. In production the same ``create_app`` gets an
engine over the CRM's storage and real transports, and runs under an ASGI server such as
uvicorn.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from crm_api import create_app

from serversync import SyncEngine, SyncObserver, SystemClock
from serversync.testing import InMemoryWorld, a_contact, a_pending_email, an_email

SUPPORT = "support@contoso.example"
ALICE = "alice@contoso.example"
JANE = "jane@fabrikam.example"


def show(label: str, statuses: list[dict[str, Any]]) -> None:
    print(label)
    for s in statuses:
        outcome = s["skip_reason"] or s["error"] or f"tracked {s['tracked']}, sent {s['sent']}"
        print(f"  {s['mailbox_id']} {s['workload']}: {s['status']} ({outcome})")


async def main() -> None:
    world = InMemoryWorld()
    world.add_queue(SUPPORT)  # tracks all email
    alice = world.add_user(ALICE)  # tracks replies to CRM email
    world.add_record(a_contact(JANE))
    world.storage.put_activity(a_pending_email(sender_mailbox=alice, to=[JANE], subject="Quote"))
    world.send_mail(an_email(sender=JANE, to=[SUPPORT], subject="Order 1234 arrived damaged"))

    def build_engine(observer: SyncObserver) -> SyncEngine:
        # The real clock: run_forever sleeps between runs (a FakeClock would not wait).
        return world.engine(observer=observer, clock=SystemClock())

    # --8<-- [start:client]
    app = create_app(build_engine)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),  # startup: the engine opens, the loop starts
        httpx.AsyncClient(transport=transport, base_url="http://crm.test") as client,
    ):
        statuses: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while len(statuses) < 4:  # 2 mailboxes x 2 workloads: the first run is over
                await asyncio.sleep(0.01)
                statuses = (await client.get("/sync/status")).json()
        show("GET /sync/status after the first background run:", statuses)
        # --8<-- [end:client]

        world.send_mail(an_email(sender=JANE, to=[SUPPORT], subject="RE: Order 1234"))
        reply = await client.post(f"/sync/mailboxes/mailbox:{SUPPORT}")
        show(f"POST /sync/mailboxes/mailbox:{SUPPORT} -> {reply.status_code}", reply.json())

        missing = await client.post("/sync/mailboxes/mailbox:nobody@contoso.example")
        print(f"POST /sync/mailboxes/mailbox:nobody@contoso.example -> {missing.status_code}")
    # Leaving the block ran the shutdown: the loop stopped and the engine closed.
    print(f"shutdown complete; stored email activities: {len(world.storage.activities())}")


if __name__ == "__main__":
    asyncio.run(main())
