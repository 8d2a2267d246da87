"""The canary rules on replayed outputs: agreement with stable and accuracy on a labelled set.

Both read the controller's output check (:mod:`workbench.deploy.rollout.replay`: the same
inputs sent to both colours). Both are also tested sequentially, row by row, on every
replay of the step (``early``): a candidate is failed at whichever replay makes the
evidence against it significant, seconds into a step; a pass waits for the interval's
end. See :mod:`workbench.deploy.rollout.analysis` for the spec that
holds them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from workbench.deploy.rollout.segments import judge_output_by_segment, segment_key
from workbench.deploy.rollout.sequential import ThresholdTest
from workbench.deploy.rollout.verdicts import Observation, RuleResult, Verdict, wilson_interval
from workbench.deploy.rollout.verdicts import check_fraction as _check_fraction
from workbench.deploy.rollout.verdicts import check_positive as _check_positive
from workbench.errors import DeployValueError
from workbench.runtime.thresholds import DEFAULT_THRESHOLDS, Threshold

if TYPE_CHECKING:
    from workbench.deploy.rollout.sequential import Decision
    from workbench.deploy.rollout.signals import OutputCheck
    from workbench.runtime.scoring import ScoreResult

__all__ = ["AccuracyRule", "AgreementRule"]


@dataclass(frozen=True)
class AgreementRule:
    """Agreement of the candidate with stable on replayed inputs, by the model's task.

    Classification: top-1 agreement; fails when its Wilson lower bound is below
    ``min_agreement``. The default 0.8 sits between the demo's versions, measured against
    1.0.0 on the 540 held-out digits: 1.1.0 (retrained) agrees on 94.3% (lower bound 92%;
    on 64 rows about 85%), the degraded 1.2.0 on 74.4% (lower bound 71%).

    Other tasks are judged by their score's cautious end (the lower bound, the upper
    for CER; :mod:`workbench.runtime.scoring`): text detection by box F1 at IoU 0.5
    against ``min_box_f1`` (file key ``agreement.min_box_f1``), text recognition by the
    character error rate against ``max_cer`` (``agreement.max_cer``), generic tensors by
    the share of rows within tolerance against ``min_within_tolerance``
    (``agreement.min_within_tolerance``).

    Below ``min_rows`` rows the check is inconclusive: the 8-row manifest sample alone
    cannot tell the demo's versions apart.

    Top-1 agreement counts each distinct row once over the step's replays (by its
    contents): the same request replayed twice, or sent a hundred times and kept so in
    stable's reservoir, is one row of evidence, not a hundred. It is also tested
    sequentially (``early``): those rows feed an anytime-valid test of "agreement >=
    ``min_agreement``" (:class:`~workbench.deploy.rollout.sequential.ThresholdTest`, at
    the level of each sequential rule). When its evidence against the candidate is
    significant the rule fails at once, at whichever look the replay came in — the
    replay that starts with the step, seconds in — not at the interval's end. A pass
    still waits for the interval and its Wilson bound. The task scores are tested the
    same way on each distinct row's own score (an image's CER, capped at 1, its box F1,
    a row within tolerance: ``OutputCheck.row_scores``), and fail early only when the
    pooled score is beyond the bound too. The sequential tests are valid at any number of
    rows, so they do not wait for ``min_rows``.

    With ``segment_by``, each segment's own sample of stable's reservoir is judged as
    well (:func:`~workbench.deploy.rollout.segments.judge_output_by_segment`).

    Only the rows both colours answered are judged. A row whose replay failed (a 503 from
    a full queue, a timeout: a busy host) is missing evidence, never disagreement: the
    message and the result's ``decision`` say how many failed and why, and when too few
    rows are left the verdict is inconclusive. A candidate failing requests is the
    error-rate rule's to judge, on live traffic.
    """

    min_agreement: float = 0.8
    min_rows: int = 32
    name: str = "agreement"
    #: judged on a replay that comes in between intervals too (a fail only: see above)
    early: ClassVar[bool] = True
    reads: ClassVar[str] = "output"
    min_box_f1: float = 0.9
    max_cer: float = 0.05
    min_within_tolerance: float = 0.99
    #: judged on each segment's own sample of stable's reservoir as well, e.g.
    #: "header:x-tenant" (workbench.deploy.rollout.segments); stable must serve with
    #: --segment-by for it
    segment_by: str | None = None
    max_segments: int | None = None

    def __post_init__(self) -> None:
        _check_fraction("agreement.min", self.min_agreement)
        _check_positive("agreement.min_rows", self.min_rows)
        _check_fraction("agreement.min_box_f1", self.min_box_f1)
        _check_fraction("agreement.max_cer", self.max_cer)
        _check_fraction("agreement.min_within_tolerance", self.min_within_tolerance)
        object.__setattr__(self, "segment_by", segment_key(self.segment_by))
        if self.max_segments is not None:
            _check_positive("agreement.max_segments", self.max_segments)

    def threshold(self, metric: str) -> Threshold:
        """This rule's bound on ``metric`` (``top1``, ``box_f1``, ``cer``, ...)."""
        value = {"top1": self.min_agreement, "box_f1": self.min_box_f1, "cer": self.max_cer,
                 "within_tolerance": self.min_within_tolerance}.get(metric)
        if value is None:
            return DEFAULT_THRESHOLDS[metric]
        return Threshold(metric, value)

    def judge(self, seen: Observation) -> RuleResult:
        """On the pooled replay and, with ``segment_by``, on each segment's."""
        return judge_output_by_segment(self, seen, self._judge)

    def _judge(self, seen: Observation) -> RuleResult:
        check = seen.output
        if check is not None and check.score is not None:
            return self._judge_score(check, seen)
        base = partial(RuleResult, rule=self.name, threshold=self.min_agreement)
        if check is None:
            return base(verdict="skip", value=None, message="no inputs to replay (no labelled set)")
        base = partial(base, decision=_replayed(check))
        if check.agreement is None:
            return base(verdict="inconclusive", value=None,
                        message=_noted("no rows compared" if check.failed else
                                       "no replayed outputs", check))
        low, _ = wilson_interval(check.agreement * check.rows, check.rows)
        text = (
            f"{check.agreement:.1%} of {check.rows} rows agree, lower bound {low:.1%} "
            f"(min {self.min_agreement:.0%})"
        )
        sequential = self._sequential(check, seen.alpha)
        if sequential is not None:
            base = partial(base, decision={**_replayed(check), **sequential.to_dict()})
            if sequential.significant:  # valid at any number of rows: no minimum to wait for
                return base(verdict="fail", value=low, sustained=True, samples=check.rows,
                            message=_noted(f"{text}; below the minimum: {sequential}", check))
        if check.rows < self.min_rows:
            return base(
                verdict="inconclusive", value=check.agreement, samples=check.rows,
                message=_noted(f"{check.rows} rows compared, need {self.min_rows}", check),
            )
        if not seen.due:  # between intervals only a significant fail counts; the rest waits
            return base(verdict="inconclusive", value=low, samples=check.rows,
                        message=_noted(f"{text}; judged when the interval ends", check))
        verdict: Verdict = "pass" if low >= self.min_agreement else "fail"
        # An output disagreement does not fade with time: one failed interval is enough.
        return base(
            verdict=verdict, value=low, message=_noted(text, check), sustained=verdict == "fail",
            samples=check.rows,
        )

    def _sequential(self, check: OutputCheck, alpha: float) -> Decision | None:
        """The sequential test of "agreement >= min" on the check's rows (None when the
        minimum is 0 or 1: nothing to test against)."""
        if check.agreement is None or not 0.0 < self.min_agreement < 1.0:
            return None
        test = ThresholdTest(self.min_agreement, alpha=alpha, above=False)
        return test.decide(round(check.agreement * check.rows), check.rows)

    def _judge_score(self, check: OutputCheck, seen: Observation) -> RuleResult:
        """Box F1, CER or within tolerance: failed at any replay on the sequential test of
        the step's rows' scores, else judged on the interval's cautious end."""
        assert check.score is not None
        score = check.score.judged(self.threshold(check.score.metric), self.min_rows)
        assert score.threshold is not None
        decision = _replayed(check)
        sequential = _score_test(score.threshold, check.row_scores, seen.alpha)
        if sequential is not None:
            decision.update(sequential.to_dict())
        base = partial(RuleResult, rule=self.name, threshold=score.threshold.value,
                       decision=decision)
        bound = score.bound
        if score.value is None or bound is None:
            return base(verdict="inconclusive", value=None,
                        message=_noted("no replayed outputs", check))
        # Failed early only when the pooled score is on the wrong side too: the test reads
        # each row's score (rows weigh alike), the threshold is set on the pooled one.
        if (sequential is not None and sequential.significant
                and not score.threshold.met_by(score.value)):
            rows = int(sequential.samples)
            return base(verdict="fail", value=score.value, sustained=True, samples=rows,
                        message=_noted(f"{score}; row by row over the step's {rows} rows, "
                                       f"beyond {score.threshold}: {sequential}", check))
        if check.rows < self.min_rows:
            return base(
                verdict="inconclusive", value=score.value, samples=check.rows,
                message=_noted(f"{check.rows} rows compared, need {self.min_rows}", check),
            )
        side = "lower" if score.higher_is_better else "upper"
        text = f"{score}; {side} bound {bound:.4g} (want {score.threshold})"
        if not seen.due:  # a bootstrap bound, not a sequential test: once an interval
            return base(verdict="inconclusive", value=bound, samples=check.rows,
                        message=_noted(f"{text}; judged when the interval ends", check))
        verdict: Verdict = "pass" if score.threshold.met_by(bound) else "fail"
        return base(
            verdict=verdict, value=bound, message=_noted(text, check), sustained=verdict == "fail",
            samples=check.rows,
        )


