"""Host code around serversync, as a CRM might write it: the part its own tests cover.

* ``VaultCredentials`` gives the engine each mailbox's password from the CRM's secret store
  when a connection opens (the ``serversync.ports.CredentialProvider`` port);
* ``NewEmailNotifier`` turns every tracked email into an in-app notification for the CRM's
  users (an observer, ``serversync.BaseSyncObserver``);
* ``summarize`` condenses what a sync did into the numbers the CRM shows on its admin page.

``test_crm_mail.py`` beside it tests this code with ``serversync.testing``: no mail server, no
database, no waiting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from serversync import (
    BaseSyncObserver,
    ConfigurationError,
    Credentials,
    CredentialSource,
    EmailServerProfile,
    EmailStatus,
    ItemOutcome,
    Mailbox,
    MailboxRunReport,
    OutcomeKind,
    RunStatus,
    Secret,
    Workload,
)


class VaultCredentials:
    """Mailbox passwords from the CRM's secret store, keyed ``mail/<address>``."""

    def __init__(self, vault: Mapping[str, str]) -> None:
        self._vault = vault

    async def resolve(
        self, mailbox: Mailbox, profile: EmailServerProfile, workload: Workload
    ) -> Credentials | None:
        """The mailbox's credentials; ``ConfigurationError`` when the vault has none."""
        source = (
            profile.outgoing_credential_source
            if workload is Workload.OUTGOING
            else profile.incoming_credential_source
        )
        if source is CredentialSource.WITHOUT_CREDENTIALS:
            return None
        password = self._vault.get(f"mail/{mailbox.email_address}")
        if password is None:
            raise ConfigurationError(
                f"no password in the vault for {mailbox.email_address}", mailbox_id=mailbox.id
            )
        return Credentials(username=mailbox.email_address, secret=Secret(password))


@attrs.frozen
class Notification:
    """An in-app notification of the CRM."""

    mailbox_id: str
    text: str


class NewEmailNotifier(BaseSyncObserver):
    """Collects a notification for every email the engine tracks."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []

    def item_processed(self, outcome: ItemOutcome) -> None:
        """Notify on tracked emails only; duplicates and rejected mail stay quiet."""
        if outcome.kind is OutcomeKind.TRACKED:
            sender = outcome.sender or "unknown sender"
            text = f"New email from {sender}: {outcome.subject or '(no subject)'}"
            self.notifications.append(Notification(mailbox_id=outcome.mailbox_id, text=text))


@attrs.frozen
class SyncSummary:
    """What the CRM's admin page shows after a sync."""

    tracked: int = 0
    ignored: int = 0
    sent: int = 0
    failed_mailboxes: tuple[str, ...] = ()


def summarize(reports: Iterable[MailboxRunReport]) -> SyncSummary:
    """Count tracked and ignored messages, sent emails and failed mailboxes."""
    tracked = ignored = sent = 0
    failed: list[str] = []
    for report in reports:
        tracked += sum(1 for i in report.items if i.kind is OutcomeKind.TRACKED)
        ignored += sum(1 for i in report.items if i.kind is not OutcomeKind.TRACKED)
        sent += sum(1 for s in report.sends if s.status is EmailStatus.SENT)
        if report.status is RunStatus.FAILED and report.mailbox_id not in failed:
            failed.append(report.mailbox_id)
    return SyncSummary(tracked=tracked, ignored=ignored, sent=sent, failed_mailboxes=tuple(failed))
