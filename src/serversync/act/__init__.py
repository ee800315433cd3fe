"""Appointment, contact and task (ACT) synchronization decided in pure code: no I/O.

- :mod:`~serversync.act.fields`: the synchronized fields and their directions;
- :mod:`~serversync.act.filters`: users' synchronization filters (a union);
- :mod:`~serversync.act.changes`: field fingerprints and change detection;
- :mod:`~serversync.act.conflicts`: the conflict policy;
- :mod:`~serversync.act.deletes`: delete, unlink and cancellation rules;
- :mod:`~serversync.act.plan`: one cycle's steps for one user and entity.

The engine (``serversync.engine``) reads the ports, calls :func:`plan_act_sync` and applies
the steps.
"""

from serversync.act.changes import (
    changed_fields,
    fingerprint,
    fingerprints,
    item_values,
    record_values,
)
from serversync.act.conflicts import (
    ConflictDecision,
    FieldConflict,
    Side,
    decision_of,
    resolve_conflict,
)
from serversync.act.deletes import (
    DeleteDecision,
    DeleteOutcome,
    is_cancelled,
    on_cancellation,
    on_crm_delete,
    on_exchange_delete,
    on_left_filters,
)
from serversync.act.fields import (
    ANY_DIRECTION,
    FIELDS,
    FIXED_TWO_WAY,
    IMPORTANCE_VALUES,
    SHOW_TIME_AS_VALUES,
    TASK_STATUS_VALUES,
    FieldSpec,
    field_directions,
    validate_directions,
)
from serversync.act.filters import enabled_filters, in_sync_scope, matches, record_field
from serversync.act.plan import (
    ActPlan,
    ActStep,
    CreateInCrm,
    CreateInExchange,
    DeleteInCrm,
    DeleteInExchange,
    Echo,
    MarkDeletedInExchange,
    Skip,
    Unlink,
    UpdateLinked,
    directions_for,
    items_to_read,
    plan_act_sync,
)

__all__ = [
    "ANY_DIRECTION",
    "FIELDS",
    "FIXED_TWO_WAY",
    "IMPORTANCE_VALUES",
    "SHOW_TIME_AS_VALUES",
    "TASK_STATUS_VALUES",
    "ActPlan",
    "ActStep",
    "ConflictDecision",
    "CreateInCrm",
    "CreateInExchange",
    "DeleteDecision",
    "DeleteInCrm",
    "DeleteInExchange",
    "DeleteOutcome",
    "Echo",
    "FieldConflict",
    "FieldSpec",
    "MarkDeletedInExchange",
    "Side",
    "Skip",
    "Unlink",
    "UpdateLinked",
    "changed_fields",
    "decision_of",
    "directions_for",
    "enabled_filters",
    "field_directions",
    "fingerprint",
    "fingerprints",
    "in_sync_scope",
    "is_cancelled",
    "item_values",
    "items_to_read",
    "matches",
    "on_cancellation",
    "on_crm_delete",
    "on_exchange_delete",
    "on_left_filters",
    "plan_act_sync",
    "record_field",
    "record_values",
    "resolve_conflict",
    "validate_directions",
]
