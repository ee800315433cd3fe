"""Planning: pure scheduling and retry decisions."""

from serversync.planning.due import next_run_after_success, skip_reason
from serversync.planning.retry import next_send_attempt, state_after_failure

__all__ = ["next_run_after_success", "next_send_attempt", "skip_reason", "state_after_failure"]