def _score_test(threshold: Threshold, rows: tuple[tuple[bytes, float], ...],
                alpha: float) -> Decision | None:
    """The sequential test of "the rows' mean score is on the right side of
    ``threshold``" (None without rows, or at a bound of 0 or 1: nothing to test)."""
    if not rows or not 0.0 < threshold.value < 1.0:
        return None
    above = threshold.op == "<="  # CER: is it above its maximum?
    test = ThresholdTest(threshold.value, alpha=alpha, above=above)
    return test.decide(sum(value for _, value in rows), len(rows))


def _noted(text: str, check: OutputCheck) -> str:
    """``text`` and, when some replays failed, how many and why (missing evidence)."""
    failed = check.failures_text()
    return f"{text}; {failed}" if failed else text


def _replayed(check: OutputCheck) -> dict[str, Any]:
    """The replay's counts, kept with the result: rows compared, rows whose replay
    failed and why (reason -> rows)."""
    return {"compared": check.rows, "failed": check.failed, "failures": dict(check.failures)}


@dataclass(frozen=True)
class AccuracyRule:
    """Accuracy on a labelled set: fails on a drop of more than ``max_drop`` points
    against stable. Skipped when no labelled set is given. An OCR pipeline's labelled set
    (images and their lines) is judged by CER instead: the candidate's may rise at most
    ``max_drop`` points above stable's."""

    max_drop: float = 5.0
    name: str = "accuracy"
    reads: ClassVar[str] = "output"
    #: judged on a replay that comes in between intervals too (a fail only: see judge)
    early: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not 0 <= self.max_drop <= 100:
            raise DeployValueError(f"accuracy.max_drop must be in 0..100, not {self.max_drop}")

    def judge(self, seen: Observation) -> RuleResult:
        """The drop on the labelled set. It fails at whichever replay shows it, once the
        sequential test of the rows' drops (each row: how much worse the candidate did
        than stable, right or wrong, or its CER against stable's) is significant beyond
        ``max_drop`` and the measured drop is beyond it too; else it is judged when the
        interval ends."""
        result = self._judge(seen.output)
        sequential = self._sequential(seen.output, seen.alpha)
        if sequential is not None:
            result = replace(result, decision={**(result.decision or {}), **sequential.to_dict()})
            if sequential.significant and result.verdict == "fail":
                return replace(result, message=f"{result.message}; row by row: {sequential}")
        if not seen.due and result.verdict in ("pass", "fail"):
            return replace(result, verdict="inconclusive", sustained=False,
                           message=f"{result.message}; judged when the interval ends")
        return result

    def _sequential(self, check: OutputCheck | None, alpha: float) -> Decision | None:
        """The sequential test of "the mean drop per row <= max_drop", each row's drop in
        [-1, 1] mapped to [0, 1] (None without rows, or at a maximum of 100 points)."""
        if check is None or not check.row_truth or self.max_drop >= 100:
            return None
        limit = (self.max_drop / 100 + 1) / 2
        test = ThresholdTest(limit, alpha=alpha, above=True)
        total = sum((worse + 1) / 2 for _, worse in check.row_truth)
        return test.decide(total, len(check.row_truth))

    def _judge(self, check: OutputCheck | None) -> RuleResult:
        base = partial(RuleResult, rule=self.name, threshold=self.max_drop)
        if check is not None and check.truth_stable is not None and check.truth_candidate is not None:
            return self._judge_score(check.truth_stable, check.truth_candidate, check.rows)
        if check is None or check.accuracy_stable is None or check.accuracy_candidate is None:
            return base(verdict="skip", value=None, message="no labelled set")
        drop = (check.accuracy_stable - check.accuracy_candidate) * 100
        change = f"down {drop:.1f} points" if drop > 0 else f"up {-drop:.1f} points"
        text = (
            f"accuracy {check.accuracy_candidate:.1%} vs stable {check.accuracy_stable:.1%}: "
            f"{change} (max drop {self.max_drop:g})"
        )
        verdict: Verdict = "pass" if drop <= self.max_drop else "fail"
        return base(
            verdict=verdict, value=drop, message=text, sustained=verdict == "fail",
            samples=check.rows,
        )

    def _judge_score(self, stable: ScoreResult, candidate: ScoreResult, rows: int) -> RuleResult:
        """A score against the labelled set's truth (an OCR pipeline's CER): fails when the
        candidate is worse than stable by more than ``max_drop`` points."""
        base = partial(RuleResult, rule=self.name, threshold=self.max_drop)
        metric = "CER" if candidate.metric == "cer" else candidate.metric
        if stable.value is None or candidate.value is None:
            return base(verdict="inconclusive", value=None, message=f"no {metric} measured")
        change = (candidate.value - stable.value) * 100
        worse = -change if candidate.higher_is_better else change
        text = (f"{metric} {candidate.value:.1%} vs stable {stable.value:.1%} on {rows} images: "
                f"{'up' if change >= 0 else 'down'} {abs(change):.1f} points "
                f"(max {'rise' if not candidate.higher_is_better else 'drop'} {self.max_drop:g})")
        verdict: Verdict = "pass" if worse <= self.max_drop else "fail"
        return base(verdict=verdict, value=worse, message=text, sustained=verdict == "fail",
                    samples=rows)


# ----------------------------------------------------------------------------- the spec
