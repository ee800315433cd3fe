"""The synchronized fields of appointments, contacts and tasks, and which way each may flow.

Dynamics keeps this table in ``PrincipalSyncAttributeMap`` (allowed and default direction per
field); admins change directions under "synchronized fields", within what a field allows.
Appointment time, importance, attendees, organizer, regarding and show-time-as are fixed
two-way; subject, body and location take any direction. The contact's Home and Other
addresses sync only when the organisation syncs all three mailing addresses.

The table also fixes each field's values, for every transport alike: the choice fields take
the lower-case names of :data:`IMPORTANCE_VALUES`, :data:`SHOW_TIME_AS_VALUES` and
:data:`TASK_STATUS_VALUES`; appointment times are timezone-aware datetimes, a task's start and
due and a contact's birthday and anniversary are dates. A transport may hold fewer fields
than the table (``ExchangeItemsSession.held_fields``): the others are not synchronized there.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from serversync.errors import ConfigurationError
from serversync.model.act import ActEntity, SyncDirection

__all__ = [
    "ANY_DIRECTION",
    "FIELDS",
    "FIXED_TWO_WAY",
    "IMPORTANCE_VALUES",
    "SHOW_TIME_AS_VALUES",
    "TASK_STATUS_VALUES",
    "FieldSpec",
    "field_directions",
    "validate_directions",
]

ANY_DIRECTION = frozenset(SyncDirection)
"""Every direction: the field can be two-way, one-way either way, or not synchronized."""

FIXED_TWO_WAY = frozenset({SyncDirection.TWO_WAY})
"""A fixed field: always two-way."""

IMPORTANCE_VALUES = ("low", "normal", "high")
"""The values of an appointment's ``importance`` and a task's ``priority``."""

SHOW_TIME_AS_VALUES = (
    "free",
    "tentative",
    "busy",
    "out_of_office",
    "working_elsewhere",
    "no_data",
)
"""The values of an appointment's ``show_time_as``."""

TASK_STATUS_VALUES = ("not_started", "in_progress", "completed", "waiting_on_others", "deferred")
"""The values of a task's ``status``."""


@attrs.frozen(kw_only=True)
class FieldSpec:
    """One synchronized field: its name, the directions it allows and its default."""

    name: str
    allowed: frozenset[SyncDirection] = ANY_DIRECTION
    default: SyncDirection = SyncDirection.TWO_WAY
    description: str = ""
    values: tuple[str, ...] = ()
    """The values a choice field takes; empty for any value of its type."""


def _specs(*specs: FieldSpec) -> Mapping[str, FieldSpec]:
    return {spec.name: spec for spec in specs}


def _open(name: str, description: str, default: SyncDirection = SyncDirection.TWO_WAY) -> FieldSpec:
    return FieldSpec(name=name, default=default, description=description)


def _fixed(name: str, description: str, values: tuple[str, ...] = ()) -> FieldSpec:
    return FieldSpec(name=name, allowed=FIXED_TWO_WAY, description=description, values=values)


def _choice(name: str, description: str, values: tuple[str, ...]) -> FieldSpec:
    return FieldSpec(name=name, description=description, values=values)


def _address(prefix: str, label: str, default: SyncDirection) -> tuple[FieldSpec, ...]:
    parts = ("street", "city", "state", "postal_code", "country")
    return tuple(_open(f"{prefix}_{part}", f"{label} address: {part}", default) for part in parts)


_APPOINTMENT = _specs(
    _open("subject", "subject"),
    _open("body", "description / body"),
    _open("location", "location"),
    _fixed("start", "start time (timezone-aware)"),
    _fixed("end", "end time (timezone-aware)"),
    _fixed("is_all_day", "all-day event"),
    _fixed("time_zone", "IANA time zone the times are shown in"),
    _fixed("importance", "importance", IMPORTANCE_VALUES),
    _fixed("attendees", "required and optional attendees"),
    _fixed("organizer", "organizer address"),
    _fixed("show_time_as", "show time as", SHOW_TIME_AS_VALUES),
    _fixed("regarding", "regarding record (a CRM concept: Exchange does not hold it)"),
    _fixed("recurrence", "recurrence pattern of a series master"),
)

