"""The agreement verdict: enough rows, a confidence interval, and a threshold."""

from __future__ import annotations

import pytest

from workbench.deploy.rollout.agreement import AgreementReport, OutputAgreement, wilson_interval
from workbench.deploy.rollout.phases import DEFAULT_MIN_AGREEMENT


def report(top1: float, rows: int, min_top1: float = DEFAULT_MIN_AGREEMENT) -> AgreementReport:
    output = OutputAgreement("probabilities", rows, top1, 0.5, 0.01)
    return AgreementReport("digits", "1.0.0", "1.x", ("sample",), rows, (output,), min_top1=min_top1)


def test_wilson_interval_matches_known_values() -> None:
    low, high = wilson_interval(7, 8)
    assert (low, high) == (pytest.approx(0.529, abs=1e-3), pytest.approx(0.978, abs=1e-3))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(379, 400)
    assert low < 379 / 400 < high and high - low < 0.05


def test_eight_rows_are_inconclusive_whatever_they_say() -> None:
    # the old demo sample: 1.2.0 at 87.5% and 1.1.0 at 75% were both judged on 8 rows
    for top1 in (0.875, 0.75):
        verdict = report(top1, 8)
        assert verdict.inconclusive and not verdict.passed
        assert verdict.verdict.startswith("inconclusive: 8 rows compared, at least 100 needed")


def test_the_default_passes_the_better_demo_and_rejects_the_degraded_one() -> None:
    # the demo's figures on its 400-row sample: 1.1.0 agrees ~94.75%, 1.2.0 ~74%
    better, degraded = report(0.9475, 400), report(0.74, 400)
    assert better.passed and better.verdict == "passed (>= 85.0%)"
    assert not degraded.passed and not degraded.inconclusive
    assert degraded.verdict == "below the threshold 85.0%"
    assert "95% CI" in better.summary() and better.to_dict()["interval"][0] >= 0.85


def test_an_interval_across_the_threshold_is_inconclusive() -> None:
    close = report(0.86, 150)
    assert close.inconclusive and "includes the threshold 85.0%" in close.verdict
    assert report(0.5, 8, min_top1=0).passed  # no threshold: nothing to judge


def scored_report(metric: str, value: float, interval: tuple[float, float], rows: int,
                  min_agreement: float = DEFAULT_MIN_AGREEMENT) -> AgreementReport:
    from workbench.model.task import Task
    from workbench.runtime.scoring import ScoreResult, Threshold, agreement_threshold

    task = {"cer": Task.TEXT_RECOGNITION, "box_f1": Task.TEXT_DETECTION}[metric]
    threshold = agreement_threshold(task, min_agreement)
    assert threshold is None if min_agreement <= 0 else threshold.metric == metric
    score = ScoreResult(task, metric, value, interval, rows, threshold, 100)
    output = OutputAgreement("maps", rows, None, 0.5, 0.01, (score,))
    report = AgreementReport("ocr", "1.0.0", "1.x", ("sample",), rows, (output,),
                             min_top1=min_agreement, task=task)
    assert report.score is score
    assert threshold is None or Threshold.parse(str(threshold)) == threshold
    return report


def test_other_tasks_get_the_same_verdicts_on_their_own_score() -> None:
    # min_agreement 0.85 means box_f1 >= 0.85, and for recognition cer <= 0.15
    passed = scored_report("box_f1", 0.95, (0.9, 0.98), 200)
    assert passed.passed and passed.verdict == "passed (box_f1>=0.85)"
    assert "box_f1 0.9500" in passed.summary() and passed.to_dict()["task"] == "text-detection"
    below = scored_report("cer", 0.4, (0.3, 0.5), 200)
    assert not below.passed and below.verdict == "below the threshold cer<=0.15"
    straddle = scored_report("cer", 0.12, (0.08, 0.2), 200)
    assert straddle.inconclusive and "includes the threshold cer<=0.15" in straddle.verdict
    few = scored_report("box_f1", 1.0, (1.0, 1.0), 8)
    assert few.inconclusive and "8 compared, at least 100 needed" in few.verdict
    assert scored_report("cer", 0.5, (0.4, 0.6), 8, min_agreement=0.0).passed  # no threshold
