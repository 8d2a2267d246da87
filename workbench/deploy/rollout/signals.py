"""What the canary analysis reads: per-color windows of live traffic and output checks.

Sources (``scrape`` reads each instance's ``/metrics``; ``prometheus`` runs PromQL on an
existing Prometheus) produce these values; the analysis rules judge them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping

    from workbench.runtime.scoring import ScoreResult


@dataclass(frozen=True)
class ColorWindow:
    """What one color's instances did over the last ``seconds``."""

    color: str
    seconds: float
    requests: float  # inference requests answered in the window (any status)
    errors: float  # of which server errors (5xx); client errors (4xx) are not counted
    p99_ms: float | None  # None when there were no requests
    memory_bytes: float | None  # resident memory now (sum over the color's instances)
    # the window's latency histogram: (upper bound in seconds, cumulative count), ascending;
    # None when the source does not read it (the latency rules then judge ``p99_ms`` alone)
    buckets: tuple[tuple[float, float], ...] | None = None
    # segment key ("header:x-tenant") -> segment -> its window, from instances serving with
    # --segment-by (workbench.deploy.rollout.segments); None when the source has none
    segments: Mapping[str, Mapping[str, ColorWindow]] | None = None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass(frozen=True)
class OutputCheck:
    """Stable and candidate answers to the same replayed inputs.

    Every figure is measured on the ``rows`` both colours answered. A row whose replay
    failed on either colour (a full queue's 503, a timeout, a reset connection) is missing
    evidence, not disagreement: it is left out and counted in ``failed``, by reason in
    ``failures``. A candidate that fails requests is the error-rate rule's business.
    """

    rows: int  # rows both colours answered: the rows compared
    agreement: float | None  # top-1 agreement of candidate with stable
    accuracy_stable: float | None  # on a labelled set, when one is given
    accuracy_candidate: float | None
    failed: int = 0  # replayed rows left out: a colour's answer to them failed
    # why, as (reason, rows), e.g. ("candidate 503", 64), most rows first
    failures: tuple[tuple[str, int], ...] = ()
    # the task's primary score (box F1, CER, within tolerance) when the task is not
    # classification; ``agreement`` is then None
    score: ScoreResult | None = None
    # against ground truth, for a task judged by a score (an OCR pipeline on a labelled
    # set: each one's CER); ``accuracy_*`` are then None
    truth_stable: ScoreResult | None = None
    truth_candidate: ScoreResult | None = None
    # top-1 agreement row by row, as (the row's digest, agreed), for classification: what
    # lets the controller count each distinct row once over a step's replays
    # (workbench.deploy.rollout.evidence)
    row_agreement: tuple[tuple[bytes, bool], ...] = ()
    # the task's score row by row (each image's CER, box F1, within tolerance: in [0, 1]),
    # as (digest, score), for a task judged by a score: what its sequential test reads
    row_scores: tuple[tuple[bytes, float], ...] = ()
    # on a labelled set, row by row, how much worse the candidate did than stable against
    # the truth, in [-1, 1] (wrong where stable was right: 1; each image's CER, capped at
    # 1, minus stable's): what the accuracy rule's sequential test reads
    row_truth: tuple[tuple[bytes, float], ...] = ()
    # segment key ("header:x-tenant") -> segment -> the check of that segment's sample of
    # stable's reservoir, for an agreement rule judged per segment; None when not asked
    # for or stable keeps no such samples (workbench.deploy.rollout.segments)
    segments: Mapping[str, Mapping[str, OutputCheck]] | None = None

    @property
    def replayed(self) -> int:
        """Rows sent: those compared and those whose replay failed."""
        return self.rows + self.failed

    def failures_text(self) -> str:
        """``64 of 256 replayed rows failed: candidate 503 (64)``; empty when none did."""
        if not self.failed:
            return ""
        why = ", ".join(f"{reason} ({rows})" for reason, rows in self.failures)
        return f"{self.failed} of {self.replayed} replayed rows failed" + (f": {why}" if why else "")


class MetricsSource(Protocol):
    def window(self, color: str, seconds: float) -> ColorWindow:
        """Traffic of ``color`` over the last ``seconds``."""
        ...
