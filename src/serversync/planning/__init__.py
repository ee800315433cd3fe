"""Planning: pure scheduling, error-policy and alert decisions."""

from serversync.planning.alerts import profile_failure_alert, workload_disabled_alert
from serversync.planning.due import cycle_interval, next_run_after_success, skip_reason
from serversync.planning.lifecycle import check_mailbox, mailbox_problems, new_mailbox
from serversync.planning.quarantine import quarantine_after_failure
from serversync.planning.retry import disables_workload, next_send_attempt, state_after_failure

__all__ = [
    "check_mailbox",
    "cycle_interval",
    "disables_workload",
    "mailbox_problems",
    "new_mailbox",
    "next_run_after_success",
    "next_send_attempt",
    "profile_failure_alert",
    "quarantine_after_failure",
    "skip_reason",
    "state_after_failure",
    "workload_disabled_alert",
]
