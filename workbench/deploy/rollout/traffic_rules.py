"""The canary rules on live traffic: error rate, p99 latency, latency against stable.

All three are sequential (``every_scrape``): judged at every scrape on the traffic since
the step began, with the anytime-valid tests of :mod:`workbench.deploy.rollout.sequential`
(see :mod:`workbench.deploy.rollout.analysis` for how the controller uses them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, ClassVar

from workbench.deploy.rollout.segments import judge_by_segment, segment_key
from workbench.deploy.rollout.sequential import (
    DifferenceTest,
    RateRatioTest,
    ThresholdTest,
    exceeding,
    log_moments,
)
from workbench.deploy.rollout.verdicts import (
    PENDING,
    Observation,
    RuleResult,
    Verdict,
    check_fraction,
    check_positive,
    intervals_needed,
    sustain,
    test_level,
)
from workbench.errors import DeployValueError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["ErrorRateRule", "LatencyRule", "RelativeLatencyRule", "too_few"]


def too_few(
    base: Callable[..., RuleResult], requests: float, min_requests: int, what: str,
    value: float | None,
) -> RuleResult:
    """Inconclusive: a window too thin to judge — fewer than ``min_requests`` requests, or
    enough of them but no ``what`` measured (a source without a latency histogram)."""
    if requests < min_requests:
        message = f"{requests:g} requests, need {min_requests}"
    else:
        message = f"no {what} measured in {requests:g} requests"
    return base(verdict="inconclusive", value=value, message=message)


def _check_segments(rule: ErrorRateRule | LatencyRule | RelativeLatencyRule) -> None:
    object.__setattr__(rule, "segment_by", segment_key(rule.segment_by))
    if rule.max_segments is not None:
        check_positive(f"{rule.name}.max_segments", rule.max_segments)


@dataclass(frozen=True)
class ErrorRateRule:
    """Server errors (5xx) of the candidate: fails, at every scrape, as soon as the
    sequential test finds its error rate above ``max_rate`` at the observation's alpha.

    With ``max_ratio``, the candidate also fails as soon as its rate is above ``max_rate``
    and significantly above ``max_ratio`` times stable's (an exact test of where the
    failures come from): against a clean stable that takes a handful of failures, where
    the threshold alone needs hundreds of requests to tell 5% from 3%. Each test then
    runs at half the observation's alpha.

    A pass needs evidence too: at least ``min_requests`` requests, and the opposite test
    (is the rate below ``max_rate``?) significant at ``evidence`` (a lenient level: 0.2
    takes about 60 clean requests against 3%, 375 at 1%; None: the point estimate is enough). Until
    then the rule is inconclusive with the evidence pending, which holds the step without
    counting towards ``max_inconclusive``.

    ``intervals`` is read from older analysis files and no longer used: the test needs no
    streak to tell a 5% candidate from a 3% threshold, and takes no more than two or
    three requests to tell a candidate failing them all.
    """

    max_rate: float = 0.03
    intervals: int = 3
    min_requests: int = 20
    name: str = "error_rate"
    max_ratio: float | None = None
    evidence: float | None = 0.2
    segment_by: str | None = None  # also judge each segment (rollout.segments)
    max_segments: int | None = None
    every_scrape: ClassVar[bool] = True
    reads: ClassVar[str] = "metrics"

    def __post_init__(self) -> None:
        _check_segments(self)
        check_fraction("error_rate.max", self.max_rate)
        check_positive("error_rate.intervals", self.intervals)
        check_positive("error_rate.min_requests", self.min_requests)
        if self.max_ratio is not None:
            check_positive("error_rate.max_ratio", self.max_ratio)
        if self.evidence is not None and not 0.0 < self.evidence < 1.0:
            raise DeployValueError(f"error_rate.evidence must be in (0, 1), not {self.evidence}")

    def judge(self, seen: Observation) -> RuleResult:
        return judge_by_segment(self, seen, self._judge)

    def _judge(self, seen: Observation) -> RuleResult:
        window, stable = seen.candidate, seen.stable
        rate = window.error_rate
        alpha = seen.alpha / 2 if self.max_ratio is not None else seen.alpha
        decision = ThresholdTest(test_level(self.max_rate), alpha=alpha).decide(
            window.errors, window.requests)
        base = partial(RuleResult, rule=self.name, threshold=self.max_rate,
                       samples=window.requests, decision=decision.to_dict())
        if rate is not None and decision.significant:
            text = (f"{rate:.1%} of {window.requests:g} requests failed (max {self.max_rate:.1%}); "
                    f"significant: {decision}")
            return base(verdict="fail", value=rate, message=text, sustained=True)
        if self.max_ratio is not None and stable is not None and rate is not None:
            versus = RateRatioTest(self.max_ratio, alpha=alpha).decide(
                (window.errors, window.requests), (stable.errors, stable.requests))
            if versus.significant and rate > self.max_rate:
                text = (f"{rate:.1%} of {window.requests:g} requests failed (max "
                        f"{self.max_rate:.1%}), stable's {stable.error_rate or 0.0:.2%} of "
                        f"{stable.requests:g} (max {self.max_ratio:g}x); significant: {versus}")
                return base(verdict="fail", value=rate, message=text, sustained=True,
                            decision=versus.to_dict())
        if rate is None or window.requests < self.min_requests:
            return too_few(base, window.requests, self.min_requests, "error rate", rate)
        text = f"{rate:.1%} of {window.requests:g} requests failed (max {self.max_rate:.1%})"
        if rate <= self.max_rate:
            if self.evidence is None or self.max_rate <= 0.0:
                return base(verdict="pass", value=rate, message=text)
            within = ThresholdTest(test_level(self.max_rate), alpha=self.evidence, above=False).decide(
                window.errors, window.requests)
            if within.significant:
                return base(verdict="pass", value=rate, message=text)
            return base(verdict="inconclusive", value=rate,
                        message=f"{text}; evidence it is within pending: {within}",
                        decision={**decision.to_dict(), PENDING: True})
        return base(verdict="fail", value=rate, message=f"{text}; not significant yet: {decision}")


@dataclass(frozen=True)
class LatencyRule:
    """The candidate's p99 latency against ``max_ms``.

    With the latency histogram (the scrape source reads it), the p99 is above ``max_ms``
    exactly when more than 1% of requests are slower than it: a sequential test of that
    share fails the candidate at every scrape as soon as it is significant. Without one
    (a Prometheus source), the p99 must stay above ``max_ms`` for ``hold_seconds``.
    """

    max_ms: float = 500.0
    hold_seconds: float = 60.0
    min_requests: int = 20
    name: str = "latency_p99"
    segment_by: str | None = None  # also judge each segment (rollout.segments)
    max_segments: int | None = None
    every_scrape: ClassVar[bool] = True
    reads: ClassVar[str] = "metrics"

    def __post_init__(self) -> None:
        _check_segments(self)
        check_positive("latency.p99_ms", self.max_ms)
        if self.hold_seconds < 0:
            raise DeployValueError(f"latency.hold must be >= 0, not {self.hold_seconds}")

    def judge(self, seen: Observation) -> RuleResult:
        return judge_by_segment(self, seen, self._judge)

    def _judge(self, seen: Observation) -> RuleResult:
        window = seen.candidate
        base = partial(RuleResult, rule=self.name, threshold=self.max_ms, samples=window.requests)
        p99 = window.p99_ms
        if window.buckets:
            slow, total = exceeding(window.buckets, self.max_ms / 1000.0)
            decision = ThresholdTest(0.01, alpha=seen.alpha).decide(slow, total)
            base = partial(base, decision=decision.to_dict())
            if decision.significant:
                shown = "?" if p99 is None else f"{p99:.0f}"
                return base(
                    verdict="fail", value=p99, sustained=True,
                    message=(f"p99 {shown} ms (max {self.max_ms:.0f} ms); {slow:g} of "
                             f"{total:g} requests slower than {self.max_ms:.0f} ms, "
                             f"significant: {decision}"),
                )
        if p99 is None or window.requests < self.min_requests:
            return too_few(base, window.requests, self.min_requests, "p99 latency", p99)
        text = f"p99 {p99:.0f} ms (max {self.max_ms:.0f} ms)"
        if p99 <= self.max_ms:
            return base(verdict="pass", value=p99, message=text)
        result = base(verdict="fail", value=p99, message=text)
        if window.buckets:
            return replace(result, message=f"{text}; not significant yet")
        return sustain(self.name, seen, intervals_needed(self.hold_seconds, seen.interval), result)


@dataclass(frozen=True)
class RelativeLatencyRule:
    """The candidate's latency against stable's: fails above ``max_ratio`` × stable.

    With both latency histograms, a sequential test of the mean log latency fails the
    candidate at every scrape as soon as it is significantly more than ``max_ratio``
    times stable's. Whatever the histograms, a p99 above ``max_ratio`` × stable's for
    ``intervals`` intervals, and at least ``hold_seconds``, fails it too (a slower tail
    need not move the mean; a p99 of a few seconds of a fresh instance's traffic is no
    evidence, however short the interval). Below
    ``floor_ms`` the candidate passes whatever the ratio (a 3 ms p99 against a 1 ms one
    is noise, not a regression).
    """

    max_ratio: float = 1.5
    intervals: int = 2
    floor_ms: float = 50.0
    min_requests: int = 20
    name: str = "latency_vs_stable"
    hold_seconds: float = 30.0
    segment_by: str | None = None  # also judge each segment (rollout.segments)
    max_segments: int | None = None
    every_scrape: ClassVar[bool] = True
    reads: ClassVar[str] = "metrics"
    needs_stable: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_segments(self)
        if self.max_ratio < 1.0:
            raise DeployValueError(f"latency.relative must be >= 1, not {self.max_ratio}")
        check_positive("latency.relative_intervals", self.intervals)

    def judge(self, seen: Observation) -> RuleResult:
        return judge_by_segment(self, seen, self._judge)

    def _judge(self, seen: Observation) -> RuleResult:
        window, stable = seen.candidate, seen.stable
        base = partial(RuleResult, rule=self.name, threshold=self.max_ratio, samples=window.requests)
        under_floor = window.p99_ms is not None and window.p99_ms <= self.floor_ms
        significant = None
        if window.buckets and stable is not None and stable.buckets:
            decision = DifferenceTest(margin=math.log(self.max_ratio), alpha=seen.alpha).decide(
                log_moments(window.buckets), log_moments(stable.buckets))
            base = partial(base, decision=decision.to_dict())
            if decision.significant and decision.estimate is not None and not under_floor:
                significant = (f"mean latency {math.exp(decision.estimate):.2f}x stable's "
                               f"(max {self.max_ratio:g}x), significant: {decision}")
        if window.p99_ms is None or window.requests < self.min_requests:
            if significant:
                return base(verdict="fail", value=None, message=significant, sustained=True)
            return too_few(base, window.requests, self.min_requests, "p99 latency", None)
        if under_floor:
            return base(
                verdict="pass", value=None,
                message=f"p99 {window.p99_ms:.0f} ms, under the {self.floor_ms:.0f} ms floor",
            )
        if stable is None or stable.p99_ms is None or stable.requests < self.min_requests:
            return base(
                verdict="skip", value=None, message="too little stable traffic to compare",
            )
        ratio = window.p99_ms / max(stable.p99_ms, 1e-6)
        text = (
            f"p99 {window.p99_ms:.0f} ms = {ratio:.2f}x stable's {stable.p99_ms:.0f} ms "
            f"(max {self.max_ratio:g}x)"
        )
        if significant:
            return base(verdict="fail", value=ratio, message=f"{text}; {significant}",
                        sustained=True)
        verdict: Verdict = "pass" if ratio <= self.max_ratio else "fail"
        result = base(verdict=verdict, value=ratio, message=text)
        needed = max(self.intervals, intervals_needed(self.hold_seconds, seen.interval))
        return sustain(self.name, seen, needed, result)
