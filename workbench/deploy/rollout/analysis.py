"""The canary analysis: rules that judge the candidate's signals, and the spec that holds them.

Each rule is a frozen dataclass with a ``judge(observation)`` that returns a
:class:`RuleResult`: the rule's name, the measured value, the threshold, a verdict and a
sentence. Verdicts:

- ``pass``: measured within the threshold on enough samples;
- ``fail``: measured beyond the threshold (``sustained`` says whether the evidence is
  strong enough to roll back now; otherwise the canary holds and gathers more);
- ``inconclusive``: too few samples to tell, or the source could not be read — never
  counted as a pass;
- ``skip``: the rule does not apply (no labelled set, no stable figure to compare with).

**Sequential rules** (``every_scrape``: the error rate, p99 latency, latency against
stable) are judged at every scrape, on the figures accumulated since the step began, with
an anytime-valid test (:mod:`workbench.deploy.rollout.sequential`): a rollback the moment
the evidence against the candidate is significant at ``alpha`` (a candidate failing every
request is rolled back after two or three of them), however often it was looked at. Its
:class:`~workbench.deploy.rollout.sequential.Decision` (statistic, boundary, sample sizes)
is kept in the result. The ``alpha`` a rule gets is the spec's, split evenly among the
sequential rules. The other rules (memory, agreement, accuracy) are judged once an
interval.

**Minimum samples** still apply to a pass: a window with fewer than ``min_requests``
requests (or fewer than ``min_rows`` replayed rows) is inconclusive, so a quiet canary is
held, not waved through. Agreement with stable is judged on the Wilson *lower* bound, so
18/20 agreeing rows do not pass a rule that 900/1000 would.

:class:`AnalysisSpec` gathers the rules, the step plan and the controller's pacing; it
loads from a reusable TOML or YAML file (unknown keys are an error naming the key) and
from CLI flags.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from workbench.deploy.rollout.sequential import (
    DEFAULT_ALPHA,
    DifferenceTest,
    RateRatioTest,
    ThresholdTest,
    exceeding,
    log_moments,
)
from workbench.errors import DeployValueError, MissingDependencyError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from workbench.deploy.rollout.signals import ColourWindow, OutputCheck

__all__ = [
    "DEFAULT_STEPS",
    "GATE",
    "PENDING",
    "AccuracyRule",
    "AgreementRule",
    "AnalysisSpec",
    "ErrorRateRule",
    "LatencyRule",
    "MemoryRule",
    "Observation",
    "RelativeLatencyRule",
    "Rule",
    "RuleResult",
    "Step",
    "parse_duration",
    "parse_steps",
    "wilson_interval",
]

Verdict = Literal["pass", "fail", "inconclusive", "skip"]
VERDICTS: tuple[Verdict, ...] = ("pass", "fail", "inconclusive", "skip")
#: A step of the plan: a candidate weight in percent, or a manual gate.
Step = int | Literal["gate"]
GATE: Literal["gate"] = "gate"
DEFAULT_STEPS: tuple[Step, ...] = (5, 25, 50, 100)
Z_95 = 1.959964  # two-sided 95% normal quantile


def wilson_interval(successes: float, trials: float, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (``(0, 1)`` for no trials)."""
    if trials <= 0:
        return 0.0, 1.0
    p = min(max(successes / trials, 0.0), 1.0)
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class RuleResult:
    """One rule's judgement of one interval."""

    rule: str
    verdict: Verdict
    value: float | None  # what was measured (None when nothing could be)
    threshold: float
    message: str
    sustained: bool = False  # a fail strong or long enough to roll back now
    samples: float = 0.0
    # a sequential rule's test: statistic, boundary, estimate, sample sizes (Decision.to_dict)
    decision: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, not {self.verdict!r}")

    def __str__(self) -> str:
        return f"{self.rule}: {self.verdict} ({self.message})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "verdict": self.verdict,
            "value": self.value,
            "threshold": self.threshold,
            "message": self.message,
            "sustained": self.sustained,
            "samples": self.samples,
            **({"decision": dict(self.decision)} if self.decision is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuleResult:
        value = data.get("value")
        verdict = str(data["verdict"])
        if verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {verdict!r}")
        return cls(
            rule=str(data["rule"]),
            verdict=verdict,  # type: ignore[arg-type]
            value=None if value is None else float(value),
            threshold=float(data["threshold"]),
            message=str(data.get("message", "")),
            sustained=bool(data.get("sustained", False)),
            samples=float(data.get("samples", 0.0)),
            decision=dict(data["decision"]) if data.get("decision") else None,
        )


@dataclass(frozen=True)
class Observation:
    """What the controller saw, and the little it remembers of the last intervals.

    At every scrape the windows hold the traffic since the step began (what the
    sequential rules judge); ``due`` marks the look that ends an interval.
    """

    interval: float  # seconds between interval decisions (the step's minimum dwell)
    candidate: ColourWindow
    stable: ColourWindow | None = None
    output: OutputCheck | None = None
    previous_memory: float | None = None  # candidate's resident memory at the last interval
    streaks: Mapping[str, int] = field(default_factory=dict)  # rule -> failed intervals so far
    alpha: float = DEFAULT_ALPHA  # the level of each sequential rule's test
    due: bool = True  # this look ends an interval (streaks may complete only then)


class Rule(Protocol):
    """A check of one interval; ``name`` keys its streak and its history."""

    @property
    def name(self) -> str: ...

    def judge(self, seen: Observation) -> RuleResult: ...


def _needed(seconds: float, interval: float) -> int:
    return max(1, math.ceil(seconds / interval - 1e-9)) if interval > 0 else 1


def _finish(rule: str, seen: Observation, needed: int, result: RuleResult) -> RuleResult:
    """Mark a failing result sustained once it failed ``needed`` intervals in a row."""
    if result.verdict != "fail" or result.sustained:
        return result
    streak = seen.streaks.get(rule, 0) + 1
    if streak >= needed and seen.due:
        return replace(result, sustained=True)
    return replace(result, message=f"{result.message}; {streak} of {needed} intervals")


#: Marks a result's decision whose evidence for a pass is still coming in: the step
#: holds without counting an inconclusive interval.
PENDING = "pending"


def _level(threshold: float) -> float:
    """A threshold as a test level strictly inside (0, 1)."""
    return min(max(threshold, 1e-6), 1.0 - 1e-6)


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
    every_scrape: ClassVar[bool] = True
    reads: ClassVar[str] = "metrics"

    def __post_init__(self) -> None:
        _check_fraction("error_rate.max", self.max_rate)
        _check_positive("error_rate.intervals", self.intervals)
        _check_positive("error_rate.min_requests", self.min_requests)
        if self.max_ratio is not None:
            _check_positive("error_rate.max_ratio", self.max_ratio)
        if self.evidence is not None and not 0.0 < self.evidence < 1.0:
            raise DeployValueError(f"error_rate.evidence must be in (0, 1), not {self.evidence}")

    def judge(self, seen: Observation) -> RuleResult:
        window, stable = seen.candidate, seen.stable
        rate = window.error_rate
        alpha = seen.alpha / 2 if self.max_ratio is not None else seen.alpha
        decision = ThresholdTest(_level(self.max_rate), alpha=alpha).decide(
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
            return base(
                verdict="inconclusive", value=rate,
                message=f"{window.requests:g} requests, need {self.min_requests}",
            )
        text = f"{rate:.1%} of {window.requests:g} requests failed (max {self.max_rate:.1%})"
        if rate <= self.max_rate:
            if self.evidence is None or self.max_rate <= 0.0:
                return base(verdict="pass", value=rate, message=text)
            within = ThresholdTest(_level(self.max_rate), alpha=self.evidence, above=False).decide(
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
    every_scrape: ClassVar[bool] = True
    reads: ClassVar[str] = "metrics"

    def __post_init__(self) -> None:
        _check_positive("latency.p99_ms", self.max_ms)
        if self.hold_seconds < 0:
            raise DeployValueError(f"latency.hold must be >= 0, not {self.hold_seconds}")

    def judge(self, seen: Observation) -> RuleResult:
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
            return base(
                verdict="inconclusive", value=p99,
                message=f"{window.requests:g} requests, need {self.min_requests}",
            )
        text = f"p99 {p99:.0f} ms (max {self.max_ms:.0f} ms)"
        if p99 <= self.max_ms:
            return base(verdict="pass", value=p99, message=text)
        result = base(verdict="fail", value=p99, message=text)
        if window.buckets:
            return replace(result, message=f"{text}; not significant yet")
        return _finish(self.name, seen, _needed(self.hold_seconds, seen.interval), result)


@dataclass(frozen=True)
class RelativeLatencyRule:
    """The candidate's latency against stable's: fails above ``max_ratio`` × stable.

    With both latency histograms, a sequential test of the mean log latency fails the
    candidate at every scrape as soon as it is significantly more than ``max_ratio``
    times stable's. Whatever the histograms, a p99 above ``max_ratio`` × stable's for
    ``intervals`` intervals fails it too (a slower tail need not move the mean). Below
    ``floor_ms`` the candidate passes whatever the ratio (a 3 ms p99 against a 1 ms one
    is noise, not a regression).
    """

    max_ratio: float = 1.5
    intervals: int = 2
    floor_ms: float = 50.0
    min_requests: int = 20
    name: str = "latency_vs_stable"
    every_scrape: ClassVar[bool] = True
    reads: ClassVar[str] = "metrics"
    needs_stable: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.max_ratio < 1.0:
            raise DeployValueError(f"latency.relative must be >= 1, not {self.max_ratio}")
        _check_positive("latency.relative_intervals", self.intervals)

    def judge(self, seen: Observation) -> RuleResult:
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
            return base(
                verdict="inconclusive", value=None,
                message=f"{window.requests:g} requests, need {self.min_requests}",
            )
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
        return _finish(self.name, seen, self.intervals, result)


@dataclass(frozen=True)
class MemoryRule:
    """Growth of the candidate's resident memory: fails above ``max_mb_per_min``
    for ``intervals`` intervals (a leak grows steadily; a warm-up jump does not last)."""

    max_mb_per_min: float = 100.0
    intervals: int = 2
    name: str = "memory_growth"
    reads: ClassVar[str] = "metrics"

    def __post_init__(self) -> None:
        _check_positive("memory.growth_mb_per_min", self.max_mb_per_min)
        _check_positive("memory.intervals", self.intervals)

    def judge(self, seen: Observation) -> RuleResult:
        now, before = seen.candidate.memory_bytes, seen.previous_memory
        base = partial(RuleResult, rule=self.name, threshold=self.max_mb_per_min)
        if now is None or before is None or seen.interval <= 0:
            return base(
                verdict="skip", value=None, message="no earlier memory reading yet"
            )
        growth = (now - before) / 1e6 / (seen.interval / 60.0)
        text = f"{growth:+.1f} MB/min (max {self.max_mb_per_min:g})"
        verdict: Verdict = "pass" if growth <= self.max_mb_per_min else "fail"
        result = base(verdict=verdict, value=growth, message=text)
        return _finish(self.name, seen, self.intervals, result)


@dataclass(frozen=True)
class AgreementRule:
    """Top-1 agreement of the candidate with stable on replayed inputs: fails when the
    Wilson lower bound of the agreement is below ``min_agreement``.

    The default 0.8 sits between the demo's versions, measured against 1.0.0 on the
    540 held-out digits: 1.1.0 (retrained) agrees on 94.3% (lower bound 92%; on 64 rows
    about 85%), the degraded 1.2.0 on 74.4% (lower bound 71%). Below ``min_rows`` rows
    the check is inconclusive: the 8-row manifest sample alone cannot tell them apart.
    """

    min_agreement: float = 0.8
    min_rows: int = 32
    name: str = "agreement"

    def __post_init__(self) -> None:
        _check_fraction("agreement.min", self.min_agreement)
        _check_positive("agreement.min_rows", self.min_rows)

    def judge(self, seen: Observation) -> RuleResult:
        check = seen.output
        base = partial(RuleResult, rule=self.name, threshold=self.min_agreement)
        if check is None:
            return base(verdict="skip", value=None, message="no inputs to replay (no labelled set)")
        if check.agreement is None:
            return base(verdict="inconclusive", value=None, message="no replayed outputs")
        if check.rows < self.min_rows:
            return base(
                verdict="inconclusive", value=check.agreement, samples=check.rows,
                message=f"{check.rows} rows replayed, need {self.min_rows}",
            )
        low, _ = wilson_interval(check.agreement * check.rows, check.rows)
        text = (
            f"{check.agreement:.1%} of {check.rows} rows agree, lower bound {low:.1%} "
            f"(min {self.min_agreement:.0%})"
        )
        if check.unanswered:
            text += f"; the candidate answered {check.unanswered} of them with an error"
        verdict: Verdict = "pass" if low >= self.min_agreement else "fail"
        # An output disagreement does not fade with time: one failed interval is enough.
        return base(
            verdict=verdict, value=low, message=text, sustained=verdict == "fail",
            samples=check.rows,
        )


@dataclass(frozen=True)
class AccuracyRule:
    """Accuracy on a labelled set: fails on a drop of more than ``max_drop`` points
    against stable. Skipped when no labelled set is given."""

    max_drop: float = 5.0
    name: str = "accuracy"
    reads: ClassVar[str] = "output"

    def __post_init__(self) -> None:
        if not 0 <= self.max_drop <= 100:
            raise DeployValueError(f"accuracy.max_drop must be in 0..100, not {self.max_drop}")

    def judge(self, seen: Observation) -> RuleResult:
        check = seen.output
        base = partial(RuleResult, rule=self.name, threshold=self.max_drop)
        if check is None or check.accuracy_stable is None or check.accuracy_candidate is None:
            return base(verdict="skip", value=None, message="no labelled set")
        drop = (check.accuracy_stable - check.accuracy_candidate) * 100
        text = (
            f"accuracy {check.accuracy_candidate:.1%} vs stable {check.accuracy_stable:.1%}: "
            f"{drop:+.1f} points drop (max {self.max_drop:g})"
        )
        verdict: Verdict = "pass" if drop <= self.max_drop else "fail"
        return base(
            verdict=verdict, value=drop, message=text, sustained=verdict == "fail",
            samples=check.rows,
        )


# ----------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class AnalysisSpec:
    """How a canary is stepped and judged (see ``workbench deploy update --help``)."""

    steps: tuple[Step, ...] = DEFAULT_STEPS
    interval: float = 30.0  # seconds between interval decisions: each step's minimum dwell
    max_inconclusive: int = 5  # inconclusive intervals in a row before the rollout pauses
    alpha: float = DEFAULT_ALPHA  # level of the sequential tests (split among their rules)
    scrape: float = 1.0  # seconds between scrapes (looks), at most the interval
    max_failures: int = 10  # failed reads of a source in a row before the rollout pauses
    mirror: int = 0  # percent of stable's requests mirrored to the candidate (0: no mirror)
    mirror_intervals: int = 1  # intervals judged on mirrored traffic before the first weight
    synthetic: float = 0.0  # requests/s of sample traffic sent to the candidate (0: none)
    labelled: str | None = None  # .npz with inputs and "labels", for the accuracy rule
    hooks: tuple[str, ...] = ()  # commands to run or URLs to POST each event to
    confirm: tuple[str, ...] = ()  # commands or URLs that must accept each automatic promotion
    hook_timeout: float = 5.0  # total deadline of one hook delivery (and of all confirmations)
    rules: tuple[Rule, ...] = field(
        default_factory=lambda: (
            ErrorRateRule(), LatencyRule(), RelativeLatencyRule(), MemoryRule(),
            AgreementRule(), AccuracyRule(),
        )
    )

    def __post_init__(self) -> None:
        if not self.steps:
            raise DeployValueError("a canary needs at least one step")
        weights = [s for s in self.steps if s != GATE]
        for weight in weights:
            if isinstance(weight, bool) or not isinstance(weight, int) or not 0 < weight <= 100:
                raise DeployValueError(f"a step weight must be in 1..100, not {weight!r}")
        if weights != sorted(weights) or len(set(weights)) != len(weights):
            raise DeployValueError(f"step weights must increase: {format_steps(self.steps)}")
        if self.interval <= 0:
            raise DeployValueError(f"interval must be positive, not {self.interval}")
        _check_positive("max_inconclusive", self.max_inconclusive)
        if not 0.0 < self.alpha < 1.0:
            raise DeployValueError(f"alpha must be in (0, 1), not {self.alpha}")
        _check_positive("scrape", self.scrape)
        _check_positive("max_failures", self.max_failures)
        _check_positive("hook_timeout", self.hook_timeout)
        if not 0 <= self.mirror <= 100:
            raise DeployValueError(f"mirror must be a percentage in 0..100, not {self.mirror}")
        if self.synthetic < 0:
            raise DeployValueError(f"synthetic must be >= 0 requests/s, not {self.synthetic}")
        names = [rule.name for rule in self.rules]
        if len(set(names)) != len(names):
            raise DeployValueError(f"rule names must be unique: {names}")

    def rule(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)

    def judge(self, seen: Observation) -> tuple[RuleResult, ...]:
        return tuple(rule.judge(seen) for rule in self.rules)

    @property
    def look(self) -> float:
        """Seconds between two looks of the controller (scrapes)."""
        return min(self.scrape, self.interval)

    @property
    def rule_alpha(self) -> float:
        """Each sequential rule's level: ``alpha`` split among them (Bonferroni)."""
        count = sum(bool(getattr(rule, "every_scrape", False)) for rule in self.rules)
        return self.alpha / max(count, 1)

    # -- (de)serialisation ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "steps": list(self.steps),
            "interval": self.interval,
            "max_inconclusive": self.max_inconclusive,
            "alpha": self.alpha,
            "scrape": self.scrape,
            "max_failures": self.max_failures,
            "mirror": self.mirror,
            "mirror_intervals": self.mirror_intervals,
            "synthetic": self.synthetic,
            "labelled": self.labelled,
            "hooks": list(self.hooks),
            "confirm": list(self.confirm),
            "hook_timeout": self.hook_timeout,
        }
        present = {rule.name for rule in self.rules}
        for section, (cls, keys) in _SECTIONS.items():
            rule = next((r for r in self.rules if isinstance(r, cls)), None)
            if rule is None or rule.name not in present:
                data[section] = False
                continue
            data[section] = {key: getattr(rule, attr) for key, attr in keys.items()
                             if getattr(rule, attr) is not None}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "analysis") -> AnalysisSpec:
        """Build a spec from a mapping (a parsed file, or a persisted spec).

        Top-level keys: ``steps``, ``interval``, ``max_inconclusive``, ``alpha``,
        ``scrape``, ``max_failures``, ``mirror``, ``mirror_intervals``, ``synthetic``,
        ``labelled``, ``hooks``, ``confirm``, ``hook_timeout``, and one table per
        rule (``error_rate``, ``latency``, ``relative_latency``, ``memory``, ``agreement``,
        ``accuracy``); a rule table set to ``false`` drops the rule.
        """
        known = {"steps", "interval", "max_inconclusive", "mirror", "mirror_intervals",
                 "synthetic", "labelled", "hooks", "alpha", "scrape", "max_failures",
                 "confirm", "hook_timeout", *_SECTIONS}
        for key in data:
            if key not in known:
                raise DeployValueError(
                    f"{source}: unknown key {key!r} (known: {', '.join(sorted(known))})"
                )
        changes: dict[str, Any] = {}
        if "steps" in data:
            changes["steps"] = parse_steps(data["steps"])
        for key in ("interval", "scrape", "hook_timeout"):
            if key in data:
                changes[key] = parse_duration(data[key])
        if "alpha" in data:
            changes["alpha"] = _float(f"{source}: alpha", data["alpha"])
        for key in ("max_inconclusive", "mirror", "mirror_intervals", "max_failures"):
            if key in data:
                changes[key] = _int(f"{source}: {key}", data[key])
        if "synthetic" in data:
            changes["synthetic"] = _float(f"{source}: synthetic", data["synthetic"])
        if data.get("labelled") is not None:
            changes["labelled"] = str(data["labelled"])
        for key in ("hooks", "confirm"):
            if key in data:
                hooks = data[key]
                changes[key] = (hooks,) if isinstance(hooks, str) else tuple(map(str, hooks))
        rules: list[Rule] = []
        for section, (rule_cls, keys) in _SECTIONS.items():
            table = data.get(section, {})
            if table is False:
                continue
            if table is True or table is None:
                table = {}
            if not isinstance(table, dict):
                raise DeployValueError(f"{source}: {section} must be a table or false")
            kwargs: dict[str, Any] = {}
            for key, value in table.items():
                if key not in keys:
                    raise DeployValueError(
                        f"{source}: unknown key {section}.{key} "
                        f"(known: {', '.join(sorted(keys))})"
                    )
                attr = keys[key]
                if attr == "hold_seconds":
                    kwargs[attr] = parse_duration(value)
                elif attr in _INT_ATTRS:
                    kwargs[attr] = _int(f"{source}: {section}.{key}", value)
                else:
                    kwargs[attr] = _float(f"{source}: {section}.{key}", value)
            rules.append(rule_cls(**kwargs))
        changes["rules"] = tuple(rules)
        return replace(cls(), **changes)

    @classmethod
    def load(cls, path: str | Path) -> AnalysisSpec:
        """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) analysis file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise DeployValueError(f"cannot read analysis file {path}: {exc.strerror}") from None
        if path.suffix == ".toml":
            import tomllib

            try:
                data: Any = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise DeployValueError(f"{path}: not valid TOML: {exc}") from None
        elif path.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError as exc:  # pragma: no cover - pyyaml is a dependency
                raise MissingDependencyError("reading YAML needs pyyaml") from exc
            try:
                data = yaml.safe_load(text) or {}
            except yaml.YAMLError as exc:
                raise DeployValueError(f"{path}: not valid YAML: {exc}") from None
        else:
            raise DeployValueError(f"{path}: an analysis file ends in .toml, .yaml or .yml")
        if not isinstance(data, dict):
            raise DeployValueError(f"{path}: expected a table of settings at the top")
        return cls.from_dict(data, source=str(path))

    def with_flags(self, **flags: Any) -> AnalysisSpec:
        """This spec with the CLI flags that were given (``None`` = not given)."""
        given = {k: v for k, v in flags.items() if v is not None}
        unknown = set(given) - {f.name for f in fields(self)}
        if unknown:
            raise DeployValueError(f"unknown analysis settings: {sorted(unknown)}")
        if "steps" in given:
            given["steps"] = parse_steps(given["steps"])
        for key in ("interval", "scrape", "hook_timeout"):
            if key in given:
                given[key] = parse_duration(given[key])
        for key in ("hooks", "confirm"):
            if key in given:
                given[key] = tuple(given[key])
        return replace(self, **given)


#: file section -> (rule class, {file key: dataclass attribute})
_SECTIONS: dict[str, tuple[Any, dict[str, str]]] = {
    "error_rate": (ErrorRateRule, {"max": "max_rate", "intervals": "intervals",
                                   "min_requests": "min_requests", "max_ratio": "max_ratio",
                                   "evidence": "evidence"}),
    "latency": (LatencyRule, {"p99_ms": "max_ms", "hold": "hold_seconds",
                              "min_requests": "min_requests"}),
    "relative_latency": (RelativeLatencyRule, {"max_ratio": "max_ratio",
                                               "intervals": "intervals",
                                               "floor_ms": "floor_ms",
                                               "min_requests": "min_requests"}),
    "memory": (MemoryRule, {"growth_mb_per_min": "max_mb_per_min", "intervals": "intervals"}),
    "agreement": (AgreementRule, {"min": "min_agreement", "min_rows": "min_rows"}),
    "accuracy": (AccuracyRule, {"max_drop": "max_drop"}),
}
_INT_ATTRS = {"intervals", "min_requests", "min_rows"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(value: object) -> float:
    """``30s``, ``1.5m``, ``500ms``, ``2h`` or a number of seconds → seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise DeployValueError(f"not a duration: {value!r} (try 30s, 2m, 500ms)")
        unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2) or "s"]
        seconds = float(match.group(1)) * unit
    if seconds < 0:
        raise DeployValueError(f"a duration must be >= 0, not {value!r}")
    return seconds


