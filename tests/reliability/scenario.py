"""One crash trial's world: mailboxes on Dovecot, mail in them, emails waiting to be sent,
a fresh store, and the final checks.

Each mailbox gets a sent CRM email in the store, replies to it in its Dovecot Inbox (relevant
under the default filter "in response to CRM email", by In-Reply-To), newsletters nobody
tracks (not relevant), and emails in Pending Send. :meth:`Scenario.check` compares the store
and what the SMTP server accepted with what must hold after any number of crashes.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path

import attrs
from sqlalchemy import text

from serversync import (
    ActivityId,
    CredentialSource,
    EmailDirection,
    EmailStatus,
    ExpiredClaimPolicy,
    IncomingFilteringMethod,
    MailboxId,
    ProfileId,
    SecretReference,
    ServerType,
    TlsMode,
)
from serversync.mime import outgoing_message_id
from serversync.model import INBOX, ImapCheckpoint
from serversync.sql import SqlCredentials, SqlDirectory, SqlStorage
from serversync.testing import a_mailbox, a_pending_email, a_profile, a_sent_email, a_user, an_email
from tests.integration.dovecot import Dovecot, DovecotUser
from tests.integration.smtp_server import SmtpServer

__all__ = ["Outcome", "Scenario", "accepted_message_ids"]

CUSTOMER = "jane@fabrikam.example"


@attrs.frozen(kw_only=True)
class _Mailbox:
    id: MailboxId
    user: DovecotUser
    messages: int
    """How many messages its Inbox holds (their UIDs are 1..messages)."""


@attrs.define(kw_only=True)
class Outcome:
    """What one trial's checks found; ``problems`` says what broke, in words."""

    relevant: int = 0
    irrelevant: int = 0
    emails: int = 0
    lost_messages: int = 0
    duplicated_messages: int = 0
    lost_emails: int = 0
    double_sends: int = 0
    uncertain: int = 0
    uncertain_delivered: int = 0
    resent_after_expiry: int = 0
    problems: list[str] = attrs.Factory(list)


def accepted_message_ids(server: SmtpServer) -> Counter[str]:
    """How often the SMTP server accepted each Message-ID."""
    parser = BytesHeaderParser(policy=default_policy)
    found: Counter[str] = Counter()
    for received in list(server.received):
        message_id = parser.parsebytes(received.data)["Message-ID"]
        if message_id:
            found[str(message_id).strip()] += 1
    return found


