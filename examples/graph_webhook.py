"""Push hints over Microsoft Graph: a FastAPI app mounts the GraphWebhookHandler, and a
notification wakes the mailbox long before its next poll.

Everything runs on loopback: the fake Graph (``serversync.testing.graph``) plays Exchange
Online and POSTs its validation handshake and its notifications over real HTTP to the app,
which ``serve_asgi`` serves here in place of uvicorn. Run it with
``python examples/graph_webhook.py`` (it needs the ``graph`` extra and fastapi). In production
the notification URL is the app's public HTTPS address, and Graph and Entra ID are real.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from fastapi import FastAPI, Request, Response

from serversync import (
    CredentialKind,
    Credentials,
    EmailDirection,
    IncomingFilteringMethod,
    MappingCredentials,
    Schedule,
    Secret,
    ServerEndpoint,
    SyncEngine,
    SyncSettings,
    TlsMode,
    Transports,
)
from serversync.adapters.transports.graph import (
    GRAPH_SERVER_TYPES,
    GraphTransport,
    GraphWebhookHandler,
)
from serversync.testing import (
    InMemoryDirectory,
    InMemoryStorage,
    a_mailbox,
    a_profile,
    a_user,
    an_email,
)
from serversync.testing.graph import FakeGraph, serve_asgi

ALICE = "alice@contoso.example"
PATH = "/graph/notifications"


# --8<-- [start:mount]
def mount(app: FastAPI, handler: GraphWebhookHandler) -> None:
    """Route Graph's POSTs to the handler: it answers at once and never raises."""

    @app.post(PATH)
    async def graph_notifications(request: Request) -> Response:
        answer = await handler.handle(
            method=request.method,
            query=request.url.query,
            headers=dict(request.headers),
            body=await request.body(),
        )
        return Response(answer.body, status_code=answer.status, media_type=answer.content_type)


# --8<-- [end:mount]


async def main() -> None:
    fake = FakeGraph()
    fake.add_mailbox(ALICE)
    app = FastAPI()
    async with fake.serve() as graph_url, serve_asgi(app) as app_url:
        # --8<-- [start:wire]
        handler = GraphWebhookHandler(notification_url=app_url + PATH)
        mount(app, handler)
        graph = GraphTransport(webhook=handler)
        transports = Transports.by_server_type(
            incoming=dict.fromkeys(GRAPH_SERVER_TYPES, graph.incoming), outgoing={}
        )
        # --8<-- [end:wire]

        storage, directory = InMemoryStorage(), InMemoryDirectory()
        user = a_user(ALICE, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
        directory.add(user)
        profile = a_profile(
            server_type=GRAPH_SERVER_TYPES[0],
            name="Exchange Online",
            incoming=ServerEndpoint(host=graph_url, tls=TlsMode.NONE),  # loopback: plain HTTP
        )
        storage.add_profile(profile)
        mailbox = a_mailbox(ALICE, owner=user.ref, profile_id=profile.id)
        storage.add_mailbox(mailbox)
        token = Credentials(
            username=ALICE,
            secret=Secret(fake.issue_token(user=ALICE)),
            kind=CredentialKind.OAUTH2_ACCESS_TOKEN,
        )
        hour = timedelta(hours=1)
        engine = SyncEngine(
            repositories=storage,
            directory=directory,
            transports=transports,
            credentials=MappingCredentials(by_mailbox={mailbox.id: token}),
            settings=SyncSettings(
                schedule=Schedule(incoming_interval=hour, outgoing_interval=hour, idle_sleep=hour)
            ),
        )

        def stored() -> list[str]:
            return [
                a.subject for a in storage.activities() if a.direction is EmailDirection.INCOMING
            ]

        stop = asyncio.Event()
        async with engine:
            loop = asyncio.create_task(engine.run_forever(stop=stop))
            async with asyncio.timeout(10):
                while not handler.subscriptions:  # noqa: ASYNC110 - polled, as a host would
                    await asyncio.sleep(0.05)
            (subscription,) = fake.subscriptions.active()
            print(f"subscribed to {subscription.resource}")
            print(f"validation handshakes answered: {handler.stats.validations}")
            await asyncio.sleep(0.5)

            subject = "Order 1234 arrived damaged"
            fake.deliver(ALICE, an_email(sender="jane@fabrikam.example", subject=subject))
            started = time.monotonic()
            async with asyncio.timeout(10):
                while stored() != [subject]:  # noqa: ASYNC110 - polled, as a host would
                    await asyncio.sleep(0.05)
            took = time.monotonic() - started
            print(f"stored {subject!r} within 5 s of delivery: {took < 5}")
            print(f"notifications routed: {handler.stats.notifications}")
            stop.set()
            await loop
        print(f"engine stopped; subscriptions left at Graph: {len(fake.subscriptions.active())}")


if __name__ == "__main__":
    asyncio.run(main())
