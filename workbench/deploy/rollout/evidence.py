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
    """Distinct replayed rows of one step: whether the candidate agreed on each, its
    score on each (a task judged by a score), and how much worse it did than stable
    against the truth on each (a labelled set)."""

    def __init__(self) -> None:
        self._step: Hashable = None
        self._rows: dict[bytes, bool] = {}
        self._scores: dict[bytes, float] = {}
        self._truth: dict[bytes, float] = {}
        # (segment key, segment) -> that segment's own tally (checks judged per segment)
        self._segments: dict[tuple[str, str], AgreementTally] = {}

    def add(self, step: Hashable, check: OutputCheck) -> OutputCheck:
        """Count ``check``'s rows not seen before in ``step`` (a new step starts afresh);
        ``check`` back with its ``rows`` and ``agreement`` over every distinct row of the
        step so far, and its ``row_scores`` and ``row_truth`` likewise; each segment's
        check (``segments``) counted the same way, on its own. A check without rows of
        its own (nothing compared) comes back as it is."""
        if step != self._step:
            self._step, self._rows, self._scores, self._truth = step, {}, {}, {}
            self._segments = {}
        if check.segments:
            check = replace(check, segments={
                key: {segment: self._segment(key, segment).add(step, part)
                      for segment, part in parts.items()}
                for key, parts in check.segments.items()})
        if check.row_scores:
            check = replace(check, row_scores=_kept(self._scores, check.row_scores))
        if check.row_truth:
            check = replace(check, row_truth=_kept(self._truth, check.row_truth))
        if not check.row_agreement:
            return check
        for digest, agreed in check.row_agreement:
            self._rows.setdefault(digest, agreed)
        rows = len(self._rows)
        return replace(check, rows=rows, agreement=sum(self._rows.values()) / rows)


    def _segment(self, key: str, segment: str) -> AgreementTally:
        tally = self._segments.get((key, segment))
        if tally is None:
            tally = self._segments[(key, segment)] = AgreementTally()
        return tally


def _kept(seen: dict[bytes, float], given: tuple[tuple[bytes, float], ...]
          ) -> tuple[tuple[bytes, float], ...]:
    """``given`` rows not in ``seen`` added to it; every row seen so far, first seen first."""
    for digest, value in given:
        seen.setdefault(digest, value)
    return tuple(seen.items())