_CONTACT = _specs(
    _open("salutation", "salutation"),
    _open("first_name", "first name"),
    _open("middle_name", "middle name"),
    _open("last_name", "last name"),
    _open("suffix", "suffix"),
    _open("nickname", "nickname"),
    _open("company", "company name"),
    _open("job_title", "job title"),
    _open("department", "department"),
    _open("email1", "email address 1"),
    _open("email2", "email address 2"),
    _open("email3", "email address 3"),
    _open("business_phone", "business phone"),
    _open("business_phone2", "business phone 2"),
    _open("home_phone", "home phone"),
    _open("mobile_phone", "mobile phone"),
    _open("fax", "fax"),
    _open("website", "web site"),
    _open("birthday", "birthday (a date)"),
    _open("anniversary", "anniversary (a date)"),
    _open("spouse_name", "spouse or partner"),
    *_address("business_address", "business (mailing)", SyncDirection.TWO_WAY),
    *_address("home_address", "home", SyncDirection.NONE),
    *_address("other_address", "other", SyncDirection.NONE),
    _open("body", "notes"),
)

_TASK = _specs(
    _open("subject", "subject"),
    _open("body", "description / body"),
    _open("start", "start date (a date)"),
    _open("due", "due date (a date)"),
    _choice("status", "status", TASK_STATUS_VALUES),
    _choice("priority", "priority", IMPORTANCE_VALUES),
    _open("percent_complete", "percent complete"),
)

FIELDS: Mapping[ActEntity, Mapping[str, FieldSpec]] = {
    ActEntity.APPOINTMENT: _APPOINTMENT,
    ActEntity.CONTACT: _CONTACT,
    ActEntity.TASK: _TASK,
}
"""Every synchronized field of each entity, in display order."""

_EXTRA_ADDRESSES = tuple(
    spec.name
    for spec in _CONTACT.values()
    if spec.name.startswith(("home_address_", "other_address_"))
)


def validate_directions(overrides: Mapping[ActEntity, Mapping[str, SyncDirection]]) -> None:
    """Raise :class:`~serversync.errors.ConfigurationError` when an override names an unknown
    field or a direction the field does not allow (a fixed two-way field set to one-way)."""
    for entity, fields in overrides.items():
        specs = FIELDS[ActEntity(entity)]
        for name, direction in fields.items():
            spec = specs.get(name)
            if spec is None:
                raise ConfigurationError(f"{entity} has no synchronized field {name!r}")
            if SyncDirection(direction) not in spec.allowed:
                allowed = ", ".join(sorted(d.value for d in spec.allowed))
                raise ConfigurationError(
                    f"{entity} field {name!r} cannot sync {direction.value}; it allows {allowed}"
                )


def field_directions(
    entity: ActEntity,
    overrides: Mapping[ActEntity, Mapping[str, SyncDirection]] | None = None,
    *,
    all_contact_addresses: bool = False,
) -> Mapping[str, SyncDirection]:
    """The direction of every field of ``entity``: the default, or the override.

    ``all_contact_addresses`` (Dynamics' ``iscontactmailingaddresssyncenabled`` off) makes the
    contact's Home and Other addresses two-way by default too. Invalid overrides raise
    :class:`~serversync.errors.ConfigurationError` (see :func:`validate_directions`).
    """
    overrides = overrides or {}
    validate_directions(overrides)
    directions = {name: spec.default for name, spec in FIELDS[entity].items()}
    if entity is ActEntity.CONTACT and all_contact_addresses:
        for name in _EXTRA_ADDRESSES:
            directions[name] = SyncDirection.TWO_WAY
    directions.update(overrides.get(entity, {}))
    return directions
