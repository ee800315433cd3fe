"""Push hints over Graph: one change-notification subscription per watched mailbox.

The watch creates a subscription for the Inbox's new messages (``changeType=created``: a
hint needs nothing more, the delta finds updates and deletions), registers it with the
:class:`GraphWebhookHandler` under a random ``clientState``, renews it with PATCH before it
lapses, answers the lifecycle notifications the handler passes on, and deletes it when the
watch ends. Graph itself decides nothing here: every hint only wakes the mailbox.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote

import attrs

from serversync.adapters.transports.graph._client import GraphClient, logger
from serversync.adapters.transports.graph._webhook import (
    GraphWebhookHandler,
    LifecycleEvent,
    _Route,
)
from serversync.errors import ConfigurationError, PermanentError, SyncError
from serversync.model import Mailbox
from serversync.ports import PushHint
from serversync.settings import Timeouts

__all__ = ["MAX_MESSAGE_SUBSCRIPTION", "SubscriptionOptions", "watch_inbox"]

MAX_MESSAGE_SUBSCRIPTION: Final = timedelta(minutes=4230)
"""The longest life Graph gives a subscription to Outlook messages."""
# A subscription is renewed once this share of its life has passed.
_RENEW_AT: Final = 2 / 3


def _lifetime(_: object, attribute: attrs.Attribute[timedelta], value: timedelta) -> None:
    if not timedelta(0) < value <= MAX_MESSAGE_SUBSCRIPTION:
        raise ValueError(f"{attribute.name} must be positive and at most 4,230 minutes")


@attrs.frozen(kw_only=True)
class SubscriptionOptions:
    """How long a subscription is asked for (renewed after 2/3 of it, or sooner when the
    engine's ``refresh_every`` is shorter); a little under Graph's limit, against clocks
    that disagree."""

    lifetime: timedelta = attrs.field(default=timedelta(minutes=4200), validator=_lifetime)
    timeouts: Timeouts = attrs.Factory(Timeouts)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Subscription:
    def __init__(
        self,
        client: GraphClient,
        handler: GraphWebhookHandler,
        mailbox: Mailbox,
        options: SubscriptionOptions,
        deliver: Callable[[PushHint | LifecycleEvent], None],
    ) -> None:
        self._client = client
        self._handler = handler
        self._mailbox = mailbox
        self._options = options
        self._deliver = deliver
        self.id: str | None = None

    @property
    def _resource(self) -> str:
        return f"users/{quote(self._mailbox.email_address, safe='@')}/mailFolders('inbox')/messages"

    def _expiry(self) -> str:
        return _iso(datetime.now(UTC) + self._options.lifetime)

    async def create(self) -> None:
        client_state = secrets.token_urlsafe(32)
        body = {
            "changeType": "created",
            "notificationUrl": self._handler.notification_url,
            "lifecycleNotificationUrl": self._handler.lifecycle_notification_url,
            "resource": self._resource,
            "expirationDateTime": self._expiry(),
            "clientState": client_state,
        }
        response = await self._client.request(
            "POST",
            "subscriptions",
            what="creating a change-notification subscription",
            deadline=self._options.timeouts.command,
            json=body,
            idempotent=False,
        )
        created: Any = response.json()
        subscription_id = created.get("id") if isinstance(created, dict) else None
        if not isinstance(subscription_id, str) or not subscription_id:
            raise ConfigurationError(
                "Graph created a subscription but gave no id", mailbox_id=self._mailbox.id
            )
        self.id = subscription_id
        self._handler._register(
            subscription_id,
            _Route(
                mailbox_id=self._mailbox.id,
                client_state=client_state,
                loop=asyncio.get_running_loop(),
                deliver=self._deliver,
            ),
        )
        logger.info("mailbox %s: Graph subscription created", self._mailbox.id)

    async def renew(self) -> None:
        assert self.id is not None
        await self._client.request(
            "PATCH",
            f"subscriptions/{quote(self.id, safe='')}",
            what="renewing the change-notification subscription",
            deadline=self._options.timeouts.command,
            json={"expirationDateTime": self._expiry()},
            idempotent=True,
        )

    async def reauthorize(self) -> None:
        assert self.id is not None
        await self._client.request(
            "POST",
            f"subscriptions/{quote(self.id, safe='')}/reauthorize",
            what="reauthorizing the change-notification subscription",
            deadline=self._options.timeouts.command,
            idempotent=True,
        )

    def forget(self) -> None:
        """Stop routing the subscription's notifications: Graph no longer has it."""
        subscription_id, self.id = self.id, None
        if subscription_id is not None:
            self._handler._unregister(subscription_id)

    async def delete(self) -> None:
        """Delete the subscription, within ``Timeouts.close``; never raises an error."""
        subscription_id, self.id = self.id, None
        if subscription_id is None:
            return
        self._handler._unregister(subscription_id)
        try:
            async with asyncio.timeout(self._options.timeouts.close.total_seconds()):
                await self._client.request(
                    "DELETE",
                    f"subscriptions/{quote(subscription_id, safe='')}",
                    what="deleting the change-notification subscription",
                    deadline=self._options.timeouts.close,
                    idempotent=True,
                )
        except (SyncError, TimeoutError) as exc:  # it lapses on its own
            logger.info(
                "mailbox %s: the Graph subscription was not deleted (%s); it expires by itself",
                self._mailbox.id,
                exc,
            )


async def watch_inbox(
    client: GraphClient,
    handler: GraphWebhookHandler,
    mailbox: Mailbox,
    *,
    hint: Callable[[PushHint], None],
    refresh_every: timedelta,
    options: SubscriptionOptions,
) -> None:
    """Keep a subscription to ``mailbox``'s Inbox until cancelled or failed."""
    events: asyncio.Queue[LifecycleEvent] = asyncio.Queue()

    def deliver(what: PushHint | LifecycleEvent) -> None:
        if what is LifecycleEvent.MISSED or isinstance(what, PushHint):
            hint(PushHint.NEW_MAIL)
        else:
            events.put_nowait(what)

    subscription = _Subscription(client, handler, mailbox, options, deliver)
    every = min(options.lifetime * _RENEW_AT, refresh_every).total_seconds()
    loop = asyncio.get_running_loop()
    try:
        await subscription.create()
        hint(PushHint.WATCHING)
        renew_at = loop.time() + every
        while True:
            try:
                async with asyncio.timeout(max(renew_at - loop.time(), 0)):
                    event = await events.get()
            except TimeoutError:
                await _renew(subscription, hint)
                renew_at = loop.time() + every
                continue
            if event is LifecycleEvent.SUBSCRIPTION_REMOVED:
                logger.info("mailbox %s: Graph removed the subscription", mailbox.id)
                subscription.forget()
                await subscription.create()
                hint(PushHint.NEW_MAIL)  # what came while it was gone
            elif event is LifecycleEvent.REAUTHORIZATION_REQUIRED:
                await _reauthorize(subscription)
            renew_at = loop.time() + every
    finally:
        await subscription.delete()


async def _renew(subscription: _Subscription, hint: Callable[[PushHint], None]) -> None:
    """Renew; a subscription Graph no longer has (it lapsed or was removed) is created
    again, and what may have come meanwhile is read."""
    try:
        await subscription.renew()
    except ConfigurationError as exc:
        logger.info("the Graph subscription could not be renewed (%s); creating it again", exc)
        subscription.forget()
        await subscription.create()
        hint(PushHint.NEW_MAIL)


async def _reauthorize(subscription: _Subscription) -> None:
    """Reauthorize, or else renew: both extend the subscription's authorization."""
    try:
        await subscription.reauthorize()
    except PermanentError as exc:
        logger.info("the Graph subscription could not be reauthorized (%s); renewing it", exc)
        await subscription.renew()
