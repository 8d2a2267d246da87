"""Task scores and accuracy judged on every replay of a step, not only when its interval
ends: each replayed row's score (an image's CER, its box F1, a row within tolerance) and,
on a labelled set, how much worse the candidate did than stable on each row feed a
sequential test over the step's distinct rows; a candidate clearly beyond its bound is
rolled back at the look that replay comes in. Fake metrics and a fake clock
(tests/deploy/test_controller.py); the replays are OutputChecks built here, row by row."""

from __future__ import annotations

import numpy as np

from tests.deploy.test_agreement_early import Replays, check, early, rolled_back_early
from tests.deploy.test_controller import look, make
from workbench.deploy.rollout.analysis import AccuracyRule, AgreementRule, AnalysisSpec, ErrorRateRule
from workbench.deploy.rollout.controller import Stage
from workbench.deploy.rollout.evidence import AgreementTally
from workbench.deploy.rollout.phases import Phase
from workbench.deploy.rollout.sequential import threshold_log_lr
from workbench.deploy.rollout.signals import ColorWindow, OutputCheck
from workbench.deploy.rollout.verdicts import Observation, RuleResult
from workbench.model.task import Task
from workbench.runtime.scoring import ScoreResult


def spec(*rules: object) -> AnalysisSpec:
    return AnalysisSpec(steps=(5, 25, 100), interval=30.0, scrape=1.0,
                        rules=(ErrorRateRule(), *rules))  # type: ignore[arg-type]


def scored(values: list[float], *, metric: str = "cer", pooled: float | None = None,
           first: int = 0) -> OutputCheck:
    """A replay of rows ``first`` .. (distinct digests), each with its score; the pooled
    score is their mean unless given (its interval +-0.01)."""
    keys = [i.to_bytes(8, "big") for i in range(first, first + len(values))]
    value = float(np.mean(values)) if pooled is None else pooled
    task = Task.OCR if metric == "cer" else Task.TEXT_DETECTION
    score = ScoreResult(task, metric, value, (max(value - 0.01, 0.0), min(value + 0.01, 1.0)),
                        len(values))
    return OutputCheck(rows=len(values), agreement=None, accuracy_stable=None,
                       accuracy_candidate=None, score=score,
                       row_scores=tuple(zip(keys, values, strict=True)))


def between_intervals(rule: AgreementRule | AccuracyRule, output: OutputCheck) -> RuleResult:
    """``rule``'s judgement at a look that does not end an interval."""
    window = ColorWindow("green", 2.0, 100, 0, 10.0, None)
    return rule.judge(Observation(30.0, window, output=output, alpha=0.01 / 3, due=False))


def labelled(rows: int, stable_right: float, candidate_right: float) -> OutputCheck:
    """A labelled classification replay: stable right on its share of rows, the candidate
    on the first ``candidate_right`` share of those (wrong wherever stable is wrong)."""
    keys = [i.to_bytes(8, "big") for i in range(rows)]
    s = [i < round(stable_right * rows) for i in range(rows)]
    c = [i < round(candidate_right * rows) for i in range(rows)]
    worse = [float(a) - float(b) for a, b in zip(s, c, strict=True)]
    return OutputCheck(rows=rows, agreement=1.0, accuracy_stable=sum(s) / rows,
                       accuracy_candidate=sum(c) / rows,
                       row_agreement=tuple((k, True) for k in keys),
                       row_truth=tuple(zip(keys, worse, strict=True)))


def test_a_wrong_dictionary_is_rolled_back_on_the_replay_that_starts_the_step() -> None:
    # every character read as the next one: each page's CER about 0.85, against 5% allowed
    failed = rolled_back_early(spec(AgreementRule(max_cer=0.05)), Replays(scored([0.85] * 16)))
    assert "row by row over the step's 16 rows" in failed.message, failed.message
    decision = failed.decision or {}
    assert decision["significant"] and decision["samples"] == 16
    assert decision["test"] == "mean <= 0.05"
    assert decision["statistic"] >= decision["boundary"] > 0


def test_low_box_f1_is_rolled_back_early_too() -> None:
    failed = rolled_back_early(spec(AgreementRule(min_box_f1=0.9)),
                               Replays(scored([0.3] * 24, metric="box_f1")))
    assert (failed.decision or {})["test"] == "mean >= 0.9"


