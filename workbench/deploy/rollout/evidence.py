"""A step's replayed rows, each counted once: :class:`AgreementTally`.

The output check replays inputs to both colours: the labelled set, or stable's reservoir
of recent requests. Two replays in one step send many of the same rows again, and a model
answers a row the same way every time, so a row seen twice is not twice the evidence. The
tally keeps, per step, each distinct row's top-1 agreement (by its digest,
:func:`~workbench.deploy.rollout.replay.row_digests`) and hands the agreement rule one
growing sample: what its sequential test
(:class:`~workbench.deploy.rollout.sequential.ThresholdTest`) needs to be read at every
replay, not only at the end of an interval.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench.deploy.rollout.signals import OutputCheck

__all__ = ["AgreementTally"]


class AgreementTally:
    """Distinct replayed rows of one step and whether the candidate agreed on each."""

    def __init__(self) -> None:
        self._step: Hashable = None
        self._rows: dict[bytes, bool] = {}

    def add(self, step: Hashable, check: OutputCheck) -> OutputCheck:
        """Count ``check``'s rows not seen before in ``step`` (a new step starts afresh);
        ``check`` back with its ``rows`` and ``agreement`` over every distinct row of the
        step so far. A check without rows of its own (a task scored otherwise, nothing
        compared) comes back as it is."""
        if step != self._step:
            self._step, self._rows = step, {}
        if not check.row_agreement:
            return check
        for digest, agreed in check.row_agreement:
            self._rows.setdefault(digest, agreed)
        rows = len(self._rows)
        return replace(check, rows=rows, agreement=sum(self._rows.values()) / rows)