def parse_steps(value: object) -> tuple[Step, ...]:
    """``"5,25,gate,100"`` or ``[5, 25, "gate", 100]`` → ``(5, 25, "gate", 100)``."""
    items: Sequence[object] = (
        [p for p in value.split(",") if p.strip()] if isinstance(value, str) else value  # type: ignore[assignment]
    )
    steps: list[Step] = []
    for item in items:
        text = str(item).strip().rstrip("%")
        if text.lower() == GATE:
            steps.append(GATE)
            continue
        try:
            steps.append(int(text))
        except ValueError:
            raise DeployValueError(
                f"a step is a weight in percent or 'gate', not {item!r}"
            ) from None
    return tuple(steps)


def format_steps(steps: Sequence[Step]) -> str:
    return ",".join(str(s) for s in steps)


def _int(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DeployValueError(f"{what} must be a whole number, not {value!r}")
    try:
        return int(value)
    except ValueError:
        raise DeployValueError(f"{what} must be a whole number, not {value!r}") from None


def _float(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DeployValueError(f"{what} must be a number, not {value!r}")
    try:
        return float(value)
    except ValueError:
        raise DeployValueError(f"{what} must be a number, not {value!r}") from None


def _check_fraction(what: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise DeployValueError(f"{what} must be a fraction in 0..1, not {value}")


def _check_positive(what: str, value: float) -> None:
    if value <= 0:
        raise DeployValueError(f"{what} must be positive, not {value}")
