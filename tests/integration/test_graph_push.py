"""Graph change notifications as push hints through ``SyncEngine.run_forever``.

The fake Graph serves on a loopback port and POSTs its validation handshakes and
notifications over real HTTP to a host app on another loopback port, where the
:class:`GraphWebhookHandler` is mounted as a host mounts it. Polls are an hour apart in every
test, so mail stored within seconds came through a notification.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from typing import Any

import attrs
import pytest

from serversync import (
    EmailDirection,
    IncomingFilteringMethod,
    IncomingMailSession,
    MappingCredentials,
    PushHint,
    PushHintSource,
    PushSettings,
    Schedule,
    SyncEngine,
    SyncSettings,
    Timeouts,
    Transports,
    Workload,
)
from serversync.adapters.transports.graph import (
    GRAPH_SERVER_TYPES,
    GraphIncomingTransport,
    GraphPushIncomingTransport,
    GraphTransport,
    GraphWebhookHandler,
)
from serversync.errors import AuthenticationError, ConfigurationError
from serversync.model import (
    CredentialKind,
    Credentials,
    EmailServerProfile,
    Mailbox,
    MailboxId,
    Secret,
    ServerEndpoint,
    ServerType,
    TlsMode,
)
from serversync.testing import InMemoryDirectory, InMemoryStorage, a_mailbox, a_profile, a_user
from serversync.testing import an_email as _an_email
from serversync.testing.graph import FakeGraph, GraphFault, serve_asgi

pytestmark = pytest.mark.integration

ALICE = "alice@contoso.example"
PATH = "/graph/notifications"
_SCHEDULE = Schedule(
    incoming_interval=timedelta(hours=1),
    outgoing_interval=timedelta(hours=1),
    idle_sleep=timedelta(hours=1),
)
_TIMEOUTS = Timeouts(
    connect=timedelta(seconds=5), command=timedelta(seconds=5), close=timedelta(seconds=1)
)
_PUSH = PushSettings(reconnect_min=timedelta(seconds=1), reconnect_max=timedelta(seconds=2))


def _mount(world: _World) -> Any:
    """The host's app: ``PATH`` goes to the world's handler, the rest is 404."""

    async def app(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Any],
        send: Callable[[MutableMapping[str, Any]], Any],
    ) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] != PATH:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        answer = await world.handler.handle(
            method=scope["method"],
            query=scope["query_string"].decode("latin-1"),
            headers=headers,
            body=body,
        )
        out = [(b"content-type", answer.content_type.encode())] if answer.content_type else []
        await send({"type": "http.response.start", "status": answer.status, "headers": out})
        await send({"type": "http.response.body", "body": answer.body})

    return app


@attrs.define
class _Watches:
    """The Graph incoming transport, noting every watch: starts, hints and how each ended."""

    inner: Any
    starts: int = 0
    hints: list[PushHint] = attrs.Factory(list)
    ended: list[BaseException] = attrs.Factory(list)

    def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AbstractAsyncContextManager[IncomingMailSession]:
        result: AbstractAsyncContextManager[IncomingMailSession] = self.inner.open(
            mailbox, profile, credentials
        )
        return result

    async def watch(
        self,
        mailbox: Mailbox,
        profile: EmailServerProfile,
        credentials: Credentials | None,
        *,
        hint: Callable[[PushHint], None],
        refresh_every: timedelta,
    ) -> None:
        self.starts += 1

        def noted(what: PushHint) -> None:
            self.hints.append(what)
            hint(what)

        try:
            await self.inner.watch(
                mailbox, profile, credentials, hint=noted, refresh_every=refresh_every
            )
        except BaseException as exc:
            self.ended.append(exc)
            raise

    @property
    def watching(self) -> int:
        return self.hints.count(PushHint.WATCHING)


@attrs.define
class _World:
    fake: FakeGraph
    graph_url: str
    host_url: str
    path: str = PATH
    lifetime: timedelta = timedelta(minutes=4200)
    push: PushSettings = _PUSH
    storage: InMemoryStorage = attrs.Factory(InMemoryStorage)
    directory: InMemoryDirectory = attrs.Factory(InMemoryDirectory)
    credentials: dict[MailboxId, Credentials] = attrs.Factory(dict)
    handler: GraphWebhookHandler = attrs.field(init=False)
    graph: GraphTransport = attrs.field(init=False)
    watches: _Watches = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.handler = GraphWebhookHandler(notification_url=self.host_url + self.path)
        self.graph = GraphTransport(
            timeouts=_TIMEOUTS, webhook=self.handler, subscription_lifetime=self.lifetime
        )
        self.watches = _Watches(self.graph.incoming)

    def add_mailbox(self, address: str = ALICE) -> Mailbox:
        self.fake.add_mailbox(address)
        record = a_user(address, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
        self.directory.add(record)
        profile = a_profile(
            server_type=ServerType.MICROSOFT_GRAPH,
            name="Exchange Online",
            incoming=ServerEndpoint(host=self.graph_url, tls=TlsMode.NONE),
        )
        self.storage.add_profile(profile)
        mailbox = a_mailbox(address, owner=record.ref, profile_id=profile.id)
        self.storage.add_mailbox(mailbox)
        self.credentials[mailbox.id] = Credentials(
            username=address,
            secret=Secret(self.fake.issue_token(user=address)),
            kind=CredentialKind.OAUTH2_ACCESS_TOKEN,
        )
        return mailbox

    def engine(self) -> SyncEngine:
        return SyncEngine(
            repositories=self.storage,
            directory=self.directory,
            transports=Transports.by_server_type(
                incoming=dict.fromkeys(GRAPH_SERVER_TYPES, self.watches),
                outgoing={},
            ),
            credentials=MappingCredentials(by_mailbox=self.credentials),
            settings=SyncSettings(schedule=_SCHEDULE, timeouts=_TIMEOUTS, push=self.push),
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SyncEngine]:
        stop = asyncio.Event()
        async with self.engine() as engine:
            task = asyncio.create_task(engine.run_forever(stop=stop))
            try:
                yield engine
            finally:
                stop.set()
                await asyncio.wait_for(task, 15)

    def deliver(self, subject: str, address: str = ALICE) -> None:
        self.fake.deliver(address, _an_email(sender="jane@fabrikam.example", subject=subject))

    def subjects(self) -> list[str]:
        return sorted(
            a.subject for a in self.storage.activities() if a.direction is EmailDirection.INCOMING
        )


@asynccontextmanager
async def _world(**overrides: Any) -> AsyncIterator[_World]:
    fake = FakeGraph()
    holder: list[_World] = []
    async with fake.serve() as graph_url:

        class _Late:
            """The app, served before the world (and its handler) exists."""

            async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
                await _mount(holder[0])(scope, receive, send)

        async with serve_asgi(_Late()) as host_url:
            holder.append(_World(fake, graph_url, host_url, **overrides))
            yield holder[0]


async def _wait_for(condition: Callable[[], bool], *, seconds: float = 5.0) -> float:
    """Wait until ``condition()`` holds; the seconds it took."""
    started = time.monotonic()
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - the conditions have no event to wait on
            await asyncio.sleep(0.01)
    return time.monotonic() - started


async def _settled(world: _World, *, watching: int = 1) -> None:
    """Wait until the watch is in place and the cycle its first hint asked for has run."""
    await _wait_for(lambda: world.watches.watching >= watching)
    await asyncio.sleep(0.5)


async def test_a_notification_wakes_the_mailbox_before_its_poll() -> None:
    async with _world() as world:
        world.add_mailbox()
        async with world.running():
            await _settled(world)
            (subscription,) = world.fake.subscriptions.active()
            assert subscription.resource == f"users/{ALICE}/mailFolders('inbox')/messages"
            assert subscription.change_types == {"created"}
            assert world.handler.subscriptions == {subscription.id}
            world.deliver("pushed")
            took = await _wait_for(lambda: world.subjects() == ["pushed"], seconds=3)
            assert took < 2.0, f"stored {took:.2f} s after delivery (the poll is an hour away)"
        assert PushHint.NEW_MAIL in world.watches.hints
        assert world.watches.starts == 1
        (notification,) = world.fake.subscriptions.notifications
        assert (notification.kind, notification.status) == ("created", 202)
        assert world.handler.stats.notifications == 1
        assert world.handler.stats.validations == 2  # the notification and lifecycle URLs
        # The watch ended with the engine, and its subscription with it.
        assert [type(e) for e in world.watches.ended] == [asyncio.CancelledError]
        assert world.fake.subscriptions.active() == []
        assert world.fake.subscriptions.deleted == 1
        assert world.handler.subscriptions == frozenset()


async def test_a_failed_handshake_leaves_the_mailbox_polled_only() -> None:
    # The handler believes it is at a URL where the host serves nothing: Graph's handshake
    # gets a 404 and Graph refuses the subscription.
    async with _world(path="/not/mounted") as world:
        mailbox = world.add_mailbox()
        async with world.running() as engine:
            await _wait_for(lambda: len(world.watches.ended) == 1)
            assert type(world.watches.ended[0]) is ConfigurationError
            assert "validation" in str(world.watches.ended[0]).lower()
            world.deliver("polled")
            await asyncio.sleep(1.5)  # past the reconnect delay: no second try
            assert world.subjects() == [], "nothing wakes the mailbox before its interval"
            assert world.watches.starts == 1
            assert world.fake.subscriptions.active() == []
            (report,) = await engine.sync_mailbox(mailbox.id, workloads=[Workload.INCOMING])
        assert report.error is None
        assert world.subjects() == ["polled"]
        state = await world.storage.get_workload_state(mailbox.id, Workload.INCOMING)
        assert state is not None
        assert state.last_error is None, "the mailbox is not disabled"


async def test_a_missed_lifecycle_event_wakes_the_mailbox() -> None:
    async with _world() as world:
        world.add_mailbox()
        async with world.running():
            await _settled(world)
            world.fake.subscriptions.muted = True  # Graph loses the notification
            world.deliver("lost notification")
            await asyncio.sleep(1.0)
            assert world.subjects() == []
            assert world.fake.subscriptions.send_lifecycle("missed") == 1
            await _wait_for(lambda: world.subjects() == ["lost notification"], seconds=3)
        assert world.watches.starts == 1


async def test_a_removed_subscription_is_created_again_and_the_mailbox_read() -> None:
    async with _world() as world:
        world.add_mailbox()
        async with world.running():
            await _settled(world)
            (first,) = world.fake.subscriptions.active()
            world.fake.subscriptions.muted = True
            world.deliver("while removed")
            world.fake.subscriptions.muted = False
            world.fake.subscriptions.send_lifecycle("subscriptionRemoved")
            await _wait_for(lambda: world.subjects() == ["while removed"], seconds=3)
            (second,) = world.fake.subscriptions.active()
            assert second.id != first.id
            assert world.handler.subscriptions == {second.id}
            world.deliver("after recreation")
            await _wait_for(lambda: len(world.subjects()) == 2, seconds=3)
        assert world.watches.starts == 1, "recreated within the same watch"


async def test_reauthorization_required_reauthorizes_the_subscription() -> None:
    async with _world() as world:
        world.add_mailbox()
        async with world.running():
            await _settled(world)
            world.fake.subscriptions.send_lifecycle("reauthorizationRequired")
            await _wait_for(
                lambda: [s.reauthorizations for s in world.fake.subscriptions.active()] == [1]
            )
            (subscription,) = world.fake.subscriptions.active()
            assert not subscription.needs_reauthorization
            world.deliver("still pushed")
            await _wait_for(lambda: world.subjects() == ["still pushed"], seconds=3)


async def test_the_subscription_is_renewed_before_it_expires() -> None:
    async with _world(lifetime=timedelta(seconds=3)) as world:
        world.add_mailbox()
        async with world.running():
            await _settled(world)
            (first,) = world.fake.subscriptions.active()
            await asyncio.sleep(4.5)  # past the first expiry: renewed at 2 s and 4 s
            (now,) = world.fake.subscriptions.active()
            assert now.id == first.id
            assert now.renewals >= 2
            assert now.expires > first.expires
            assert world.fake.subscriptions.expired == 0
            world.deliver("after renewals")
            await _wait_for(lambda: world.subjects() == ["after renewals"], seconds=3)
        assert world.watches.starts == 1


async def test_a_renewal_of_a_lapsed_subscription_creates_it_again() -> None:
    async with _world() as world:
        world.add_mailbox()
        world.push = attrs.evolve(_PUSH, refresh_every=timedelta(seconds=1))
        async with world.running():
            await _settled(world)
            (first,) = world.fake.subscriptions.active()
            world.fake.add_fault(
                GraphFault.error(404, "ResourceNotFound", method="PATCH", path="/subscriptions/")
            )
            await _wait_for(
                lambda: [s.id for s in world.fake.subscriptions.active()] not in ([first.id], []),
                seconds=4,
            )
            world.deliver("on the new subscription")
            await _wait_for(lambda: world.subjects() == ["on the new subscription"], seconds=3)
        assert world.watches.starts == 1


async def _watch_once(
    world: _World, mailbox: Mailbox, *, seconds: float = 5.0, hints: list[PushHint] | None = None
) -> list[PushHint]:
    """Run one watch directly on the transport until it raises; the hints it gave."""
    profile = await world.storage.get_profile(mailbox.profile_id)  # type: ignore[arg-type]
    assert profile is not None
    hints = [] if hints is None else hints
    incoming = world.graph.incoming
    assert isinstance(incoming, GraphPushIncomingTransport)
    async with asyncio.timeout(seconds):
        await incoming.watch(
            mailbox,
            profile,
            world.credentials[mailbox.id],
            hint=hints.append,
            refresh_every=timedelta(minutes=25),
        )
    return hints


@pytest.mark.parametrize(
    "fault",
    [
        GraphFault.error(403, "ExtensionError", "Access is denied.", method="POST"),
        GraphFault.error(
            400,
            "ExtensionError",
            "Operation: Create; Exception: [Status Code: BadRequest; Reason: backend 'Unknown']",
            method="POST",
        ),
    ],
)
async def test_a_refused_subscription_is_a_configuration_error(fault: GraphFault) -> None:
    async with _world() as world:
        mailbox = world.add_mailbox()
        world.fake.add_fault(attrs.evolve(fault, path="/subscriptions$"))
        with pytest.raises(ConfigurationError):
            await _watch_once(world, mailbox)
        assert world.fake.subscriptions.active() == []


async def test_a_refused_token_is_an_authentication_error() -> None:
    async with _world() as world:
        mailbox = world.add_mailbox()
        world.fake.expire_tokens()
        with pytest.raises(AuthenticationError):
            await _watch_once(world, mailbox)


async def test_without_a_webhook_graph_mailboxes_are_polled_only() -> None:
    # The engine watches only transports that are push hint sources: without a webhook the
    # incoming half is none, so no mailbox costs a watch attempt or a push lease.
    polled = GraphTransport(timeouts=_TIMEOUTS).incoming
    assert type(polled) is GraphIncomingTransport
    assert not isinstance(polled, PushHintSource)
    handler = GraphWebhookHandler(notification_url="https://crm.contoso.example/graph")
    pushed = GraphTransport(timeouts=_TIMEOUTS, webhook=handler).incoming
    assert isinstance(pushed, GraphPushIncomingTransport)
    assert isinstance(pushed, PushHintSource)


async def test_a_cancelled_watch_whose_delete_hangs_ends_within_the_close_timeout() -> None:
    async with _world() as world:
        mailbox = world.add_mailbox()
        task = asyncio.create_task(_watch_once(world, mailbox, seconds=30))
        await _wait_for(lambda: len(world.fake.subscriptions.active()) == 1)
        await _wait_for(lambda: bool(world.handler.subscriptions))
        world.fake.add_fault(
            attrs.evolve(
                GraphFault.error(204, "NoContent", method="DELETE", path="/subscriptions/"),
                delay=3.0,
                after=True,
            )
        )
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        took = time.monotonic() - started
        assert took < 2.0, f"the cancel took {took:.2f} s (close timeout: 1 s)"
        assert world.handler.subscriptions == frozenset()


async def test_no_token_or_client_state_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with _world() as world:
        mailbox = world.add_mailbox()
        async with world.running():
            await _settled(world)
            (subscription,) = world.fake.subscriptions.active()
            world.deliver("logged")
            await _wait_for(lambda: world.subjects() == ["logged"], seconds=3)
            world.fake.subscriptions.send_lifecycle("reauthorizationRequired")
            await asyncio.sleep(0.5)
        token = world.credentials[mailbox.id].secret
        assert token is not None
        assert subscription.client_state
        assert token.reveal() not in caplog.text
        assert subscription.client_state not in caplog.text
        assert subscription.client_state not in repr(world.handler)


async def test_the_fake_served_in_process_validates_against_a_host_on_the_same_loop() -> None:
    async with _world() as world:
        mailbox = world.add_mailbox()
        world.graph = GraphTransport(
            timeouts=_TIMEOUTS, webhook=world.handler, http_transport=world.fake.transport()
        )
        hints: list[PushHint] = []
        task = asyncio.create_task(_watch_once(world, mailbox, seconds=30, hints=hints))
        await _wait_for(lambda: hints == [PushHint.WATCHING])
        world.deliver("in process")
        await _wait_for(lambda: hints == [PushHint.WATCHING, PushHint.NEW_MAIL])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert world.fake.subscriptions.active() == []
        assert world.fake.subscriptions.deleted == 1