@attrs.define(kw_only=True)
class Scenario:
    """The mail and emails of one trial, and what the checks expect of them."""

    trial: int
    storage: SqlStorage
    policy: ExpiredClaimPolicy
    mailboxes: list[_Mailbox] = attrs.Factory(list)
    relevant: set[str] = attrs.Factory(set)
    irrelevant: set[str] = attrs.Factory(set)
    emails: dict[ActivityId, str] = attrs.Factory(dict)
    """Pending email → the Message-ID it is sent with."""

    @classmethod
    async def create(
        cls,
        *,
        trial: int,
        label: str,
        url: str,
        policy: ExpiredClaimPolicy,
        dovecot: Dovecot,
        smtp: SmtpServer,
        secrets: Path,
        rng: random.Random,
        mailboxes: int = 2,
        replies: int = 3,
        newsletters: int = 2,
        pending: int = 2,
    ) -> Scenario:
        """Seed Dovecot and the store at ``url`` (which has the schema already); the
        scenario keeps the store open until :meth:`aclose`. ``label`` makes its Message-IDs
        unique on the SMTP server, which several runs of trials may share."""
        storage = await SqlStorage.open(url)
        scenario = cls(trial=trial, storage=storage, policy=policy)
        try:
            profile = a_profile(
                id=ProfileId(f"trial-{label}"),
                name=f"Dovecot and aiosmtpd, trial {label}",
                server_type=ServerType.IMAP_SMTP,
                incoming=dovecot.endpoint("imap", TlsMode.IMPLICIT),
                outgoing=smtp.endpoint(),
                outgoing_credential_source=CredentialSource.WITHOUT_CREDENTIALS,
            )
            await storage.add_profile(profile)
            directory, credentials = SqlDirectory(storage), SqlCredentials(storage)
            for m in range(mailboxes):
                user = dovecot.add_user()
                record = a_user(
                    user.address, filtering=IncomingFilteringMethod.IN_RESPONSE_TO_CRM_EMAIL
                )
                await directory.add(record)
                mailbox = a_mailbox(user.address, owner=record.ref, profile_id=profile.id)
                await storage.add_mailbox(mailbox)
                secret = secrets / user.address
                secret.write_text(user.password + "\n")
                await credentials.set_for_mailbox(
                    mailbox.id, SecretReference(username=user.address, file=str(secret))
                )
                anchor = f"<quote-{label}-{m}@serversync.test>"
                await storage.put_activity(
                    a_sent_email(
                        sender_mailbox=mailbox,
                        to=[CUSTOMER],
                        subject=f"Quote {label}-{m}",
                        message_id=anchor,
                    )
                )
                raw: list[bytes] = []
                kinds = ["reply"] * replies + ["newsletter"] * newsletters
                rng.shuffle(kinds)
                for k, kind in enumerate(kinds):
                    body = "x" * rng.randrange(200, 20_000)
                    if kind == "reply":
                        message_id = f"<reply-{label}-{m}-{k}@fabrikam.example>"
                        scenario.relevant.add(message_id)
                        raw.append(
                            an_email(
                                sender=CUSTOMER,
                                to=[user.address],
                                subject=f"RE: Quote {label}-{m}",
                                message_id=message_id,
                                in_reply_to=anchor,
                                body=body,
                            )
                        )
                    else:
                        message_id = f"<news-{label}-{m}-{k}@elsewhere.example>"
                        scenario.irrelevant.add(message_id)
                        raw.append(
                            an_email(
                                sender="news@elsewhere.example",
                                to=[user.address],
                                subject="This week's news",
                                message_id=message_id,
                                body=body,
                            )
                        )
                await asyncio.to_thread(dovecot.append, user, *raw)
                for k in range(pending):
                    email = a_pending_email(
                        sender_mailbox=mailbox,
                        to=[CUSTOMER],
                        subject=f"Offer {label}-{m}-{k}",
                        id=ActivityId(f"trial-{label}-{m}-{k}"),
                    )
                    await storage.put_activity(email)
                    domain = mailbox.email_address.rpartition("@")[2]
                    scenario.emails[email.id] = outgoing_message_id(email.id, domain)
                scenario.mailboxes.append(_Mailbox(id=mailbox.id, user=user, messages=len(raw)))
        except BaseException:
            await storage.aclose()
            raise
        return scenario

    async def aclose(self) -> None:
        await self.storage.aclose()

    async def sending(self) -> set[ActivityId]:
        """The emails in Sending now with their Message-ID stored (after a kill: the claims
        the dead process held that may have reached the server). A claim without one
        expired before any attempt: it is given back and sent, never left in doubt."""
        await self._dead_work_done()
        stored = await self.storage.activities()
        return {
            a.id for a in stored if a.status is EmailStatus.SENDING and a.message_id is not None
        }

    async def _dead_work_done(self) -> None:
        """On PostgreSQL, wait until the server has finished what a killed process sent it.

        A COMMIT already on the wire when the process died still runs in its server process,
        a moment later; a snapshot taken before would see the email Sending while it ends
        Sent. No engine process runs while this waits, so every busy server process but our
        own belongs to the dead one.
        """
        if self.storage.engine.dialect.name != "postgresql":
            return  # SQLite: the writes were the process's own, done or never done
        busy = text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')"
        )
        for _ in range(500):
            async with self.storage.engine.connect() as connection:
                if not await connection.scalar(busy):
                    return
            await asyncio.sleep(0.01)
        raise AssertionError("PostgreSQL still runs what a killed engine process sent, after 5 s")

    async def settled(self) -> bool:
        """Whether every Inbox was read to its end and no email waits or is in flight."""
        for mailbox in self.mailboxes:
            cursor = await self.storage.load_checkpoint(mailbox.id, INBOX)
            if not isinstance(cursor, ImapCheckpoint) or cursor.last_uid < mailbox.messages:
                return False
        waiting = {EmailStatus.PENDING_SEND, EmailStatus.SENDING}
        stored = await self.storage.activities()
        return not any(a.status in waiting for a in stored if a.id in self.emails)

    async def check(self, accepted: Counter[str], orphaned: set[ActivityId]) -> Outcome:
        """Compare the store and the SMTP server's log with what must hold.

        ``orphaned`` are the emails a killed process left in Sending.
        """
        stored = await self.storage.activities()
        outcome = Outcome(
            relevant=len(self.relevant), irrelevant=len(self.irrelevant), emails=len(self.emails)
        )
        problems = outcome.problems
        incoming = Counter(
            str(a.message_id) for a in stored if a.direction is EmailDirection.INCOMING
        )
        for message_id in sorted(self.relevant):
            count = incoming[message_id]
            if count == 0:
                outcome.lost_messages += 1
                problems.append(f"relevant message {message_id} has no email activity")
            elif count > 1:
                outcome.duplicated_messages += 1
                problems.append(f"relevant message {message_id} has {count} email activities")
        for message_id in sorted(self.irrelevant):
            if incoming[message_id]:
                outcome.duplicated_messages += 1
                problems.append(f"message {message_id}, not relevant, was tracked")
        by_id = {a.id: a for a in stored}
        for activity_id, message_id in sorted(self.emails.items()):
            email = by_id[activity_id]
            sends = accepted[message_id]
            what = f"email {activity_id} ({email.status.name}, accepted {sends}x)"
            if sends > 1:
                outcome.double_sends += 1
            if email.delivery_uncertain:
                outcome.uncertain += 1
                outcome.uncertain_delivered += sends > 0
            if activity_id in orphaned and self.policy is ExpiredClaimPolicy.RESEND and sends:
                outcome.resent_after_expiry += 1
            if email.status is EmailStatus.SENT:
                if sends == 0:
                    outcome.lost_emails += 1
                    problems.append(f"{what}: Sent, but the server never accepted it")
                if sends > 1 and self.policy is ExpiredClaimPolicy.MARK_UNCERTAIN:
                    problems.append(f"{what}: sent more than once under the default policy")
                elif sends > 1 and activity_id not in orphaned:
                    problems.append(f"{what}: sent more than once, and no crash left its claim")
                continue
            if self.policy is ExpiredClaimPolicy.RESEND:
                outcome.lost_emails += 1
                problems.append(f"{what}: under the resend policy every email ends Sent")
                continue
            if email.status is EmailStatus.FAILED and email.delivery_uncertain:
                if activity_id not in orphaned:
                    problems.append(f"{what}: uncertain, but no crash left it in Sending")
                if sends > 1:
                    problems.append(f"{what}: the server accepted it more than once")
                continue
            outcome.lost_emails += 1
            problems.append(f"{what}: neither Sent nor Failed with delivery_uncertain")
        for activity_id in sorted(orphaned):
            email = by_id[activity_id]
            expired = email.last_send_error is not None and (
                email.last_send_error.error_type == "ClaimExpired"
            )
            if self.policy is ExpiredClaimPolicy.MARK_UNCERTAIN and not (
                email.delivery_uncertain and expired
            ):
                problems.append(
                    f"email {activity_id}: its claim expired, yet it is {email.status.name} "
                    "without delivery_uncertain and ClaimExpired"
                )
        return outcome
