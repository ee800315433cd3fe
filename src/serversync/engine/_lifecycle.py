"""Mailbox administration as the engine's API offers it: adding a mailbox under the lifecycle
rules, changing its address and its approval."""

from __future__ import annotations

from serversync.errors import ConfigurationError, DuplicateMailboxError
from serversync.model import EmailApprovalStatus, Mailbox, MailboxId
from serversync.planning import check_mailbox

from ._context import EngineContext

__all__ = ["add_mailbox", "change_mailbox_address", "set_mailbox_approval"]


async def add_mailbox(ctx: EngineContext, mailbox: Mailbox) -> Mailbox:
    """Check ``mailbox`` and its profile, then store it unless its owner or id has one."""
    check_mailbox(mailbox)
    if mailbox.profile_id is not None:
        profile = await ctx.storage(
            ctx.repositories.get_profile(mailbox.profile_id), "loading a profile"
        )
        if profile is None:
            raise ConfigurationError(
                f"no email server profile {mailbox.profile_id}", mailbox_id=mailbox.id
            )
    other = await ctx.storage(ctx.repositories.create_mailbox(mailbox), "adding a mailbox")
    if other is None:
        return mailbox
    if mailbox.owner is not None and other.owner == mailbox.owner:
        said = f"{mailbox.owner} already has the mailbox {other.id} <{other.email_address}>"
    else:
        said = f"the mailbox id {other.id} is taken (by <{other.email_address}>)"
    raise DuplicateMailboxError(
        f"{said}; a user or queue has one mailbox", existing=other.id, mailbox_id=mailbox.id
    )


async def change_mailbox_address(
    ctx: EngineContext, mailbox_id: MailboxId, address: str
) -> Mailbox:
    """The mailbox with its new address saved (its approval reset when the address changed)."""
    address = address.strip()
    if not address:
        raise ConfigurationError("a mailbox needs an email address", mailbox_id=mailbox_id)
    changed = await ctx.storage(
        ctx.repositories.change_mailbox_address(mailbox_id, address),
        "changing the mailbox address",
    )
    if changed is None:
        raise ConfigurationError(f"no mailbox {mailbox_id}", mailbox_id=mailbox_id)
    return changed


async def set_mailbox_approval(
    ctx: EngineContext, mailbox_id: MailboxId, approval: EmailApprovalStatus
) -> Mailbox:
    """The mailbox with its email address status saved."""
    changed = await ctx.storage(
        ctx.repositories.set_mailbox_approval(mailbox_id, approval), "setting the approval"
    )
    if changed is None:
        raise ConfigurationError(f"no mailbox {mailbox_id}", mailbox_id=mailbox_id)
    return changed
