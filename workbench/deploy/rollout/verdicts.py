"""What a canary rule sees and what it returns: :class:`Observation` and :class:`RuleResult`.

Shared by the rules of :mod:`workbench.deploy.rollout.analysis` and
:mod:`workbench.deploy.rollout.traffic_rules`, with the small helpers they judge with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from workbench.deploy.rollout.sequential import DEFAULT_ALPHA
from workbench.errors import DeployValueError
from workbench.runtime.thresholds import wilson_interval

if TYPE_CHECKING:
    from collections.abc import Mapping

    from workbench.deploy.rollout.signals import ColorWindow, OutputCheck

__all__ = [
    "PENDING",
    "VERDICTS",
    "Observation",
    "Rule",
    "RuleResult",
    "Verdict",
    "check_fraction",
    "check_positive",
    "intervals_needed",
    "sustain",
    "test_level",
    "wilson_interval",
]

Verdict = Literal["pass", "fail", "inconclusive", "skip"]
VERDICTS: tuple[Verdict, ...] = ("pass", "fail", "inconclusive", "skip")


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
    candidate: ColorWindow
    stable: ColorWindow | None = None
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


def intervals_needed(seconds: float, interval: float) -> int:
    return max(1, math.ceil(seconds / interval - 1e-9)) if interval > 0 else 1


def sustain(rule: str, seen: Observation, needed: int, result: RuleResult) -> RuleResult:
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


def test_level(threshold: float) -> float:
    """A threshold as a test level strictly inside (0, 1)."""
    return min(max(threshold, 1e-6), 1.0 - 1e-6)


def check_fraction(what: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise DeployValueError(f"{what} must be a fraction in 0..1, not {value}")


def check_positive(what: str, value: float) -> None:
    if value <= 0:
        raise DeployValueError(f"{what} must be positive, not {value}")
