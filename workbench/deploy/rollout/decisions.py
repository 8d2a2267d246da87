"""The canary's data and its pure step: where a canary stands, and what a look decides.

:class:`CanaryStatus` is what is persisted (in the deployment's state file, key
``canary``): the step plan, where the rollout stands in it, when the step began, the
rules' failure streaks, the inconclusive and source-failure counts and the last verdicts.
:func:`decide` is the pure step: given the status, the spec, one look's rule results, the
sources that failed and the time, it returns the next status and at most one
:class:`Action`:

- ``rollback``: a rule's evidence against the candidate is significant → all traffic to
  stable at once, at any look (the reason names the rule and its numbers);
- ``advance``: the step's interval has passed (its minimum dwell) and every rule passed
  (or was skipped) → the next step's weight, at the first look where that holds;
- ``gate``: the next step is a manual gate → wait for ``promote`` or ``resume``;
- ``promote``: the last step passed → the candidate takes all traffic (after the
  ``confirm`` hooks accepted it: a refusal or a timeout pauses instead);
- ``hold``: at the end of an interval, a rule is inconclusive or failing without
  significance yet;
- ``pause``: ``max_inconclusive`` inconclusive intervals, or ``max_failures`` failed
  reads of a source, in a row → pause, saying why;
- ``observe``: a look with nothing to do but a source failure to count (persisted, no
  history entry); ``none``: nothing to do or to record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from workbench.deploy.rollout.analysis import (
    GATE,
    PENDING,
    AnalysisSpec,
    RuleResult,
    Step,
)
from workbench.deploy.rollout.phases import Phase
from workbench.errors import RolloutError

__all__ = [
    "FINAL",
    "Action",
    "CanaryStage",
    "CanaryStatus",
    "Stage",
    "canary_stage",
    "decide",
    "finish",
    "pause",
    "resume",
    "skip",
    "start",
]


class Stage(str, Enum):
    """Where a canary stands in its plan, where the deployment's :class:`Phase` has no word
    for it. A canary that ended stands at :attr:`Phase.PROMOTED`, :attr:`Phase.ROLLED_BACK`
    (the deployment's own phases) or :attr:`ABORTED` (the deployment is back to stable)."""

    # Mirrored copies of stable's traffic reach the candidate; no user sees its answers.
    MIRROR = "mirror"
    # The candidate takes the current step's weight and is judged at every scrape.
    STEP = "step"
    # The plan reached a manual gate: waiting for promote or resume.
    GATE = "gate"
    # Paused by a user, after too many inconclusive intervals or failed reads of a
    # source, or because a promotion was not confirmed; resume to go on.
    PAUSED = "paused"
    # A user aborted the canary.
    ABORTED = "aborted"

    def __str__(self) -> str:
        return self.value


#: Where a canary can stand: one of its own stages, or the phase it ended in.
CanaryStage = Stage | Phase
#: Where a canary ends: the candidate took all traffic (promoted), a rule failed or a user
#: rolled back (rolled_back: all traffic on stable), or a user aborted it.
FINAL: frozenset[CanaryStage] = frozenset({Phase.PROMOTED, Phase.ROLLED_BACK, Stage.ABORTED})


def canary_stage(value: object) -> CanaryStage:
    """The stage named ``value`` (``step``, ``gate``, …, ``promoted``, ``rolled_back``)."""
    if isinstance(value, (Stage, Phase)):
        return value
    text = str(value)
    if text in (Phase.PROMOTED.value, Phase.ROLLED_BACK.value):
        return Phase(text)
    try:
        return Stage(text)
    except ValueError:
        raise ValueError(f"unknown canary stage {text!r}") from None


@dataclass(frozen=True)
class CanaryStatus:
    """The persisted status of one canary (see the module docstring)."""

    steps: tuple[Step, ...]
    index: int = 0  # the step of ``steps`` the canary is at (-1: mirror phase)
    stage: CanaryStage = Stage.STEP
    ticks: int = 0  # decisions taken so far (intervals ended, steps passed, rollbacks)
    at_step: int = 0  # intervals ended at the current step
    inconclusive: int = 0  # inconclusive intervals in a row
    failures: int = 0  # looks in a row at which a source could not be read
    streaks: Mapping[str, int] = field(default_factory=dict)  # rule -> failed intervals in a row
    memory: float | None = None  # the candidate's resident memory at the last tick
    last: tuple[RuleResult, ...] = ()
    message: str = ""
    started: float = 0.0
    updated: float = 0.0
    since: float = 0.0  # when the current step (or the mirror) began
    checked: float = 0.0  # when the last interval ended (the next ends one interval later)
    #: bumped on every save; a save must follow the revision its decision was made on
    revision: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage", canary_stage(self.stage))
        if not -1 <= self.index < len(self.steps):
            raise ValueError(f"step index {self.index} outside the plan {self.steps}")

    @property
    def step(self) -> Step | None:
        return None if self.index < 0 else self.steps[self.index]

    @property
    def weight(self) -> int:
        """The candidate's weight at this point of the plan (the last weight before a gate)."""
        weights = [s for s in self.steps[: self.index + 1] if s != GATE]
        return int(weights[-1]) if weights and self.index >= 0 else 0

    @property
    def done(self) -> bool:
        return self.stage in FINAL

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": list(self.steps),
            "index": self.index,
            "stage": self.stage.value,
            "ticks": self.ticks,
            "at_step": self.at_step,
            "inconclusive": self.inconclusive,
            "streaks": dict(self.streaks),
            "memory": self.memory,
            "last": [r.to_dict() for r in self.last],
            "message": self.message,
            "started": self.started,
            "updated": self.updated,
            "since": self.since,
            "checked": self.checked,
            "failures": self.failures,
            "revision": self.revision,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CanaryStatus:
        memory = data.get("memory")
        return cls(
            steps=tuple(GATE if s == GATE else int(s) for s in data["steps"]),
            index=int(data.get("index", 0)),
            stage=canary_stage(data.get("stage", "step")),
            ticks=int(data.get("ticks", 0)),
            at_step=int(data.get("at_step", 0)),
            inconclusive=int(data.get("inconclusive", 0)),
            streaks={str(k): int(v) for k, v in dict(data.get("streaks", {})).items()},
            memory=None if memory is None else float(memory),
            last=tuple(RuleResult.from_dict(r) for r in data.get("last", [])),
            message=str(data.get("message", "")),
            started=float(data.get("started", 0.0)),
            updated=float(data.get("updated", 0.0)),
            since=float(data.get("since", data.get("updated", 0.0))),
            checked=float(data.get("checked", data.get("updated", 0.0))),
            failures=int(data.get("failures", 0)),
            revision=int(data.get("revision", 0)),
        )


@dataclass(frozen=True)
class Action:
    """What one look decided; ``kind`` is advance, gate, hold, pause, rollback, promote,
    observe or none (and mirror, resume, abort for the other transitions)."""

    kind: str
    weight: int | None = None  # the candidate's weight after the action (advance, promote)
    reason: str = ""


def start(spec: AnalysisSpec, *, now: float) -> tuple[CanaryStatus, Action]:
    """The status and first action of a new canary (mirror phase, or the first step)."""
    if spec.mirror:
        status = CanaryStatus(spec.steps, index=-1, stage=Stage.MIRROR, started=now,
                              updated=now, since=now, checked=now,
                              message=f"mirroring {spec.mirror}% of traffic")
        return status, Action("mirror", 0, status.message)
    status = CanaryStatus(spec.steps, index=-1, stage=Stage.STEP, started=now, updated=now)
    return _enter_next(status, now=now, reason="canary started")


def decide(
    status: CanaryStatus,
    spec: AnalysisSpec,
    results: tuple[RuleResult, ...],
    *,
    now: float,
    failures: Mapping[str, str] | None = None,
    due: bool | None = None,
) -> tuple[CanaryStatus, Action]:
    """One look: judge ``results`` and do at most one transition (see the module docstring).

    ``failures`` maps each source that could not be read at this look (``metrics``,
    ``stable metrics``, ``output``) to why; ``due``: whether the look ends an interval
    (default: the interval has passed since the last one ended).
    """
    if status.stage not in (Stage.STEP, Stage.MIRROR):
        return status, Action("none", reason=f"canary is {status.stage.value}")
    failures = failures or {}
    failed_reads = status.failures + 1 if failures else 0
    if due is None:
        due = now - (status.checked or status.since) >= spec.interval - 1e-6
    dwell = spec.interval * (spec.mirror_intervals if status.stage is Stage.MIRROR else 1)
    dwelt = now - status.since >= dwell - 1e-6
    decided = replace(status, ticks=status.ticks + 1, last=results, updated=now,
                      failures=failed_reads)
    failed = [r for r in results if r.verdict == "fail" and r.sustained]
    if failed:
        worst = failed[0]
        reason = f"rule {worst.rule} failed: {worst.message}"
        return (replace(decided, stage=Phase.ROLLED_BACK, message=reason),
                Action("rollback", 0, reason))
    why_failed = "; ".join(f"{source}: {why}" for source, why in failures.items())
    if failures and failed_reads >= spec.max_failures:
        reason = f"paused after {failed_reads} failed reads in a row ({why_failed})"
        return (replace(decided, stage=Stage.PAUSED, message=reason), Action("pause", reason=reason))
    passed = all(r.verdict in ("pass", "skip") for r in results) and not failures
    if not due:
        if dwelt and passed:
            return _enter_next(replace(decided, inconclusive=0), now=now,
                               reason="all rules passed")
        if failed_reads != status.failures:
            reason = f"cannot read {why_failed}" if failures else "sources read again"
            return (replace(status, failures=failed_reads, message=reason),
                    Action("observe", reason=reason))
        return status, Action("none")
    streaks = {r.rule: status.streaks.get(r.rule, 0) + 1 for r in results if r.verdict == "fail"}
    seen = replace(decided, at_step=status.at_step + 1, checked=now, streaks=streaks)
    breaching = [r for r in results if r.verdict == "fail"]
    if breaching:
        reason = "holding: " + "; ".join(f"{r.rule} {r.message}" for r in breaching)
        return replace(seen, inconclusive=0, message=reason), Action("hold", reason=reason)
    unsure = [r for r in results if r.verdict == "inconclusive"]
    if unsure and not failures and all(r.decision and r.decision.get(PENDING) for r in unsure):
        reason = "holding, evidence coming in: " + "; ".join(f"{r.rule} {r.message}" for r in unsure)
        return replace(seen, inconclusive=0, message=reason), Action("hold", reason=reason)
    if unsure or failures:
        count = status.inconclusive + 1
        why = "; ".join([*(f"{r.rule}: {r.message}" for r in unsure),
                         *(f"cannot read {why_failed}" for _ in [failures] if failures)])
        if count >= spec.max_inconclusive:
            reason = f"paused after {count} inconclusive intervals ({why})"
            return (
                replace(seen, inconclusive=count, stage=Stage.PAUSED, message=reason),
                Action("pause", reason=reason),
            )
        reason = f"holding, inconclusive {count}/{spec.max_inconclusive} ({why})"
        return replace(seen, inconclusive=count, message=reason), Action("hold", reason=reason)
    seen = replace(seen, inconclusive=0)
    if not dwelt:
        reason = f"mirror passed {seen.at_step}/{spec.mirror_intervals} intervals"
        return replace(seen, message=reason), Action("hold", reason=reason)
    return _enter_next(seen, now=now, reason="all rules passed")


def _enter_next(status: CanaryStatus, *, now: float, reason: str) -> tuple[CanaryStatus, Action]:
    index = status.index + 1
    if index >= len(status.steps) or status.steps[index] == 100:
        message = f"{reason}; promoted"
        return (
            replace(status, index=min(index, len(status.steps) - 1), stage=Phase.PROMOTED,
                    at_step=0, message=message, updated=now, since=now, checked=now),
            Action("promote", 100, message),
        )
    step = status.steps[index]
    if step == GATE:
        message = f"{reason}; waiting at a gate for promote or resume"
        return (
            replace(status, index=index, stage=Stage.GATE, at_step=0, message=message,
                    updated=now, since=now, checked=now),
            Action("gate", reason=message),
        )
    message = f"{reason}; step {index + 1}/{len(status.steps)}: {step}% to the candidate"
    moved = replace(status, index=index, stage=Stage.STEP, at_step=0, streaks={},
                    inconclusive=0, message=message, updated=now, since=now, checked=now)
    return moved, Action("advance", int(step), message)


# ----------------------------------------------------------------------------- commands


def pause(status: CanaryStatus, *, now: float, reason: str = "paused") -> CanaryStatus:
    if status.done:
        raise RolloutError(f"cannot pause a canary that is {status.stage.value}")
    return replace(status, stage=Stage.PAUSED, message=reason, updated=now)


def resume(status: CanaryStatus, *, now: float) -> tuple[CanaryStatus, Action]:
    """Go on after a pause (judging the same step again) or pass a gate."""
    if status.stage is Stage.GATE:
        return _enter_next(status, now=now, reason="gate passed")
    if status.stage is not Stage.PAUSED:
        raise RolloutError(f"cannot resume a canary that is {status.stage.value}")
    stage = Stage.MIRROR if status.index < 0 else Stage.STEP
    return (
        replace(status, stage=stage, inconclusive=0, failures=0, at_step=0, message="resumed",
                updated=now, since=now, checked=now, streaks={}),
        Action("hold", reason="resumed"),
    )


def skip(status: CanaryStatus, *, now: float) -> tuple[CanaryStatus, Action]:
    """``promote`` during a canary: skip ahead to the next step (past a gate, too)."""
    if status.done:
        raise RolloutError(f"cannot promote a canary that is {status.stage.value}")
    return _enter_next(status, now=now, reason="promoted by hand")


def finish(status: CanaryStatus, stage: CanaryStage, *, now: float, reason: str) -> CanaryStatus:
    return replace(status, stage=stage, message=reason, updated=now)


# ----------------------------------------------------------------------------- effects
