"""The canary analysis rules and the analysis spec, judged on hand-made windows."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from workbench.deploy.rollout.analysis import (
    AccuracyRule,
    AgreementRule,
    AnalysisSpec,
    ErrorRateRule,
    LatencyRule,
    MemoryRule,
    Observation,
    RelativeLatencyRule,
    parse_duration,
    parse_steps,
    wilson_interval,
)
from workbench.deploy.rollout.signals import ColorWindow, OutputCheck
from workbench.errors import DeployValueError


def window(requests: float = 100, errors: float = 0, p99: float | None = 20.0,
           memory: float | None = 1e8, color: str = "green") -> ColorWindow:
    return ColorWindow(color, 30.0, requests, errors, p99, memory)


def seen(candidate: ColorWindow, **kwargs: object) -> Observation:
    return Observation(interval=30.0, candidate=candidate, **kwargs)  # type: ignore[arg-type]


def test_wilson_interval_brackets_the_rate_and_narrows_with_samples() -> None:
    low_small, high_small = wilson_interval(9, 10)
    low_big, high_big = wilson_interval(900, 1000)
    assert low_small < 0.9 < high_small
    assert low_small < low_big < 0.9 < high_big < high_small
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_error_rate_too_few_requests_is_inconclusive_never_passed() -> None:
    result = ErrorRateRule().judge(seen(window(requests=5)))
    assert result.verdict == "inconclusive"
    assert "need 20" in result.message


def test_a_window_without_a_latency_says_so_not_that_it_needs_requests() -> None:
    """Plenty of requests but no p99 (a source without a histogram): the latency rules are
    inconclusive saying what is missing; too few requests reads the same in every rule."""
    for rule in (LatencyRule(), RelativeLatencyRule()):
        result = rule.judge(seen(window(requests=50, p99=None), stable=window(color="blue")))
        assert result.verdict == "inconclusive", rule
        assert result.message == "no p99 latency measured in 50 requests", rule
    for rule in (ErrorRateRule(), LatencyRule(), RelativeLatencyRule()):
        few = rule.judge(seen(window(requests=5), stable=window(color="blue")))
        assert (few.verdict, few.message) == ("inconclusive", "5 requests, need 20"), rule


def test_error_rate_slightly_high_holds_until_the_evidence_is_significant() -> None:
    rule = ErrorRateRule()
    first = rule.judge(seen(window(requests=100, errors=5)))
    assert (first.verdict, first.sustained) == ("fail", False)
    assert first.value == pytest.approx(0.05) and first.threshold == 0.03
    assert "not significant yet" in first.message
    # a streak of intervals no longer rolls back: only the evidence does
    assert not rule.judge(seen(window(requests=100, errors=5), streaks={"error_rate": 9})).sustained
    later = rule.judge(seen(window(requests=3000, errors=150)))
    assert (later.verdict, later.sustained) == ("fail", True)
    assert later.decision is not None and later.decision["significant"]
    assert later.decision["statistic"] >= later.decision["boundary"]
    assert later.decision["samples"] == 3000


def test_error_rate_far_above_the_threshold_fails_at_once() -> None:
    result = ErrorRateRule().judge(seen(window(requests=100, errors=40)))
    assert (result.verdict, result.sustained) == ("fail", True)


def test_a_candidate_failing_every_request_fails_before_the_minimum_samples() -> None:
    result = ErrorRateRule().judge(seen(window(requests=3, errors=3)))
    assert (result.verdict, result.sustained) == ("fail", True)
    assert result.message.startswith("100.0% of 3 requests failed")
    quiet = ErrorRateRule().judge(seen(window(requests=3, errors=0)))
    assert quiet.verdict == "inconclusive"  # a pass still needs min_requests


def test_the_level_of_the_test_is_the_observation_alpha() -> None:
    strict = ErrorRateRule().judge(seen(window(requests=400, errors=25), alpha=1e-6))
    lenient = ErrorRateRule().judge(seen(window(requests=400, errors=25), alpha=0.2))
    assert (strict.sustained, lenient.sustained) == (False, True)


def test_error_rate_within_threshold_passes_once_the_evidence_is_in() -> None:
    pending = ErrorRateRule().judge(seen(window(requests=100, errors=2)))
    assert pending.verdict == "inconclusive" and "evidence it is within pending" in pending.message
    assert pending.decision is not None and pending.decision["pending"]
    assert ErrorRateRule().judge(seen(window(requests=1000, errors=10))).verdict == "pass"
    assert ErrorRateRule().judge(seen(window(requests=60, errors=0))).verdict == "pass"
    lax = ErrorRateRule(evidence=None)
    assert lax.judge(seen(window(requests=100, errors=2))).verdict == "pass"


def test_latency_absolute_is_held_for_a_minute() -> None:
    rule = LatencyRule()
    first = rule.judge(seen(window(p99=800)))
    assert (first.verdict, first.sustained) == ("fail", False)
    second = rule.judge(seen(window(p99=800), streaks={"latency_p99": 1}))
    assert second.sustained  # 2 intervals of 30 s = 1 minute
    assert rule.judge(seen(window(p99=100))).verdict == "pass"


def histogram(counts: dict[float, float]) -> tuple[tuple[float, float], ...]:
    """Cumulative buckets from per-bucket counts."""
    total, out = 0.0, []
    for bound in sorted(counts):
        total += counts[bound]
        out.append((bound, total))
    return tuple(out)


def test_latency_with_a_histogram_fails_when_too_many_requests_are_slower() -> None:
    rule = LatencyRule(max_ms=250.0)
    fine = histogram({0.1: 990, 0.25: 9, 0.5: 1, float("inf"): 0})
    good = rule.judge(seen(ColorWindow("green", 30, 1000, 0, 120.0, None, fine)))
    assert good.verdict == "pass" and good.decision is not None
    slow = histogram({0.1: 150, 0.25: 30, 0.5: 20, float("inf"): 0})  # 10% slower than 250 ms
    bad = rule.judge(seen(ColorWindow("green", 30, 200, 0, 480.0, None, slow)))
    assert (bad.verdict, bad.sustained) == ("fail", True)
    assert "20 of 200 requests slower than 250 ms" in bad.message
    few = histogram({0.1: 8, 0.25: 1, 0.5: 1, float("inf"): 0})
    hold = rule.judge(seen(ColorWindow("green", 30, 10, 0, 300.0, None, few)))
    assert hold.verdict == "inconclusive"


def test_latency_relative_with_histograms_is_a_mean_log_test() -> None:
    rule = RelativeLatencyRule(max_ratio=1.5)
    stable = ColorWindow("blue", 30, 900, 0, 100.0, None,
                          histogram({0.05: 600, 0.1: 290, 0.25: 10, float("inf"): 0}))
    same = ColorWindow("green", 30, 100, 0, 100.0, None,
                        histogram({0.05: 66, 0.1: 33, 0.25: 1, float("inf"): 0}))
    assert rule.judge(seen(same, stable=stable)).verdict == "pass"
    slower = ColorWindow("green", 30, 300, 0, 900.0, None,
                          histogram({0.1: 10, 0.25: 40, 0.5: 150, 1.0: 100, float("inf"): 0}))
    result = rule.judge(seen(slower, stable=stable))
    assert (result.verdict, result.sustained) == ("fail", True)
    assert "significant" in result.message and result.decision is not None
    assert result.decision["baseline"] == 900


def test_latency_relative_to_stable() -> None:
    rule = RelativeLatencyRule(intervals=1)
    slow = rule.judge(seen(window(p99=300), stable=window(p99=100, color="blue")))
    assert slow.verdict == "fail" and slow.value == pytest.approx(3.0)
    same = rule.judge(seen(window(p99=120), stable=window(p99=100, color="blue")))
    assert same.verdict == "pass"
    fast_enough = rule.judge(seen(window(p99=9), stable=window(p99=2, color="blue")))
    assert fast_enough.verdict == "pass"  # under the floor
    assert rule.judge(seen(window(p99=300))).verdict == "skip"


def test_memory_growth_per_minute() -> None:
    rule = MemoryRule(intervals=1)
    leak = rule.judge(seen(window(memory=3e8), previous_memory=1e8))  # 200 MB in 30 s
    assert leak.verdict == "fail" and leak.value == pytest.approx(400.0)
    assert rule.judge(seen(window(memory=1.1e8), previous_memory=1e8)).verdict == "pass"
    assert rule.judge(seen(window())).verdict == "skip"


def test_agreement_judged_on_the_wilson_lower_bound() -> None:
    rule = AgreementRule()
    good = OutputCheck(rows=540, agreement=0.943, accuracy_stable=None, accuracy_candidate=None)
    bad = OutputCheck(rows=540, agreement=0.744, accuracy_stable=None, accuracy_candidate=None)
    few = OutputCheck(rows=8, agreement=1.0, accuracy_stable=None, accuracy_candidate=None)
    assert rule.judge(seen(window(), output=good)).verdict == "pass"
    failed = rule.judge(seen(window(), output=bad))
    assert (failed.verdict, failed.sustained) == ("fail", True)
    assert rule.judge(seen(window(), output=few)).verdict == "inconclusive"
    assert rule.judge(seen(window())).verdict == "skip"
    assert "error" not in failed.message


def test_agreement_judges_the_rows_compared_and_names_the_failed_replays() -> None:
    # a full queue answered 64 of 125 replayed rows with 503: missing evidence, 61 compared
    busy = OutputCheck(rows=61, agreement=1.0, accuracy_stable=None, accuracy_candidate=None,
                       failed=64, failures=(("candidate 503", 64),))
    result = AgreementRule().judge(seen(window(), output=busy))
    assert (result.verdict, result.samples) == ("pass", 61)
    assert result.message.endswith("; 64 of 125 replayed rows failed: candidate 503 (64)")
    assert result.decision is not None
    assert {k: result.decision[k] for k in ("compared", "failed", "failures")} == {
        "compared": 61, "failed": 64, "failures": {"candidate 503": 64}}
    assert result.decision["samples"] == 61 and not result.decision["significant"]  # the sequential test
    # every replay failed: nothing to judge, inconclusive, never a fail
    down = OutputCheck(rows=0, agreement=None, accuracy_stable=None, accuracy_candidate=None,
                       failed=61, failures=(("candidate timeout", 61),))
    result = AgreementRule().judge(seen(window(), output=down))
    assert (result.verdict, result.sustained) == ("inconclusive", False)
    assert result.message == ("no rows compared; 61 of 61 replayed rows failed: "
                              "candidate timeout (61)")


def test_agreement_of_other_tasks_judged_on_their_scores_cautious_end() -> None:
    from workbench.model.task import Task
    from workbench.runtime.scoring import ScoreResult

    def check(metric: str, value: float, interval: tuple[float, float], rows: int,
              failed: int = 0) -> OutputCheck:
        score = ScoreResult(Task.GENERIC, metric, value, interval, rows)
        return OutputCheck(rows=rows, agreement=None, accuracy_stable=None,
                           accuracy_candidate=None, failed=failed,
                           failures=(("candidate 503", failed),) if failed else (), score=score)

    rule = AgreementRule()
    # CER: the upper bound must stay under max_cer (0.05 by default)
    low_cer = rule.judge(seen(window(), output=check("cer", 0.01, (0.004, 0.03), 120)))
    assert (low_cer.verdict, low_cer.threshold, low_cer.value) == ("pass", 0.05, 0.03)
    near = rule.judge(seen(window(), output=check("cer", 0.03, (0.01, 0.07), 120)))
    assert (near.verdict, near.sustained) == ("fail", True)
    assert "upper bound 0.07 (want cer<=0.05)" in near.message
    # box F1: the lower bound must reach min_box_f1
    assert rule.judge(seen(window(), output=check("box_f1", 0.97, (0.93, 0.99), 60))
                      ).verdict == "pass"
    assert rule.judge(seen(window(), output=check("box_f1", 0.9, (0.8, 0.95), 60))
                      ).verdict == "fail"
    # too few rows: inconclusive, whatever the score
    few = rule.judge(seen(window(), output=check("cer", 0.0, (0.0, 0.0), 8)))
    assert few.verdict == "inconclusive" and few.message == "8 rows compared, need 32"
    # rows whose replay failed are left out and named; too few left: inconclusive
    busy = rule.judge(seen(window(), output=check("within_tolerance", 1.0, (0.9, 1.0), 8,
                                                  failed=56)))
    assert (busy.verdict, busy.sustained) == ("inconclusive", False)
    assert busy.message == ("8 rows compared, need 32; 56 of 64 replayed rows failed: "
                            "candidate 503 (56)")
    # thresholds per metric from the analysis file
    spec = AnalysisSpec.from_dict({"agreement": {"max_cer": 0.1, "min_box_f1": 0.7}})
    loose = spec.rule("agreement")
    assert isinstance(loose, AgreementRule) and (loose.max_cer, loose.min_box_f1) == (0.1, 0.7)
    assert loose.judge(seen(window(), output=check("cer", 0.03, (0.01, 0.07), 120))
                       ).verdict == "pass"
    assert AnalysisSpec.from_dict(spec.to_dict()).rule("agreement") == loose
    with pytest.raises(DeployValueError, match="agreement.max_cer must be a fraction"):
        AnalysisSpec.from_dict({"agreement": {"max_cer": 2}})


def test_accuracy_drop_in_points() -> None:
    rule = AccuracyRule()
    drop = OutputCheck(rows=540, agreement=0.74, accuracy_stable=0.94, accuracy_candidate=0.735)
    result = rule.judge(seen(window(), output=drop))
    assert result.verdict == "fail" and result.value == pytest.approx(20.5)
    assert "down 20.5 points (max drop 5)" in result.message
    gain = OutputCheck(rows=540, agreement=0.9, accuracy_stable=0.9, accuracy_candidate=0.92)
    better = rule.judge(seen(window(), output=gain))
    assert better.verdict == "pass" and "up 2.0 points" in better.message
    nolabels = OutputCheck(rows=540, agreement=0.9, accuracy_stable=None, accuracy_candidate=None)
    assert rule.judge(seen(window(), output=nolabels)).verdict == "skip"


def test_spec_from_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "analysis.toml"
    path.write_text(
        'steps = [10, "gate", 50, 100]\ninterval = "2s"\n'
        "[error_rate]\nmax = 0.01\nintervals = 1\n[memory]\ngrowth_mb_per_min = 50\n"
        "[accuracy]\nmax_drop = 2\n[relative_latency]\n"
    )
    spec = AnalysisSpec.load(path)
    assert spec.steps == (10, "gate", 50, 100)
    assert spec.interval == 2.0
    assert spec.rule("error_rate") == ErrorRateRule(max_rate=0.01, intervals=1)
    assert spec.rule("memory_growth") == MemoryRule(max_mb_per_min=50)
    again = AnalysisSpec.from_dict(spec.to_dict())
    assert again == spec


def test_spec_from_yaml_file_drops_a_rule(tmp_path: Path) -> None:
    path = tmp_path / "analysis.yaml"
    path.write_text("steps: 5,25,100\nlatency:\n  p99_ms: 200\n  hold: 1m\nmemory: false\n")
    spec = AnalysisSpec.load(path)
    assert spec.rule("latency_p99") == LatencyRule(max_ms=200, hold_seconds=60)
    with pytest.raises(KeyError):
        spec.rule("memory_growth")


@pytest.mark.parametrize(
    ("text", "named"),
    [("colour = 1\n", "'colour'"), ("[latency]\np95_ms = 3\n", "latency.p95_ms")],
)
def test_unknown_key_is_a_clear_error(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "analysis.toml"
    path.write_text(text)
    with pytest.raises(DeployValueError, match=named.replace(".", r"\.")):
        AnalysisSpec.load(path)


def test_flags_override_the_file() -> None:
    spec = AnalysisSpec().with_flags(steps="5,gate,100", interval="1.5s", mirror=None)
    assert spec.steps == (5, "gate", 100) and spec.interval == 1.5 and spec.mirror == 0


@pytest.mark.parametrize("steps", ["50,25", "5,x", "0,100", "5,5"])
def test_bad_steps_are_refused(steps: str) -> None:
    with pytest.raises(DeployValueError):
        AnalysisSpec().with_flags(steps=steps)


def test_durations() -> None:
    assert parse_duration("30s") == 30 and parse_duration("2m") == 120
    assert parse_duration("500ms") == 0.5 and parse_duration(3) == 3
    assert parse_steps("5, 25 ,gate,100%") == (5, 25, "gate", 100)
    with pytest.raises(DeployValueError, match="not a duration"):
        parse_duration("soon")


def test_error_rate_against_stable_finds_a_5_percent_candidate_in_a_few_failures() -> None:
    rule = ErrorRateRule(max_ratio=1.0)
    clean = window(requests=1800, errors=0, color="blue")
    early = rule.judge(seen(window(requests=100, errors=5), stable=clean))
    assert (early.verdict, early.sustained) == ("fail", True)
    assert "stable's 0.00% of 1800" in early.message and early.decision is not None
    assert early.decision["baseline"] == 1800
    # the threshold alone does not see it yet
    assert not ErrorRateRule().judge(seen(window(requests=100, errors=5), stable=clean)).sustained
    # within max_rate, a candidate worse than stable is not rolled back on that alone
    within = rule.judge(seen(window(requests=2000, errors=20), stable=clean))
    assert within.verdict == "pass"
    again = AnalysisSpec.from_dict(AnalysisSpec(rules=(rule,)).to_dict())
    assert again.rule("error_rate") == rule
    assert AnalysisSpec.from_dict(AnalysisSpec().to_dict()).rule("error_rate") == ErrorRateRule()


def test_a_slower_p99_against_stable_fails_only_once_held_for_its_seconds() -> None:
    """At a 2 s interval, two slow intervals are four seconds of a fresh instance's tail:
    the p99 ratio must hold ``hold_seconds`` (30 s: 15 intervals) before it rolls back."""
    rule = RelativeLatencyRule()
    slow, stable = window(p99=300), window(p99=100, color="blue")
    short = Observation(interval=2.0, candidate=slow, stable=stable, streaks={rule.name: 1})
    assert (rule.judge(short).verdict, rule.judge(short).sustained) == ("fail", False)
    held = replace(short, streaks={rule.name: 14})
    assert rule.judge(held).sustained
    at_30 = Observation(interval=30.0, candidate=slow, stable=stable, streaks={rule.name: 1})
    assert rule.judge(at_30).sustained  # two 30 s intervals, as before
