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
