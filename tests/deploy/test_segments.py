"""Per-segment canary verdicts: windows per segment from the instances' metrics, rules judged
per segment (a failing segment names itself, a thin one is inconclusive without holding
the canary, values past the bound pooled as ``other``), and the analysis file's keys."""

from __future__ import annotations

from dataclasses import replace

import pytest

from workbench.deploy.rollout.analysis import AnalysisSpec
from workbench.deploy.rollout.controller import decide, start
from workbench.deploy.rollout.phases import Phase
from workbench.deploy.rollout.scrape import ScrapeSource
from workbench.deploy.rollout.segments import (
    judge_by_segment,
    merge_serve_args,
    segment_alpha,
    serve_args,
    uncounted,
)
from workbench.deploy.rollout.signals import ColorWindow
from workbench.deploy.rollout.traffic_rules import ErrorRateRule, LatencyRule, RelativeLatencyRule
from workbench.deploy.rollout.verdicts import Observation
from workbench.errors import DeployValueError
from workbench.serving.metrics import ServingMetrics
from workbench.serving.segments import MISSING, OTHER, SegmentKey

KEY = "header:x-tenant"
TENANT = SegmentKey.parse(KEY)


def window(requests: float, errors: float, *, slow: float = 0.0,
           segments: dict[str, ColorWindow] | None = None, color: str = "green") -> ColorWindow:
    """``requests`` of which ``errors`` failed and ``slow`` took 250..500 ms (the rest < 10 ms)."""
    fast = requests - slow
    buckets = ((0.01, fast), (0.25, fast), (0.5, requests), (float("inf"), requests))
    p99 = 400.0 if slow > requests * 0.01 else 9.0
    return ColorWindow(color, 30.0, requests, errors, p99 if requests else None, None,
                       buckets if requests else None,
                       segments={KEY: segments} if segments is not None else None)


def seen(candidate: ColorWindow, stable: ColorWindow | None = None) -> Observation:
    return Observation(interval=30.0, candidate=candidate, stable=stable, alpha=0.01 / 3)


def test_a_segment_failing_while_the_whole_passes_fails_the_rule_naming_it() -> None:
    segments = {"a": window(1500, 0), "b": window(60, 27)}
    candidate = window(1560, 27, segments=segments)
    plain = ErrorRateRule(max_rate=0.05)
    assert plain.judge(seen(candidate)).verdict == "pass"  # 1.7% overall, under 5%
    result = replace(plain, segment_by=KEY).judge(seen(candidate))
    assert result.verdict == "fail" and result.sustained
    assert result.rule == "error_rate"
    assert result.message.startswith("in segment x-tenant=b, 45.0% of 60 requests failed")
    decision = result.decision or {}
    assert decision["segment"] == "x-tenant=b" and decision["segment_by"] == KEY
    assert decision["significant"] and decision["statistic"] >= decision["boundary"]
    assert decision["samples"] == 60 and result.samples == 60
    assert decision["segments"]["a"]["verdict"] == "pass"
    assert decision["segments"]["b"]["verdict"] == "fail"
    assert decision["overall"] == {"verdict": "pass", "sustained": False, "samples": 1560,
                                   "value": 27 / 1560}


def test_the_rollback_reason_names_the_segment() -> None:
    spec = AnalysisSpec(steps=(25, 100), interval=30.0,
                        rules=(ErrorRateRule(max_rate=0.05, segment_by=KEY),))
    status, _ = start(spec, now=0.0)
    candidate = window(660, 27, segments={"a": window(600, 0), "b": window(60, 27)})
    results = spec.judge(seen(candidate))
    after, action = decide(status, spec, results, now=5.0)
    assert action.kind == "rollback" and after.stage is Phase.ROLLED_BACK
    assert after.message.startswith("rule error_rate failed: in segment x-tenant=b, 45.0%")


def test_a_thin_segment_is_inconclusive_and_does_not_hold_the_canary() -> None:
    # tenant c: 1 failure in 3 requests — a third, but far too few to tell
    segments = {"a": window(800, 0), "c": window(3, 1)}
    rule = ErrorRateRule(max_rate=0.05, segment_by=KEY)
    result = rule.judge(seen(window(803, 1, segments=segments)))
    assert result.verdict == "pass", result.message
    summary = (result.decision or {})["segments"]
    assert summary["c"] == {"verdict": "inconclusive", "samples": 3, "value": pytest.approx(1 / 3)}
    spec = AnalysisSpec(steps=(25, 50, 100), interval=30.0, rules=(rule,))
    status, _ = start(spec, now=0.0)
    _, action = decide(status, spec, (result,), now=30.0)
    assert action.kind == "advance" and action.weight == 50


def test_a_segment_failing_without_significance_yet_holds_naming_it() -> None:
    # 3 of 20 failed in tenant b: 15% against 5%, not yet significant at a segment's level
    segments = {"a": window(900, 0), "b": window(20, 3)}
    result = ErrorRateRule(max_rate=0.05, segment_by=KEY).judge(seen(window(920, 3, segments=segments)))
    assert result.verdict == "fail" and not result.sustained
    assert "in segment x-tenant=b" in result.message


