"""Meeting requests and cancellations: what an organizer's calendar change sends to the
attendees, as iCalendar MIME in the server's outbox."""

from __future__ import annotations

import email.utils
from email import policy
from email.message import EmailMessage

from serversync.testing.ews._context import OperationContext
from serversync.testing.ews._mime import addresses_in, recipients_of
from serversync.testing.ews._store import Item
from serversync.testing.ews._xml import parse_datetime, t, text_of

__all__ = ["SENDING_MODES", "send_meeting_mail"]

# SendMeetingInvitations / SendMeetingCancellations / SendMeetingInvitationsOrCancellations
# values that send mail.
SENDING_MODES = frozenset(
    {"SendOnlyToAll", "SendToAllAndSaveCopy", "SendOnlyToChanged", "SendToChangedAndSaveCopy"}
)
_ATTENDEES = ("RequiredAttendees", "OptionalAttendees", "Resources")


def _ical_time(value: str) -> str:
    moment = parse_datetime(value)
    return moment.strftime("%Y%m%dT%H%M%SZ") if moment is not None else ""


def _ical_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def _calendar(item: Item, organizer: str, *, cancel: bool) -> str:
    lines = [
        "BEGIN:VCALENDAR",
        f"METHOD:{'CANCEL' if cancel else 'REQUEST'}",
        "PRODID:-//serversync//EWS test server//EN",
        "VERSION:2.0",
        "BEGIN:VEVENT",
        f"UID:{item.text('UID')}",
        f"SEQUENCE:{item.text('AppointmentSequenceNumber', '0')}",
        f"DTSTART:{_ical_time(item.text('Start'))}",
        f"DTEND:{_ical_time(item.text('End'))}",
        f"SUMMARY:{_ical_text(item.text('Subject'))}",
        f"LOCATION:{_ical_text(item.text('Location'))}",
        f"ORGANIZER:mailto:{organizer}",
    ]
    for name, role in zip(
        _ATTENDEES, ("REQ-PARTICIPANT", "OPT-PARTICIPANT", "NON-PARTICIPANT"), strict=True
    ):
        for _, address in addresses_in(item.props.get(name)):
            lines.append(f"ATTENDEE;ROLE={role}:mailto:{address}")
    lines += [f"STATUS:{'CANCELLED' if cancel else 'CONFIRMED'}", "END:VEVENT", "END:VCALENDAR", ""]
    return "\r\n".join(lines)


def send_meeting_mail(ctx: OperationContext, item: Item, mode: str, *, cancel: bool) -> None:
    """Send the meeting request (or cancellation) of an organizer's calendar item to its
    attendees when ``mode`` says so."""
    attendees = recipients_of(item.props, _ATTENDEES)
    if mode not in SENDING_MODES or not attendees:
        return
    mailbox = ctx.mailbox_of(item)
    organizers = addresses_in(item.props.get("Organizer"))
    if organizers and organizers[0][1].lower() != mailbox.address.lower():
        return  # only the organizer's changes go out to attendees
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = email.utils.formataddr((mailbox.display_name, mailbox.address))
    message["To"] = ", ".join(attendees)
    subject = item.text("Subject")
    message["Subject"] = f"Canceled: {subject}" if cancel else subject
    message["Date"] = email.utils.format_datetime(ctx.store.now())
    domain = mailbox.address.rpartition("@")[2] or "localhost"
    message["Message-ID"] = email.utils.make_msgid(domain=domain)
    message.set_content(text_of(item.props.get("Body")))
    method = "CANCEL" if cancel else "REQUEST"
    message.add_alternative(
        _calendar(item, mailbox.address, cancel=cancel),
        subtype="calendar",
        params={"method": method},
    )
    ctx.outbox.send(
        mailbox,
        message.as_bytes(),
        attendees,
        kind="MeetingCancellation" if cancel else "MeetingRequest",
        disposition=mode,
        saved_item_id=None,
    )
    if not cancel:
        item.props["MeetingRequestWasSent"] = t("MeetingRequestWasSent", "true")
