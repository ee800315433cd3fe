"""What the server knows of the EWS schema (Types.xsd): element order, item kinds, folder
kinds, the distinguished folders of a new mailbox, and which properties only GetItem returns.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CALENDAR",
    "CONTACT",
    "DEFAULT_FOLDER_FOR_KIND",
    "DISTINGUISHED_FOLDERS",
    "FOLDER_ELEMENT_FOR_CLASS",
    "INDEXED_CONTAINERS",
    "ITEM_CLASS_FOR_KIND",
    "ITEM_KINDS",
    "MESSAGE",
    "NAME_ONLY_IN_SUMMARY",
    "NOT_IN_SUMMARY",
    "TASK",
    "element_for_field_uri",
    "order_key",
]

MESSAGE: Final = "Message"
CALENDAR: Final = "CalendarItem"
CONTACT: Final = "Contact"
TASK: Final = "Task"
ITEM_KINDS: Final = frozenset({MESSAGE, CALENDAR, CONTACT, TASK})

ITEM_CLASS_FOR_KIND: Final = {
    MESSAGE: "IPM.Note",
    CALENDAR: "IPM.Appointment",
    CONTACT: "IPM.Contact",
    TASK: "IPM.Task",
}

# Where CreateItem puts an item when the request names no folder.
DEFAULT_FOLDER_FOR_KIND: Final = {
    MESSAGE: "drafts",
    CALENDAR: "calendar",
    CONTACT: "contacts",
    TASK: "tasks",
}

# Folder element per FolderClass; anything else is a plain t:Folder.
FOLDER_ELEMENT_FOR_CLASS: Final = {
    "IPF.Appointment": "CalendarFolder",
    "IPF.Contact": "ContactsFolder",
    "IPF.Task": "TasksFolder",
}

# (distinguished id, display name, folder class, parent distinguished id): a new mailbox's tree.
DISTINGUISHED_FOLDERS: Final[tuple[tuple[str, str, str | None, str | None], ...]] = (
    ("root", "", None, None),
    ("msgfolderroot", "Top of Information Store", None, "root"),
    ("inbox", "Inbox", "IPF.Note", "msgfolderroot"),
    ("sentitems", "Sent Items", "IPF.Note", "msgfolderroot"),
    ("drafts", "Drafts", "IPF.Note", "msgfolderroot"),
    ("deleteditems", "Deleted Items", "IPF.Note", "msgfolderroot"),
    ("outbox", "Outbox", "IPF.Note", "msgfolderroot"),
    ("junkemail", "Junk Email", "IPF.Note", "msgfolderroot"),
    ("calendar", "Calendar", "IPF.Appointment", "msgfolderroot"),
    ("contacts", "Contacts", "IPF.Contact", "msgfolderroot"),
    ("tasks", "Tasks", "IPF.Task", "msgfolderroot"),
)

# Indexed properties: the FieldURI of one entry -> the element holding all entries.
INDEXED_CONTAINERS: Final = {
    "contacts:EmailAddress": "EmailAddresses",
    "contacts:PhoneNumber": "PhoneNumbers",
    "contacts:ImAddress": "ImAddresses",
    "contacts:PhysicalAddress": "PhysicalAddresses",
}

# FindItem and SyncFolderItems return a summary: no body, attachments, MIME content or
# recipient lists ("SyncFolderItems is similar to the FindItem operation in that it cannot
# return properties like Body or Attachments"; FindItem "does not return any of the message
# body formats or the recipient lists"). GetItem returns them.
NOT_IN_SUMMARY: Final = frozenset(
    {
        "MimeContent",
        "Body",
        "UniqueBody",
        "TextBody",
        "Attachments",
        "InternetMessageHeaders",
        "ToRecipients",
        "CcRecipients",
        "BccRecipients",
        "ReplyTo",
        "RequiredAttendees",
        "OptionalAttendees",
        "Resources",
    }
)
# ... and of these mailboxes only the display name ("FindItem returns only the Name element
# and does not return the EmailAddress element in the Mailbox element").
NAME_ONLY_IN_SUMMARY: Final = frozenset({"From", "Sender", "Organizer"})

_ITEM_ORDER: Final = (
    "MimeContent",
    "ItemId",
    "ParentFolderId",
    "ItemClass",
    "Subject",
    "Sensitivity",
    "Body",
    "Attachments",
    "DateTimeReceived",
    "Size",
    "Categories",
    "Importance",
    "InReplyTo",
    "IsSubmitted",
    "IsDraft",
    "IsFromMe",
    "IsResend",
    "IsUnmodified",
    "InternetMessageHeaders",
    "DateTimeSent",
    "DateTimeCreated",
    "ResponseObjects",
    "ReminderDueBy",
    "ReminderIsSet",
    "ReminderNextTime",
    "ReminderMinutesBeforeStart",
    "DisplayCc",
    "DisplayTo",
    "HasAttachments",
    "ExtendedProperty",
    "Culture",
    "EffectiveRights",
    "LastModifiedName",
    "LastModifiedTime",
    "IsAssociated",
    "WebClientReadFormQueryString",
    "WebClientEditFormQueryString",
    "ConversationId",
    "UniqueBody",
    "Flag",
    "StoreEntryId",
    "InstanceKey",
    "NormalizedBody",
    "EntityExtractionResult",
    "PolicyTag",
    "ArchiveTag",
    "RetentionDate",
    "Preview",
    "RightsManagementLicenseData",
    "PredictedActionReasons",
    "IsClutter",
    "BlockStatus",
    "HasBlockedImages",
    "TextBody",
)

_KIND_ORDER: Final = {
    MESSAGE: (
        "Sender",
        "ToRecipients",
        "CcRecipients",
        "BccRecipients",
        "IsReadReceiptRequested",
        "IsDeliveryReceiptRequested",
        "ConversationIndex",
        "ConversationTopic",
        "From",
        "InternetMessageId",
        "IsRead",
        "IsResponseRequested",
        "References",
        "ReplyTo",
        "ReceivedBy",
        "ReceivedRepresenting",
        "ReminderMessageData",
    ),
    CALENDAR: (
        "UID",
        "RecurrenceId",
        "DateTimeStamp",
        "Start",
        "End",
        "OriginalStart",
        "IsAllDayEvent",
        "LegacyFreeBusyStatus",
        "Location",
        "When",
        "IsMeeting",
        "IsCancelled",
        "IsRecurring",
        "MeetingRequestWasSent",
        "IsResponseRequested",
        "CalendarItemType",
        "MyResponseType",
        "Organizer",
        "RequiredAttendees",
        "OptionalAttendees",
        "Resources",
        "ConflictingMeetingCount",
        "AdjacentMeetingCount",
        "ConflictingMeetings",
        "AdjacentMeetings",
        "Duration",
        "TimeZone",
        "AppointmentReplyTime",
        "AppointmentSequenceNumber",
        "AppointmentState",
        "Recurrence",
        "FirstOccurrence",
        "LastOccurrence",
        "ModifiedOccurrences",
        "DeletedOccurrences",
        "MeetingTimeZone",
        "StartTimeZone",
        "EndTimeZone",
        "ConferenceType",
        "AllowNewTimeProposal",
        "IsOnlineMeeting",
        "MeetingWorkspaceUrl",
        "NetShowUrl",
    ),
    CONTACT: (
        "FileAs",
        "FileAsMapping",
        "DisplayName",
        "GivenName",
        "Initials",
        "MiddleName",
        "Nickname",
        "CompleteName",
        "CompanyName",
        "EmailAddresses",
        "PhysicalAddresses",
        "PhoneNumbers",
        "AssistantName",
        "Birthday",
        "BusinessHomePage",
        "Children",
        "Companies",
        "ContactSource",
        "Department",
        "Generation",
        "ImAddresses",
        "JobTitle",
        "Manager",
        "Mileage",
        "OfficeLocation",
        "PostalAddressIndex",
        "Profession",
        "SpouseName",
        "Surname",
        "WeddingAnniversary",
        "HasPicture",
        "PhoneticFullName",
        "PhoneticFirstName",
        "PhoneticLastName",
        "Alias",
        "Notes",
        "Photo",
        "UserSMIMECertificate",
        "MSExchangeCertificate",
        "DirectoryId",
        "ManagerMailbox",
        "DirectReports",
    ),
    TASK: (
        "ActualWork",
        "AssignedTime",
        "BillingInformation",
        "ChangeCount",
        "Companies",
        "CompleteDate",
        "Contacts",
        "DelegationState",
        "Delegator",
        "DueDate",
        "IsAssignmentEditable",
        "IsComplete",
        "IsRecurring",
        "IsTeamTask",
        "Mileage",
        "Owner",
        "PercentComplete",
        "Recurrence",
        "StartDate",
        "Status",
        "StatusDescription",
        "TotalWork",
    ),
}

_ORDER: Final = {
    kind: {name: index for index, name in enumerate(_ITEM_ORDER + extra)}
    for kind, extra in _KIND_ORDER.items()
}


def order_key(kind: str, element: str) -> int:
    """Position of ``element`` in the schema sequence of ``kind``; unknown names go last."""
    return _ORDER.get(kind, _ORDER[MESSAGE]).get(element, 10_000)


def element_for_field_uri(field_uri: str) -> str:
    """The element a FieldURI names: ``item:Subject`` -> ``Subject``,
    ``contacts:PhysicalAddress:Street`` -> ``PhysicalAddresses``."""
    base = ":".join(field_uri.split(":")[:2])
    if base in INDEXED_CONTAINERS:
        return INDEXED_CONTAINERS[base]
    return field_uri.split(":")[1] if ":" in field_uri else field_uri