def test_values_past_the_bound_are_judged_as_other() -> None:
    segments = {"a": window(500, 0), OTHER: window(80, 40), MISSING: window(100, 0)}
    result = ErrorRateRule(max_rate=0.05, segment_by=KEY).judge(seen(window(680, 40, segments=segments)))
    assert result.verdict == "fail" and result.sustained
    assert result.message.startswith("in segment x-tenant=other, 50.0%")


def test_the_whole_failing_is_reported_as_the_whole() -> None:
    segments = {"a": window(100, 100), "b": window(100, 100)}
    result = ErrorRateRule(segment_by=KEY).judge(seen(window(200, 200, segments=segments)))
    assert result.sustained and result.message.startswith("100.0% of 200 requests failed")
    assert "segment" not in (result.decision or {})


def test_a_source_without_segments_judges_the_whole_and_says_so() -> None:
    result = ErrorRateRule(segment_by=KEY).judge(seen(window(400, 0)))
    assert result.verdict == "pass"
    assert "no per-segment figures for header:x-tenant" in result.message
    assert (result.decision or {})["segments"] is None


def test_without_segment_by_the_rule_is_judged_as_before() -> None:
    candidate = window(660, 27, segments={"b": window(60, 27)})
    assert ErrorRateRule(max_rate=0.05).judge(seen(candidate)) == ErrorRateRule(
        max_rate=0.05).judge(seen(replace(candidate, segments=None)))


def test_latency_is_judged_per_segment() -> None:
    # tenant b: a third of its requests take 250..500 ms; overall under 1% are slow
    segments = {"a": window(5000, 0), "b": window(90, 0, slow=30)}
    candidate = window(5090, 0, slow=30, segments=segments)
    rule = LatencyRule(max_ms=250, hold_seconds=0, segment_by=KEY)
    assert replace(rule, segment_by=None).judge(seen(candidate)).verdict != "fail"
    result = rule.judge(seen(candidate))
    assert result.verdict == "fail" and result.sustained
    assert result.message.startswith("in segment x-tenant=b, p99")


def test_relative_latency_compares_a_segment_with_the_same_segment_of_stable() -> None:
    stable = window(2000, 0, slow=600, color="blue",
                    segments={"a": window(1000, 0), "b": window(1000, 0, slow=600)})
    candidate = window(2000, 0, slow=600,
                       segments={"a": window(1000, 0), "b": window(1000, 0, slow=600)})
    rule = RelativeLatencyRule(segment_by=KEY)
    result = rule.judge(seen(candidate, stable))  # b is slow on both colors: no regression
    assert result.verdict != "fail", result.message
    assert (result.decision or {})["segments"]["b"]["verdict"] != "fail"


def test_the_level_is_split_between_the_whole_and_the_bounded_segments() -> None:
    assert segment_alpha(0.01, 8) == pytest.approx(0.01 / 2 / 10)
    assert segment_alpha(0.01, None) == pytest.approx(0.01 / 2 / 18)  # the default bound, 16
    assert segment_alpha(0.01, 2, seen=7) == pytest.approx(0.01 / 2 / 7)  # more than the bound
    seen_alphas: list[float] = []

    def judge(observation: Observation):  # type: ignore[no-untyped-def]
        seen_alphas.append(observation.alpha)
        return ErrorRateRule().judge(observation)

    judge_by_segment(ErrorRateRule(segment_by=KEY, max_segments=3), seen(
        window(100, 0, segments={"a": window(50, 0), "b": window(50, 0)})), judge)
    assert seen_alphas == pytest.approx([0.01 / 3 / 2, 0.01 / 3 / 2 / 5, 0.01 / 3 / 2 / 5])


def test_scrape_windows_each_segment_summed_over_instances() -> None:
    now = [100.0]
    instances = {url: ServingMetrics("digits") for url in ("http://a", "http://b")}
    for metrics in instances.values():
        metrics.loaded("1.0.0")
        metrics.segment_by((TENANT,), limit=4)

    def traffic(metrics: ServingMetrics, tenant: str | None, status: int, n: int) -> None:
        for _ in range(n):
            metrics.request("1.0.0", status, 0.004)
            metrics.segment_request("1.0.0", status, 0.004, {TENANT: tenant})

    def fetch(url: str) -> str:
        return instances[url.removesuffix("/metrics")].render()[0].decode()

    source = ScrapeSource({"green": list(instances)}, fetch=fetch, clock=lambda: now[0])
    traffic(instances["http://a"], "a", 200, 3)  # before the base scrape: not in the window
    source.scrape()
    now[0] += 10
    traffic(instances["http://a"], "a", 200, 5)
    traffic(instances["http://b"], "a", 200, 2)
    traffic(instances["http://b"], "b", 500, 4)  # tenant b appears after the base scrape
    traffic(instances["http://b"], None, 200, 1)
    got = source.window("green", 10)
    assert (got.requests, got.errors) == (12, 4)
    segments = (got.segments or {})[KEY]
    assert {s: (w.requests, w.errors) for s, w in segments.items()} == {
        "a": (7, 0), "b": (4, 4), MISSING: (1, 0)}
    assert segments["b"].p99_ms is not None and segments["b"].p99_ms <= 5.0


