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
stable, in :mod:`workbench.deploy.rollout.traffic_rules`) are judged at every scrape, on
the figures accumulated since the step began, with an anytime-valid test
(:mod:`workbench.deploy.rollout.sequential`): a rollback the moment the evidence against
the candidate is significant at ``alpha`` (a candidate failing every request is rolled
back after two or three of them), however often it was looked at. Its
:class:`~workbench.deploy.rollout.sequential.Decision` (statistic, boundary, sample sizes)
is kept in the result. The ``alpha`` a rule gets is the spec's, split evenly among the
sequential rules. The other rules (memory, agreement, accuracy:
:mod:`workbench.deploy.rollout.output_rules`) are judged once an interval; top-1
agreement may also fail the candidate on any replay in between, on its own sequential
test over the step's distinct rows.

**Minimum samples** still apply to a pass: a window with fewer than ``min_requests``
requests (or fewer than ``min_rows`` replayed rows) is inconclusive, so a quiet canary is
held, not waved through. Agreement with stable is judged on the Wilson *lower* bound, so
18/20 agreeing rows do not pass a rule that 900/1000 would.

:class:`AnalysisSpec` gathers the rules, the step plan and the controller's pacing; it
loads from a reusable TOML or YAML file (unknown keys are an error naming the key) and
from CLI flags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from workbench.deploy.rollout.output_rules import AccuracyRule, AgreementRule
from workbench.deploy.rollout.sequential import DEFAULT_ALPHA
from workbench.deploy.rollout.traffic_rules import ErrorRateRule, LatencyRule, RelativeLatencyRule
from workbench.deploy.rollout.verdicts import (
    PENDING,
    VERDICTS,
    Observation,
    Rule,
    RuleResult,
    Verdict,
    wilson_interval,
)
from workbench.deploy.rollout.verdicts import check_positive as _check_positive
from workbench.deploy.rollout.verdicts import sustain as _finish
from workbench.errors import DeployValueError, MissingDependencyError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


__all__ = [
    "DEFAULT_STEPS",
    "GATE",
    "PENDING",
    "VERDICTS",
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
    "Verdict",
    "parse_duration",
    "parse_steps",
    "wilson_interval",
]

#: A step of the plan: a candidate weight in percent, or a manual gate.
Step = int | Literal["gate"]
GATE: Literal["gate"] = "gate"
DEFAULT_STEPS: tuple[Step, ...] = (5, 25, 50, 100)


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
    # .npz with inputs and "labels" (an OCR pipeline: a directory of images and
    # texts.json), for the accuracy rule
    labelled: str | None = None
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
        ``accuracy``); a rule table set to ``false`` drops the rule. ``segment_by`` and
        ``max_segments`` at the top apply to the three traffic rules that do not set
        their own (:mod:`workbench.deploy.rollout.segments`); ``agreement`` is judged per
        segment only with its own ``segment_by``.
        """
        known = {"steps", "interval", "max_inconclusive", "mirror", "mirror_intervals",
                 "synthetic", "labelled", "hooks", "alpha", "scrape", "max_failures",
                 "confirm", "hook_timeout", "segment_by", "max_segments", *_SECTIONS}
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
                if attr == "segment_by":
                    kwargs[attr] = None if value is False else str(value)
                elif attr == "hold_seconds":
                    kwargs[attr] = parse_duration(value)
                elif attr in _INT_ATTRS:
                    kwargs[attr] = _int(f"{source}: {section}.{key}", value)
                else:
                    kwargs[attr] = _float(f"{source}: {section}.{key}", value)
            # the analysis' segment_by, for the traffic rules that do not set their own
            # (agreement per segment replays stable's per-segment samples: asked for apart)
            if "segment_by" in keys and section != "agreement":
                for attr in ("segment_by", "max_segments"):
                    if attr not in kwargs and data.get(attr) is not None:
                        kwargs[attr] = (str(data[attr]) if attr == "segment_by"
                                        else _int(f"{source}: {attr}", data[attr]))
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


#: a traffic rule judged per segment too (workbench.deploy.rollout.segments)
_SEGMENTS = {"segment_by": "segment_by", "max_segments": "max_segments"}
#: file section -> (rule class, {file key: dataclass attribute})
_SECTIONS: dict[str, tuple[Any, dict[str, str]]] = {
    "error_rate": (ErrorRateRule, {"max": "max_rate", "intervals": "intervals",
                                   "min_requests": "min_requests", "max_ratio": "max_ratio",
                                   "evidence": "evidence", **_SEGMENTS}),
    "latency": (LatencyRule, {"p99_ms": "max_ms", "hold": "hold_seconds",
                              "min_requests": "min_requests", **_SEGMENTS}),
    "relative_latency": (RelativeLatencyRule, {"max_ratio": "max_ratio",
                                               "intervals": "intervals",
                                               "floor_ms": "floor_ms",
                                               "min_requests": "min_requests", **_SEGMENTS}),
    "memory": (MemoryRule, {"growth_mb_per_min": "max_mb_per_min", "intervals": "intervals"}),
    "agreement": (AgreementRule, {"min": "min_agreement", "min_rows": "min_rows",
                                  "min_box_f1": "min_box_f1", "max_cer": "max_cer",
                                  "min_within_tolerance": "min_within_tolerance",
                                  **_SEGMENTS}),
    "accuracy": (AccuracyRule, {"max_drop": "max_drop"}),
}
_INT_ATTRS = {"intervals", "min_requests", "min_rows", "max_segments"}
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


