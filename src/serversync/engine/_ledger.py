"""The outcomes of one header batch, reported and passed by the cursor in listing order.

Messages to track wait, judged, for their bodies and their storing, which are done for
several at once; the messages after them may be decided meanwhile. An outcome is reported,
and the cursor moves past its message, only once every message before it is done, so that
a failure or a crash re-lists whatever was not stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from serversync.model import Checkpoint, ItemOutcome

__all__ = ["Ledger"]


class Ledger:
    """One header batch's outcomes by position, and the cursor they allow."""

    def __init__(
        self,
        checkpoints: Sequence[Checkpoint],
        start: Checkpoint | None,
        report: Callable[[ItemOutcome], None],
    ) -> None:
        self._checkpoints = checkpoints
        self._outcomes: list[ItemOutcome | None] = [None] * len(checkpoints)
        self._report = report
        self._done = 0
        self.progress = start
        """The cursor after the last message done with every message before it."""

    def decide(self, index: int, outcome: ItemOutcome) -> None:
        """The final outcome of the message at ``index``."""
        self._outcomes[index] = outcome

    def settle(self, upto: int) -> None:
        """Every message before ``upto`` is done (decided, or skipped without an outcome):
        report their outcomes in order and move the cursor past them."""
        for index in range(self._done, upto):
            outcome = self._outcomes[index]
            if outcome is not None:
                self._report(outcome)
        if upto > self._done:
            self.progress = self._checkpoints[upto - 1]
            self._done = upto