def test_a_scrape_without_segment_series_has_no_segments() -> None:
    metrics = ServingMetrics("digits")
    metrics.loaded("1.0.0")
    source = ScrapeSource({"green": ["http://a"]}, fetch=lambda _: metrics.render()[0].decode())
    source.scrape()
    assert source.window("green", 10).segments is None


def test_the_analysis_file_sets_segment_by_for_the_traffic_rules() -> None:
    spec = AnalysisSpec.from_dict({
        "segment_by": "x-tenant", "max_segments": 8,
        "latency": {"segment_by": "param:tenant"},
        "relative_latency": {"segment_by": False},
    })
    by_name = {rule.name: rule for rule in spec.rules}
    assert by_name["error_rate"].segment_by == KEY  # type: ignore[attr-defined]
    assert by_name["error_rate"].max_segments == 8  # type: ignore[attr-defined]
    assert by_name["latency_p99"].segment_by == "param:tenant"  # type: ignore[attr-defined]
    assert by_name["latency_vs_stable"].segment_by is None  # type: ignore[attr-defined]
    assert AnalysisSpec.from_dict(spec.to_dict()) == spec
    assert serve_args(spec.rules) == ("--segment-by", KEY, "--segment-by", "param:tenant",
                                      "--max-segments", "8")
    assert serve_args(AnalysisSpec().rules) == ()


@pytest.mark.parametrize(("data", "said"), [
    ({"segment_by": "cookie:x"}, "segment_by: a segment is header:NAME or param:NAME"),
    ({"error_rate": {"segment_by": "header:"}}, "segment_by: not a header or parameter name"),
    ({"error_rate": {"max_segments": 0, "segment_by": "x"}}, "max_segments must be positive"),
])
def test_a_bad_segment_setting_is_one_sentence(data: dict[str, object], said: str) -> None:
    with pytest.raises(DeployValueError, match=said):
        AnalysisSpec.from_dict(data)



def test_without_stable_segments_a_segment_is_not_compared_with_stables_whole_traffic() -> None:
    # tenant b is slow on both colours, but stable does not count per segment: comparing b
    # with stable's whole traffic would call it a regression
    stable = window(2000, 0, slow=20, color="blue")
    candidate = window(2000, 0, slow=600,
                       segments={"a": window(1400, 0), "b": window(600, 0, slow=600)})
    result = RelativeLatencyRule(segment_by=KEY).judge(seen(candidate, stable))
    assert (result.decision or {})["segments"]["b"]["verdict"] != "fail", result.message
    assert "stable has no per-segment figures for header:x-tenant" in result.message
    assert "--segment-by header:x-tenant" in result.message


def test_a_segment_is_compared_with_the_same_segment_of_stable_only() -> None:
    # stable counts segments but saw no b: b is judged on its thresholds, not on stable's whole
    stable = window(2000, 0, slow=20, color="blue", segments={"a": window(2000, 0, slow=20)})
    candidate = window(2000, 0, slow=600,
                       segments={"a": window(1400, 0), "b": window(600, 0, slow=600)})
    result = RelativeLatencyRule(segment_by=KEY).judge(seen(candidate, stable))
    assert (result.decision or {})["segments"]["b"]["verdict"] != "fail", result.message


def test_the_rules_comparing_segments_with_stable_need_stable_to_count_them() -> None:
    spec = AnalysisSpec.from_dict({"segment_by": "x-tenant",
                                   "error_rate": {"max_ratio": 2.0, "segment_by": "param:t"}})
    missing = [(rule.name, key) for rule, key in uncounted(spec.rules, ())]
    assert missing == [("error_rate", "param:t"), ("latency_vs_stable", KEY)]  # not latency_p99
    assert [r.name for r, _ in uncounted(spec.rules, ("--segment-by", "param:t"))] == [
        "latency_vs_stable"]
    assert uncounted(spec.rules, ("--segment-by", "x-tenant", "--segment-by", "param:t")) == []
    assert uncounted(AnalysisSpec.from_dict({"segment_by": KEY, "relative_latency": False}).rules,
                     ()) == []  # thresholds only: nothing to compare with stable


def test_serve_options_merge_each_key_once_with_the_largest_bound() -> None:
    assert merge_serve_args(("--segment-by", "x-tenant", "--max-segments", "4"),
                            ("--segment-by", KEY, "--segment-by", "param:t", "--max-segments", "8"),
                            ) == ("--segment-by", KEY, "--segment-by", "param:t", "--max-segments", "8")
    assert merge_serve_args((), ("--graceful-timeout", "5")) == ("--graceful-timeout", "5")
    assert merge_serve_args((), ()) == ()