def test_a_good_ocr_candidate_passes_only_when_the_interval_ends() -> None:
    replays = Replays(scored([0.01, 0.0, 0.02, 0.0] * 10, pooled=0.008))
    controller, _, _ = make(spec(AgreementRule(max_cer=0.05)), output=replays)
    controller.begin()
    status = early(controller)
    assert (status.stage, status.weight) == (Stage.STEP, 5), status.message
    status = look(controller, 28.0)
    assert (status.stage, status.weight) == (Stage.STEP, 25), status.message
    (agreement,) = [r for r in status.last if r.rule == "agreement"]
    assert agreement.verdict == "pass"
    assert not (agreement.decision or {})["significant"]


def test_rows_beyond_the_bound_do_not_fail_early_while_the_pooled_score_is_within_it() -> None:
    # short lines misread, long pages read well: each row's mean is 0.5, the pooled CER 3%.
    # The threshold is on the pooled score, so the early test may not overrule it.
    replays = Replays(scored([1.0, 0.0] * 20, pooled=0.03))
    controller, _, _ = make(spec(AgreementRule(max_cer=0.05)), output=replays)
    controller.begin()
    status = early(controller)
    assert (status.stage, status.weight) == (Stage.STEP, 5), status.message
    result = between_intervals(AgreementRule(max_cer=0.05), replays.checks[0])
    assert result.verdict == "inconclusive", result
    assert (result.decision or {})["significant"]  # the rows' test alone would have failed it


def test_a_broken_classifier_is_failed_on_fewer_rows_than_the_minimum() -> None:
    # the sequential test is valid at any number of rows: 16 rows, none agreeing, is enough
    failed = rolled_back_early(spec(AgreementRule(min_agreement=0.8, min_rows=32)),
                               Replays(check(16, 0.0)))
    assert failed.samples == 16


def test_a_large_accuracy_drop_is_rolled_back_on_the_first_replay() -> None:
    # the labelled set: stable right on 90% of 200 rows, the candidate on 50%
    failed = rolled_back_early(spec(AccuracyRule(max_drop=5.0)), Replays(labelled(200, 0.9, 0.5)),
                               "accuracy")
    assert "down 40.0 points" in failed.message and "row by row: log LR" in failed.message
    assert (failed.decision or {})["samples"] == 200


def test_a_small_accuracy_drop_waits_for_the_interval_end() -> None:
    # 7 points down on 200 rows: beyond the 5 allowed, not beyond doubt
    replays = Replays(labelled(200, 0.9, 0.83))
    controller, _, target = make(spec(AccuracyRule(max_drop=5.0)), output=replays)
    controller.begin()
    status = early(controller)
    assert (status.stage, status.weight) == (Stage.STEP, 5), status.message
    accuracy = between_intervals(AccuracyRule(max_drop=5.0), replays.checks[0])
    assert accuracy.verdict == "inconclusive" and "judged when the interval ends" in accuracy.message
    assert not (accuracy.decision or {})["significant"]
    status = look(controller, 28.0)
    assert status.stage is Phase.ROLLED_BACK and target.weights == [5, 0]


def test_the_tally_keeps_each_row_s_score_once() -> None:
    tally = AgreementTally()
    first = tally.add("step", scored([0.5, 0.5]))
    assert len(first.row_scores) == 2
    again = tally.add("step", scored([0.9, 0.9, 0.1], first=1))  # row 1 again, rows 2, 3 new
    assert [v for _, v in again.row_scores] == [0.5, 0.5, 0.9, 0.1]
    truth = tally.add("step", labelled(4, 1.0, 0.5))
    assert [v for _, v in truth.row_truth] == [0.0, 0.0, 1.0, 1.0]
    truth = tally.add("step", labelled(6, 1.0, 0.0))  # rows 0..3 seen: their drops stand
    assert [v for _, v in truth.row_truth] == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]


def test_scores_at_the_bound_are_rarely_rejected_however_often_they_are_read() -> None:
    """A/A at the boundary with bounded scores, not 0/1: 2,000 simulated steps whose
    pages' CERs have mean exactly 5% (Beta-distributed), read after every 16 new rows up
    to 512: the share ever rejected stays within the level."""
    alpha = 0.01 / 3
    rng = np.random.default_rng(11)
    values = rng.beta(0.5, 9.5, size=(2000, 512))  # mean 0.05
    rows = np.arange(16, 513, 16)
    totals = values.cumsum(axis=1)[:, rows - 1]
    statistic = threshold_log_lr(totals, np.broadcast_to(rows, totals.shape), 0.05, above=True)
    rejected = (statistic >= np.log(1 / alpha)).any(axis=1).mean()
    print(f"\nA/A scores at the bound: {rejected:.2%} of 2,000 steps rejected "
          f"(level {alpha:.2%})")
    assert rejected <= alpha
