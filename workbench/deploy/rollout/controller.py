"""The canary controller: data plus a pure step, and the loop that carries it out.

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

:class:`CanaryController` looks every ``spec.look`` seconds (at most one) against a
:class:`Target` (the deployment: weights, promote, rollback, and where the status is
saved), reading a :class:`~workbench.deploy.rollout.signals.MetricsSource` and, once an
interval, an output check. A source that fails is inconclusive, never fatal. Only one
controller runs per deployment (:mod:`~workbench.deploy.rollout.controller_process`). A
look reads and judges without a lock, then carries out its decision in one locked
transaction that checks the status's revision first: a command
(:meth:`CanaryController.command`, from any process, itself one locked read-decide-save)
that came in between wins, and the look's decision is dropped, so no step is lost or
judged on the window of the step before. Events go to the JSON log and to hooks
(:mod:`workbench.deploy.rollout.hooks`), delivered off the controller's path.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from workbench.deploy.rollout.analysis import (
    GATE,
    PENDING,
    AnalysisSpec,
    Observation,
    RuleResult,
    Step,
    format_steps,
)
from workbench.deploy.rollout.background import BackgroundRead
from workbench.deploy.rollout.hooks import Hooks
from workbench.deploy.rollout.phases import Phase
from workbench.errors import RolloutError

if TYPE_CHECKING:
    from workbench.deploy.rollout.signals import MetricsSource, OutputCheck

__all__ = [
    "Action",
    "CanaryController",
    "CanaryStage",
    "CanaryStatus",
    "Hooks",
    "Stage",
    "Target",
    "decide",
    "pause",
    "resume",
    "start",
]

log = logging.getLogger(__name__)


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


class Target(Protocol):
    """What the controller changes: the deployment.

    Everything the controller decides on what it read is carried out inside
    :meth:`locked`: read again, check the revision, change the traffic, save — one
    transaction, so a command from another process and a tick never act on the same
    status twice. Calls within it take no lock of their own (the target's lock is
    re-entrant); nothing slow (a metrics read, a hook) happens while it is held.
    """

    def locked(self) -> contextlib.AbstractContextManager[object]:
        """Hold the deployment's lock (re-entrant within a thread)."""
        ...

    def set_weight(self, percent: int, reason: str) -> None: ...

    def mirror(self, percent: int, reason: str) -> None:
        """Copy ``percent`` of stable's requests to the candidate (answers discarded)."""
        ...

    def promote(self, reason: str) -> None: ...

    def rollback(self, reason: str) -> None: ...

    def load(self) -> CanaryStatus | None:
        """The persisted status (None when no canary was started)."""
        ...

    def save(self, status: CanaryStatus, action: Action) -> None:
        """Persist ``status``, with a history entry for ``action`` (its verdicts); a
        :class:`~workbench.errors.CanaryConflictError` when the persisted status is not the
        revision before ``status.revision``."""
        ...


NOTIFY = frozenset({"advance", "gate", "pause", "promote", "rollback", "mirror", "resume", "abort"})
#: What a rule reads when it has no ``reads`` of its own: the replayed output check.
OUTPUT = "output"


