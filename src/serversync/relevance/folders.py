"""Folder-level tracking rules: which folders are tracked, and the rule that tracks them.

Dynamics tracks Exchange folders by id, only under Inbox, at most 25 rules per mailbox, never
for queue mailboxes. serversync also tracks IMAP folders, whose id is the folder's name
(IMAP has no id that survives a rename, so renaming an IMAP folder ends its rule).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from serversync.errors import ConfigurationError
from serversync.model import (
    INBOX,
    DecisionReason,
    EmailServerProfile,
    EntityName,
    Mailbox,
    MailboxTrackingFolder,
    ParsedHeaders,
    RemoteFolder,
    ServerType,
)
from serversync.ports.relevance import RelevanceFacts, Track, Verdict
from serversync.relevance.correlation import correlate
from serversync.settings import OrganizationSettings

__all__ = [
    "FolderTrackingRule",
    "is_under_inbox",
    "tracked_folders",
    "validate_tracking_folder",
]


def _supports_folder_tracking(
    mailbox: Mailbox, profile: EmailServerProfile | None, org: OrganizationSettings
) -> str | None:
    """Why the mailbox cannot have folder-level tracking, or ``None`` when it can."""
    if not org.is_folder_based_tracking_enabled:
        return "folder-level tracking is off for the organisation"
    if mailbox.owner is not None and mailbox.owner.entity == EntityName.QUEUE:
        return "queue mailboxes do not support folder-level tracking"
    if profile is not None and profile.server_type is ServerType.OTHER_POP3_SMTP:
        return "POP3 has no folders to track"
    return None


def validate_tracking_folder(
    rule: MailboxTrackingFolder,
    existing: Sequence[MailboxTrackingFolder],
    *,
    mailbox: Mailbox,
    profile: EmailServerProfile | None,
    org: OrganizationSettings,
) -> None:
    """Check a new rule as Dynamics does when it is created; raise ConfigurationError if not.

    The folder id itself is not checked here (Dynamics does not either); a rule whose folder
    is missing or outside Inbox is ignored when mail is synchronized.
    """
    why_not = _supports_folder_tracking(mailbox, profile, org)
    if why_not is not None:
        raise ConfigurationError(why_not, mailbox_id=mailbox.id)
    others = [r for r in existing if r.mailbox_id == rule.mailbox_id and r.id != rule.id]
    if len(others) >= org.max_folder_based_tracking_mappings:
        raise ConfigurationError(
            f"a mailbox has at most {org.max_folder_based_tracking_mappings} folder tracking rules",
            mailbox_id=mailbox.id,
        )
    if any(r.exchange_folder_id == rule.exchange_folder_id for r in others):
        raise ConfigurationError("the folder already has a tracking rule", mailbox_id=mailbox.id)


def is_under_inbox(folder: RemoteFolder, folders: Sequence[RemoteFolder]) -> bool:
    """Whether ``folder`` sits (at any depth) under the Inbox."""
    by_id = {f.id: f for f in folders}
    parent = folder.parent_id
    seen: set[str] = set()
    while parent is not None and parent not in seen:
        if parent.upper() == INBOX:
            return True
        seen.add(parent)
        parent_folder = by_id.get(parent)
        parent = parent_folder.parent_id if parent_folder is not None else None
    return False


def tracked_folders(
    rules: Sequence[MailboxTrackingFolder],
    folders: Sequence[RemoteFolder],
    *,
    mailbox: Mailbox,
    profile: EmailServerProfile | None,
    org: OrganizationSettings,
) -> list[tuple[MailboxTrackingFolder, RemoteFolder]]:
    """The rules that apply now, each with its folder: found by id and under Inbox.

    Only the first ``max_folder_based_tracking_mappings`` rules count; a folder moved
    outside Inbox, or deleted, disables its rule until it is back.
    """
    if _supports_folder_tracking(mailbox, profile, org) is not None:
        return []
    by_id = {f.id: f for f in folders}
    applied = []
    for rule in list(rules)[: org.max_folder_based_tracking_mappings]:
        folder = by_id.get(rule.exchange_folder_id)
        if folder is not None and is_under_inbox(folder, folders):
            applied.append((rule, folder))
    return applied


@attrs.frozen
class FolderTrackingRule:
    """Track every message in a folder with a tracking rule, whatever the filtering method;
    the rule's Regarding wins over a correlated one."""

    name: str = "folder-tracking"

    def evaluate(self, message: ParsedHeaders, facts: RelevanceFacts) -> Verdict | None:
        """Track messages of a tracked folder; no opinion elsewhere."""
        rule = facts.tracking_folder
        if rule is None:
            return None
        folder = rule.exchange_folder_name or rule.exchange_folder_id
        return Track(
            reason=DecisionReason.ACCEPT_ALL,
            rule=self.name,
            explanation=f"folder {folder!r} is tracked"
            + (f" regarding {rule.regarding}" if rule.regarding else ""),
            correlation=correlate(message, facts),
            regarding=rule.regarding,
            tracking_folder_id=rule.id,
        )
