"""IMAP IDLE push hints through ``SyncEngine.run_forever`` against a real Dovecot.

Polls are an hour apart in every test, so mail stored within seconds came through a push.
The IMAP transport is wrapped (a wrapper transport, as a host would add metrics) to see when
the engine connects a watch, what it is told and how each watch ends.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta

import attrs
import pytest

from serversync import (
    EmailDirection,
    IncomingFilteringMethod,
    IncomingMailSession,
    MappingCredentials,
    PushHint,
    PushSettings,
    Schedule,
    SyncEngine,
    SyncSettings,
    Timeouts,
    Transports,
    Workload,
)
from serversync.adapters.transports import ImapTransport
from serversync.model import (
    Credentials,
    EmailServerProfile,
    Mailbox,
    OutgoingDeliveryMethod,
    ProfileId,
    Secret,
    ServerEndpoint,
    ServerType,
    TlsMode,
)
from serversync.testing import InMemoryDirectory, InMemoryStorage, a_mailbox, a_profile, a_user
from serversync.testing import an_email as _an_email
from tests.integration.dovecot import Dovecot, DovecotUser, TokenEndpoint, dovecot_binary
from tests.reliability.proxy import Action, Fault, FaultProxy, ImapStages

pytestmark = pytest.mark.integration

_SCHEDULE = Schedule(
    incoming_interval=timedelta(hours=1),
    outgoing_interval=timedelta(hours=1),
    idle_sleep=timedelta(hours=1),
)
_TIMEOUTS = Timeouts(
    connect=timedelta(seconds=5), command=timedelta(seconds=3), close=timedelta(seconds=2)
)
_PUSH = PushSettings(reconnect_min=timedelta(seconds=1), reconnect_max=timedelta(seconds=2))


@attrs.define
class _Watches:
    """An IMAP transport that notes every watch: connects, hints and how each ended."""

    inner: ImapTransport
    connects: int = 0
    hints: list[PushHint] = attrs.Factory(list)
    ended: list[BaseException] = attrs.Factory(list)

    def open(
        self, mailbox: Mailbox, profile: EmailServerProfile, credentials: Credentials | None
    ) -> AbstractAsyncContextManager[IncomingMailSession]:
        return self.inner.open(mailbox, profile, credentials)

    async def watch(
        self,
        mailbox: Mailbox,
        profile: EmailServerProfile,
        credentials: Credentials | None,
        *,
        hint: Callable[[PushHint], None],
        refresh_every: timedelta,
    ) -> None:
        self.connects += 1

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
    dovecot: Dovecot
    push: PushSettings = _PUSH
    storage: InMemoryStorage = attrs.Factory(InMemoryStorage)
    directory: InMemoryDirectory = attrs.Factory(InMemoryDirectory)
    timeouts: Timeouts = _TIMEOUTS
    watches: _Watches = attrs.Factory(
        lambda self: _Watches(ImapTransport(timeouts=self.timeouts)), takes_self=True
    )
    credentials: dict[str, Credentials] = attrs.Factory(dict)

    def add_mailbox(
        self, *, password: str | None = None, endpoint: ServerEndpoint | None = None
    ) -> tuple[Mailbox, DovecotUser]:
        user = self.dovecot.add_user()
        record = a_user(user.address, filtering=IncomingFilteringMethod.ALL_EMAIL_MESSAGES)
        self.directory.add(record)
        profile = a_profile(
            id=ProfileId(f"profile:{user.address}"),
            server_type=ServerType.IMAP_SMTP,
            incoming=endpoint or self.dovecot.endpoint("imap", TlsMode.IMPLICIT),
        )
        self.storage.add_profile(profile)
        mailbox = a_mailbox(
            user.address,
            owner=record.ref,
            profile_id=profile.id,
            outgoing_delivery_method=OutgoingDeliveryMethod.NONE,
        )
        self.storage.add_mailbox(mailbox)
        self.credentials[mailbox.id] = Credentials(
            username=user.address, secret=Secret(password or user.password)
        )
        return mailbox, user

    def engine(self) -> SyncEngine:
        return SyncEngine(
            repositories=self.storage,
            directory=self.directory,
            transports=Transports.by_server_type(
                incoming={ServerType.IMAP_SMTP: self.watches}, outgoing={}
            ),
            credentials=MappingCredentials(by_mailbox=self.credentials),  # type: ignore[arg-type]
            settings=SyncSettings(schedule=_SCHEDULE, timeouts=self.timeouts, push=self.push),
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

    def subjects(self) -> list[str]:
        return sorted(
            a.subject for a in self.storage.activities() if a.direction is EmailDirection.INCOMING
        )


async def _wait_for(condition: Callable[[], bool], *, seconds: float = 5.0) -> float:
    """Wait until ``condition()`` holds; the seconds it took."""
    started = time.monotonic()
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - the conditions have no event to wait on
            await asyncio.sleep(0.01)
    return time.monotonic() - started


def _mail(subject: str) -> bytes:
    return _an_email(sender="jane@fabrikam.example", subject=subject)


async def _deliver(dovecot: Dovecot, user: DovecotUser, subject: str) -> None:
    await asyncio.to_thread(dovecot.append, user, _mail(subject))


async def _settled(world: _World, *, watching: int = 1) -> None:
    """Wait until the watch is in place and the cycle its first hint asked for has run."""
    await _wait_for(lambda: world.watches.watching >= watching)
    await asyncio.sleep(0.5)


async def test_idle_wakes_the_mailbox_long_before_its_polling_interval(dovecot: Dovecot) -> None:
    world = _World(dovecot)
    _, user = world.add_mailbox()
    async with world.running():
        await _settled(world)
        await _deliver(dovecot, user, "pushed")
        took = await _wait_for(lambda: world.subjects() == ["pushed"], seconds=3)
    assert took < 2.0, f"stored {took:.2f} s after delivery"
    assert PushHint.NEW_MAIL in world.watches.hints
    assert world.watches.connects == 1
    # The watch ended with the engine (cancelled), politely: DONE, then LOGOUT.
    assert [type(e) for e in world.watches.ended] == [asyncio.CancelledError]
    assert world.watches.inner.stats.commands["LOGOUT"] >= 1


async def test_idle_is_reissued_on_the_same_connection_before_the_limit(dovecot: Dovecot) -> None:
    world = _World(dovecot, push=attrs.evolve(_PUSH, refresh_every=timedelta(seconds=0.4)))
    _, user = world.add_mailbox()
    stats = world.watches.inner.stats
    async with world.running():
        await _settled(world)
        connections, idles = stats.connections, stats.commands["IDLE"]
        await asyncio.sleep(2)
        assert stats.commands["IDLE"] - idles >= 3, "IDLE re-issued every 0.4 s"
        assert stats.connections == connections, "on the same connection"
        await _deliver(dovecot, user, "after re-issues")
        await _wait_for(lambda: world.subjects() == ["after re-issues"], seconds=2)
    assert world.watches.connects == 1
    assert world.watches.watching == 1


def _kick(dovecot: Dovecot, user: DovecotUser) -> None:
    """Disconnect every IMAP connection of ``user``, as a server restart would."""
    doveadm = str(dovecot_binary()).replace("sbin/dovecot", "bin/doveadm")
    subprocess.run(
        [doveadm, "-c", str(dovecot.dir / "dovecot.conf"), "kick", user.address],
        check=True,
        capture_output=True,
        timeout=10,
    )


async def test_a_dropped_idle_connection_reconnects_and_the_cursor_sync_runs(
    dovecot: Dovecot,
) -> None:
    world = _World(dovecot)
    _, user = world.add_mailbox()
    async with world.running():
        await _settled(world)
        await asyncio.to_thread(_kick, dovecot, user)
        await _wait_for(lambda: len(world.watches.ended) == 1)
        # Delivered while no watch is there: no push can announce it.
        await _deliver(dovecot, user, "during the outage")
        # The reconnected watch's first hint makes the cursor sync run.
        await _wait_for(lambda: world.subjects() == ["during the outage"], seconds=8)
        assert world.watches.connects == 2
        assert world.watches.watching == 2
        await _deliver(dovecot, user, "after the reconnect")
        await _wait_for(lambda: len(world.subjects()) == 2, seconds=2)
    assert not isinstance(world.watches.ended[0], asyncio.CancelledError)


async def test_a_refused_login_stops_the_watch(dovecot: Dovecot) -> None:
    world = _World(dovecot)
    mailbox, _ = world.add_mailbox(password="wrong")
    async with world.running():
        await _wait_for(lambda: len(world.watches.ended) == 1)
        await asyncio.sleep(1.5)  # past the reconnect delay: no second try
    assert world.watches.connects == 1
    assert type(world.watches.ended[0]).__name__ == "AuthenticationError"
    # The poll reported the error itself (and disabled the workload, as for any bad password).
    state = await world.storage.get_workload_state(mailbox.id, Workload.INCOMING)
    assert state is not None
    assert state.last_error is not None
    assert state.last_error.error_type == "AuthenticationError"


class _IdleStages(ImapStages):
    """IMAP stages, and ``done``: the DONE that ends an IDLE."""

    def client_line(self, line: bytes) -> tuple[str, bool] | None:
        if line.strip().upper() == b"DONE":
            return "done", False
        return super().client_line(line)


async def test_an_unanswered_idle_reissue_counts_as_a_dead_connection(dovecot: Dovecot) -> None:
    async with FaultProxy(dovecot.imap_port, _IdleStages) as proxy:
        world = _World(
            dovecot,
            push=attrs.evolve(_PUSH, refresh_every=timedelta(seconds=0.5)),
            timeouts=attrs.evolve(_TIMEOUTS, command=timedelta(seconds=1)),
        )
        endpoint = ServerEndpoint(host="127.0.0.1", port=proxy.port, tls=TlsMode.NONE)
        _, user = world.add_mailbox(endpoint=endpoint)
        async with world.running():
            await _settled(world)
            # The next DONE reaches the server, and then the connection goes silent.
            proxy.arm(Fault("done", Action.STALL))
            await _wait_for(lambda: len(world.watches.ended) == 1, seconds=5)
            assert type(world.watches.ended[0]).__name__ == "OperationTimeoutError"
            await _deliver(dovecot, user, "while the watch was dead")
            await _wait_for(lambda: world.subjects() == ["while the watch was dead"], seconds=8)
            assert world.watches.connects == 2
        assert proxy.injected[("done", Action.STALL)] == 1


class _DovecotWithoutIdle(Dovecot):
    """A Dovecot whose capabilities after login leave IDLE out."""

    def _write_config(self) -> None:
        super()._write_config()
        config = self.dir / "dovecot.conf"
        config.write_text(
            config.read_text()
            + "imap_capability = IMAP4rev1 SASL-IR LITERAL+ ID ENABLE UIDPLUS MOVE CONDSTORE\n"
        )


@pytest.fixture(scope="module")
def dovecot_without_idle(oauth_tokens: TokenEndpoint) -> Iterator[Dovecot]:
    with _DovecotWithoutIdle(oauth2_url=oauth_tokens.url, users=5) as server:
        yield server


async def test_a_server_without_idle_is_polled_only(dovecot_without_idle: Dovecot) -> None:
    world = _World(dovecot_without_idle)
    mailbox, user = world.add_mailbox()
    async with world.running() as engine:
        await _wait_for(lambda: len(world.watches.ended) == 1)
        await _deliver(dovecot_without_idle, user, "polled")
        await asyncio.sleep(1.5)
        assert world.subjects() == [], "nothing wakes the mailbox before its interval"
        assert world.watches.connects == 1, "no second try"
        assert type(world.watches.ended[0]).__name__ == "ConfigurationError"
        assert world.watches.inner.stats.commands["IDLE"] == 0
        (report,) = await engine.sync_mailbox(mailbox.id, workloads=[Workload.INCOMING])
    assert report.error is None
    assert world.subjects() == ["polled"]