class CanaryController:
    """Runs a canary: one :meth:`tick` per look (``spec.look`` seconds) until it is done."""

    def __init__(
        self,
        name: str,
        target: Target,
        spec: AnalysisSpec,
        source: MetricsSource,
        *,
        stable: str,
        candidate: str,
        output: Callable[[], OutputCheck | None] | None = None,
        hooks: Hooks | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.target = target
        self.spec = spec
        self.source = source
        self.stable = stable
        self.candidate = candidate
        self.output = output
        self.hooks = hooks or Hooks(spec.hooks, confirm=spec.confirm, timeout=spec.hook_timeout)
        self.clock = clock
        self.listeners: list[Callable[[CanaryStatus, Action], None]] = []
        self._replay = BackgroundRead(output or (lambda: None))
        self._moved: float | None = None  # time.monotonic() when traffic last moved

    def __repr__(self) -> str:
        return f"<CanaryController {self.name} {self.candidate}>"

    @property
    def status(self) -> CanaryStatus | None:
        return self.target.load()

    def begin(self) -> CanaryStatus:
        """Start the plan (mirror or first weight); the candidate must be verified."""
        status, action = start(self.spec, now=self.clock())
        return self._carry_out(status, action, on=None)

    def tick(self) -> CanaryStatus:
        """One look: read the sources, judge the rules, do at most one transition, persist.

        A source that cannot be read makes the rules reading it inconclusive, with the
        reason; it never ends the controller. The output check (a replay) and the rules
        that are not sequential are judged only when an interval ends; between, their
        last results stand. The check runs on a thread of its own (the looks go on), and
        the interval ends at the first look that finds it done.
        """
        status = self.target.load()
        if status is None:
            raise RolloutError(f"{self.name}: no canary was started")
        if status.stage not in (Stage.STEP, Stage.MIRROR):
            return status
        now = self.clock()
        spec = self.spec
        due = now - (status.checked or status.since) >= spec.interval - 1e-6
        span = max(now - (status.since or now), spec.look, 1e-3)  # the step so far
        failures: dict[str, str] = {}
        window, stable_window = self._windows(span, failures)
        check, waiting = None, False
        if due and self.output is not None:
            done, check, error = self._replay.poll(status.since, wait=spec.look)
            due, waiting = done, not done
            if error is not None:
                failures[OUTPUT] = str(error) or type(error).__name__
        earlier = {r.rule: r for r in status.last}
        results: list[RuleResult] = []
        seen = None
        if window is not None:
            seen = Observation(
                interval=spec.interval, candidate=window, stable=stable_window, output=check,
                previous_memory=status.memory, streaks=status.streaks, alpha=spec.rule_alpha,
                due=due,
            )
        for rule in spec.rules:
            reads = getattr(rule, "reads", OUTPUT)
            if not due and not getattr(rule, "every_scrape", False):
                if waiting:  # the interval ends once the output check is in
                    results.append(_unjudged(rule.name, "output check under way"))
                elif rule.name in earlier:  # judged at the end of the last interval
                    results.append(earlier[rule.name])
                else:
                    results.append(_unjudged(rule.name))
                continue
            problem = failures.get(reads) or (
                failures.get("stable metrics") if getattr(rule, "needs_stable", False) else None)
            if problem is not None or seen is None:
                why = problem or failures.get("metrics", "")
                results.append(RuleResult(rule.name, "inconclusive", None, 0.0,
                                          f"cannot read {reads}: {why}"))
                continue
            results.append(rule.judge(seen))
        after, action = decide(status, spec, tuple(results), now=now, failures=failures, due=due)
        if due and window is not None and action.kind != "none":
            after = replace(after, memory=window.memory_bytes)
        if action.kind == "promote" and self.hooks.gates:
            after, action = self._confirm(status, after, action)
        if action.kind == "none":
            return after
        return self._carry_out(after, action, on=status)

    def command(self, verb: str, reason: str = "") -> CanaryStatus:
        """``pause``, ``resume``, ``promote`` (skip ahead), ``abort`` or ``rollback``.

        Read, decide and carry out under the deployment's lock, whatever the controller
        is doing: two commands at once act one after the other (two ``promote``: two
        steps), and a tick that read the status before the command drops its decision.
        ``abort`` and ``rollback`` move all traffic to stable here, not in the controller;
        the controller sees the canary ended at its next look.
        """
        with self.target.locked():
            status = self.target.load()
            if status is None:
                raise RolloutError(f"{self.name}: no canary is running")
            after, action = self._command(status, verb, reason, now=self.clock())
            return self._carry_out(after, action, on=status)

    def _command(
        self, status: CanaryStatus, verb: str, reason: str, *, now: float
    ) -> tuple[CanaryStatus, Action]:
        if verb == "pause":
            why = reason or "paused by hand"
            return pause(status, now=now, reason=why), Action("pause", reason=why)
        if verb == "resume":
            after, action = resume(status, now=now)
            return after, replace(action, kind="resume") if action.kind == "hold" else action
        if verb == "promote":
            return skip(status, now=now)
        if verb in ("abort", "rollback"):
            if status.done:
                raise RolloutError(f"cannot {verb} a canary that is {status.stage.value}")
            stage: CanaryStage = Stage.ABORTED if verb == "abort" else Phase.ROLLED_BACK
            why = reason or f"{verb} by hand"
            return finish(status, stage, now=now, reason=why), Action(verb, 0, why)
        raise RolloutError(f"unknown canary command {verb!r}")

    def run(self, stop: threading.Event | None = None, *, first_delay: float | None = None) -> CanaryStatus:
        """Look every ``spec.look`` seconds until the canary is done or ``stop`` is set;
        then give the queued hook deliveries a last deadline to go out. The first look
        comes ``first_delay`` seconds from now (default: a look after the traffic last
        moved, e.g. by :meth:`begin`, however long saving it took)."""
        stop = stop or threading.Event()
        look = self.spec.look
        if first_delay is None:  # a look after traffic moved, not after the move was saved
            since = time.monotonic() - self._moved if self._moved is not None else 0.0
            first_delay = max(0.0, look - since)
        try:
            stop.wait(first_delay)
            while not stop.is_set():
                began = time.monotonic()
                status = self.tick()
                if status.done:
                    return status
                stop.wait(max(0.0, look - (time.monotonic() - began)))
            final = self.target.load()
            if final is None:
                raise RolloutError(f"{self.name}: the canary status was lost")
            return final
        finally:
            self.hooks.drain(self.hooks.timeout + 1.0)
            self.hooks.close()

    # -- internals -----------------------------------------------------------------------

    def _windows(self, span: float, failures: dict[str, str]) -> tuple[Any, Any]:
        """The candidate's and stable's windows, read at once: each is a round trip to
        busy instances (or a Prometheus), and a broken candidate is judged on the first."""
        stable: dict[str, Any] = {}
        stable_failures: dict[str, str] = {}

        def read_stable() -> None:
            stable["window"] = self._read("stable metrics", stable_failures,
                                          lambda: self.source.window(self.stable, span))

        thread = threading.Thread(target=read_stable, daemon=True, name="canary-stable-read")
        thread.start()
        window = self._read("metrics", failures, lambda: self.source.window(self.candidate, span))
        thread.join()
        failures.update(stable_failures)
        return window, stable.get("window")

    def _read(self, source: str, failures: dict[str, str], read: Callable[[], Any]) -> Any:
        """``read()``, or None with the reason in ``failures`` when it raised."""
        try:
            return read()
        except Exception as exc:  # a source error is inconclusive, never fatal
            why = str(exc) or type(exc).__name__
            log.warning("%s: cannot read %s: %s", self.name, source, why)
            failures[source] = why
            return None

    def _confirm(
        self, before: CanaryStatus, after: CanaryStatus, action: Action
    ) -> tuple[CanaryStatus, Action]:
        """Ask the promotion gates (bounded); not confirmed: pause at the last step."""
        ok, why = self.hooks.confirm(event(self.name, after, replace(action, kind="confirm")))
        if ok:
            return after, action
        reason = f"promotion not confirmed: {why}"
        paused = replace(after, index=before.index, stage=Stage.PAUSED, message=reason,
                         since=before.since, checked=before.checked)
        return paused, Action("pause", reason=reason)

    def _carry_out(
        self, status: CanaryStatus, action: Action, *, on: CanaryStatus | None
    ) -> CanaryStatus:
        """Under the lock: check that the persisted status is still ``on`` (the one the
        decision was made on; None: a new canary), then traffic first (one router change),
        then persist. Then, the lock released, the event. A decision made on a status
        that changed meanwhile (a command came first) is dropped: the current status is
        returned and the next look judges afresh."""
        with self.target.locked():
            current = self.target.load()
            if on is not None and (current is None or current.revision != on.revision):
                log.info("%s: the canary changed while this look judged it (revision %s, "
                         "now %s); %s dropped", self.name, on.revision,
                         None if current is None else current.revision, action.kind)
                if current is None:
                    raise RolloutError(f"{self.name}: the canary status was lost")
                return current
            status = replace(status, revision=(0 if current is None else current.revision) + 1)
            if action.kind == "mirror":
                self.target.mirror(self.spec.mirror, action.reason)
            elif action.kind == "advance" and action.weight is not None:
                self.target.set_weight(action.weight, action.reason)
            elif action.kind == "promote":
                self.target.promote(action.reason)
            elif action.kind in ("rollback", "abort"):
                self.target.rollback(action.reason)
            if action.kind in ("mirror", "advance"):
                self._moved = time.monotonic()
            self.target.save(status, action)
        if action.kind in NOTIFY:
            self.hooks.send(event(self.name, status, action))
        for listener in list(self.listeners):
            try:
                listener(status, action)
            except Exception:
                log.exception("canary listener %r failed", listener)
        return status


def event(name: str, status: CanaryStatus, action: Action) -> dict[str, Any]:
    """The JSON event of ``action`` (what hooks receive)."""
    return {
        "deployment": name,
        "event": action.kind,
        "stage": status.stage.value,
        "step": status.index,
        "steps": format_steps(status.steps),
        "weight": action.weight if action.weight is not None else status.weight,
        "message": action.reason or status.message,
        "results": [r.to_dict() for r in status.last],
        "time": status.updated,
    }


def _unjudged(rule: str, why: str = "not judged yet this step") -> RuleResult:
    return RuleResult(rule, "inconclusive", None, 0.0, why)
