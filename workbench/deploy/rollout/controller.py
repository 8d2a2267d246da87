"""The canary controller: data plus a pure step, and the loop that carries it out.

:class:`CanaryStatus` is what is persisted (in the deployment's state file, key
``canary``): the step plan, where the rollout stands in it, the rules' failure streaks,
the inconclusive count and the last verdicts. :func:`decide` is the pure step: given the
status, the spec, one interval's rule results and the time, it returns the next status
and at most one :class:`Action`:

- ``advance``: every rule passed (or was skipped) → the next step's weight;
- ``gate``: the next step is a manual gate → wait for ``promote`` or ``resume``;
- ``hold``: a rule is inconclusive, or failing but not for long enough yet;
- ``pause``: ``max_inconclusive`` inconclusive intervals in a row → pause, saying why;
- ``rollback``: a rule failed for its window → all traffic to stable (the reason names
  the rule and its numbers);
- ``promote``: the last step passed → the candidate takes all traffic.

:class:`CanaryController` runs one tick per interval against a :class:`Target` (the
deployment: weights, promote, rollback, and where the status is saved), reading a
:class:`~workbench.deploy.rollout.signals.MetricsSource` and an output check. Only one
controller runs per deployment (:meth:`CanaryController.lock`). Events go to the JSON log
and to hooks (a command gets the event as JSON on stdin; a URL gets it POSTed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from workbench.deploy.rollout.analysis import (
    GATE,
    AnalysisSpec,
    Observation,
    RuleResult,
    Step,
    format_steps,
)
from workbench.errors import RolloutError, StateError

if TYPE_CHECKING:
    from workbench.deploy.rollout.signals import MetricsSource, OutputCheck

__all__ = [
    "Action",
    "CanaryController",
    "CanaryStatus",
    "ControllerProcess",
    "Hooks",
    "Stage",
    "Target",
    "decide",
    "pause",
    "resume",
    "start",
]

log = logging.getLogger(__name__)
events_log = logging.getLogger("workbench.deploy.events")


class Stage(str, Enum):
    """Where the canary stands in its plan."""

    # Mirrored copies of stable's traffic reach the candidate; no user sees its answers.
    MIRROR = "mirror"
    # The candidate takes the current step's weight and is judged every interval.
    STEP = "step"
    # The plan reached a manual gate: waiting for promote or resume.
    GATE = "gate"
    # Paused by a user, or after too many inconclusive intervals; resume to go on.
    PAUSED = "paused"
    # The candidate took all traffic.
    PROMOTED = "promoted"
    # A rule failed, or a user rolled back: all traffic is on stable.
    ROLLED_BACK = "rolled_back"
    # A user aborted the canary.
    ABORTED = "aborted"

    def __str__(self) -> str:
        return self.value


FINAL = frozenset({Stage.PROMOTED, Stage.ROLLED_BACK, Stage.ABORTED})


@dataclass(frozen=True)
class CanaryStatus:
    """The persisted status of one canary (see the module docstring)."""

    steps: tuple[Step, ...]
    index: int = 0  # the step of ``steps`` the canary is at (-1: mirror phase)
    stage: Stage = Stage.STEP
    ticks: int = 0  # intervals judged so far
    at_step: int = 0  # intervals judged at the current step
    inconclusive: int = 0  # inconclusive intervals in a row
    streaks: Mapping[str, int] = field(default_factory=dict)  # rule -> failed intervals in a row
    memory: float | None = None  # the candidate's resident memory at the last tick
    last: tuple[RuleResult, ...] = ()
    message: str = ""
    started: float = 0.0
    updated: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.stage, Stage):
            object.__setattr__(self, "stage", Stage(self.stage))
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
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CanaryStatus:
        memory = data.get("memory")
        return cls(
            steps=tuple(GATE if s == GATE else int(s) for s in data["steps"]),
            index=int(data.get("index", 0)),
            stage=Stage(str(data.get("stage", "step"))),
            ticks=int(data.get("ticks", 0)),
            at_step=int(data.get("at_step", 0)),
            inconclusive=int(data.get("inconclusive", 0)),
            streaks={str(k): int(v) for k, v in dict(data.get("streaks", {})).items()},
            memory=None if memory is None else float(memory),
            last=tuple(RuleResult.from_dict(r) for r in data.get("last", [])),
            message=str(data.get("message", "")),
            started=float(data.get("started", 0.0)),
            updated=float(data.get("updated", 0.0)),
        )


@dataclass(frozen=True)
class Action:
    """What one tick decided; ``kind`` is advance, gate, hold, pause, rollback, promote or none."""

    kind: str
    weight: int | None = None  # the candidate's weight after the action (advance, promote)
    reason: str = ""


def start(spec: AnalysisSpec, *, now: float) -> tuple[CanaryStatus, Action]:
    """The status and first action of a new canary (mirror phase, or the first step)."""
    if spec.mirror:
        status = CanaryStatus(spec.steps, index=-1, stage=Stage.MIRROR, started=now,
                              updated=now, message=f"mirroring {spec.mirror}% of traffic")
        return status, Action("mirror", 0, status.message)
    status = CanaryStatus(spec.steps, index=-1, stage=Stage.STEP, started=now, updated=now)
    return _enter_next(status, now=now, reason="canary started")


def decide(
    status: CanaryStatus, spec: AnalysisSpec, results: tuple[RuleResult, ...], *, now: float
) -> tuple[CanaryStatus, Action]:
    """One tick: judge ``results`` and do at most one transition (see the module docstring)."""
    if status.stage not in (Stage.STEP, Stage.MIRROR):
        return status, Action("none", reason=f"canary is {status.stage.value}")
    streaks = {r.rule: status.streaks.get(r.rule, 0) + 1 for r in results if r.verdict == "fail"}
    seen = replace(
        status, ticks=status.ticks + 1, at_step=status.at_step + 1, streaks=streaks,
        last=results, updated=now,
    )
    failed = [r for r in results if r.verdict == "fail" and r.sustained]
    if failed:
        worst = failed[0]
        reason = f"rule {worst.rule} failed: {worst.message}"
        return replace(seen, stage=Stage.ROLLED_BACK, message=reason), Action("rollback", 0, reason)
    breaching = [r for r in results if r.verdict == "fail"]
    if breaching:
        reason = "holding: " + "; ".join(f"{r.rule} {r.message}" for r in breaching)
        return replace(seen, inconclusive=0, message=reason), Action("hold", reason=reason)
    unsure = [r for r in results if r.verdict == "inconclusive"]
    if unsure:
        count = status.inconclusive + 1
        why = "; ".join(f"{r.rule}: {r.message}" for r in unsure)
        if count >= spec.max_inconclusive:
            reason = f"paused after {count} inconclusive intervals ({why})"
            return (
                replace(seen, inconclusive=count, stage=Stage.PAUSED, message=reason),
                Action("pause", reason=reason),
            )
        reason = f"holding, inconclusive {count}/{spec.max_inconclusive} ({why})"
        return replace(seen, inconclusive=count, message=reason), Action("hold", reason=reason)
    seen = replace(seen, inconclusive=0)
    if status.stage is Stage.MIRROR and seen.at_step < spec.mirror_intervals:
        reason = f"mirror passed {seen.at_step}/{spec.mirror_intervals} intervals"
        return replace(seen, message=reason), Action("hold", reason=reason)
    return _enter_next(seen, now=now, reason="all rules passed")


def _enter_next(status: CanaryStatus, *, now: float, reason: str) -> tuple[CanaryStatus, Action]:
    index = status.index + 1
    if index >= len(status.steps) or status.steps[index] == 100:
        message = f"{reason}; promoted"
        return (
            replace(status, index=min(index, len(status.steps) - 1), stage=Stage.PROMOTED,
                    at_step=0, message=message, updated=now),
            Action("promote", 100, message),
        )
    step = status.steps[index]
    if step == GATE:
        message = f"{reason}; waiting at a gate for promote or resume"
        return (
            replace(status, index=index, stage=Stage.GATE, at_step=0, message=message,
                    updated=now),
            Action("gate", reason=message),
        )
    message = f"{reason}; step {index + 1}/{len(status.steps)}: {step}% to the candidate"
    moved = replace(status, index=index, stage=Stage.STEP, at_step=0, streaks={},
                    message=message, updated=now)
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
        replace(status, stage=stage, inconclusive=0, at_step=0, message="resumed", updated=now),
        Action("hold", reason="resumed"),
    )


def skip(status: CanaryStatus, *, now: float) -> tuple[CanaryStatus, Action]:
    """``promote`` during a canary: skip ahead to the next step (past a gate, too)."""
    if status.done:
        raise RolloutError(f"cannot promote a canary that is {status.stage.value}")
    return _enter_next(status, now=now, reason="promoted by hand")


def finish(status: CanaryStatus, stage: Stage, *, now: float, reason: str) -> CanaryStatus:
    return replace(status, stage=stage, message=reason, updated=now)


# ----------------------------------------------------------------------------- effects


class Target(Protocol):
    """What the controller changes: the deployment."""

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
        """Persist ``status``, with a history entry for ``action`` (its verdicts)."""
        ...


@dataclass(frozen=True)
class Hooks:
    """Where events go besides the log: commands (event JSON on stdin) and URLs (POST)."""

    targets: tuple[str, ...] = ()
    timeout: float = 5.0

    def send(self, event: Mapping[str, Any]) -> None:
        body = json.dumps(event, sort_keys=True)
        events_log.info(body)
        for target in self.targets:
            try:
                if target.startswith(("http://", "https://")):
                    import httpx

                    httpx.post(target, content=body, timeout=self.timeout,
                               headers={"content-type": "application/json"})
                else:
                    subprocess.run(  # the user's own hook command
                        target, shell=True, input=body, text=True, timeout=self.timeout,
                        check=False, capture_output=True,
                    )
            except Exception as exc:  # a broken hook must not stop a rollback
                log.warning("event hook %s failed: %s", target, exc)


NOTIFY = frozenset({"advance", "gate", "pause", "promote", "rollback", "mirror", "resume", "abort"})


class CanaryController:
    """Runs a canary: one :meth:`tick` per interval until it is promoted or rolled back."""

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
        self.hooks = hooks or Hooks(spec.hooks)
        self.clock = clock
        self.listeners: list[Callable[[CanaryStatus, Action], None]] = []

    def __repr__(self) -> str:
        return f"<CanaryController {self.name} {self.candidate}>"

    @property
    def status(self) -> CanaryStatus | None:
        return self.target.load()

    def begin(self) -> CanaryStatus:
        """Start the plan (mirror or first weight); the candidate must be verified."""
        status, action = start(self.spec, now=self.clock())
        return self._carry_out(status, action)

    def tick(self) -> CanaryStatus:
        """Read the sources, judge the rules, do at most one transition, persist."""
        status = self.target.load()
        if status is None:
            raise RolloutError(f"{self.name}: no canary was started")
        if status.stage not in (Stage.STEP, Stage.MIRROR):
            return status
        window = self.source.window(self.candidate, self.spec.interval)
        stable_window = self.source.window(self.stable, self.spec.interval)
        check = self.output() if self.output is not None else None
        seen = Observation(
            interval=self.spec.interval, candidate=window, stable=stable_window, output=check,
            previous_memory=status.memory, streaks=status.streaks,
        )
        results = self.spec.judge(seen)
        after, action = decide(status, self.spec, results, now=self.clock())
        after = replace(after, memory=window.memory_bytes)
        return self._carry_out(after, action)

    def command(self, verb: str, reason: str = "") -> CanaryStatus:
        """``pause``, ``resume``, ``promote`` (skip ahead), ``abort`` or ``rollback``."""
        status = self.target.load()
        if status is None:
            raise RolloutError(f"{self.name}: no canary is running")
        now = self.clock()
        if verb == "pause":
            return self._carry_out(pause(status, now=now, reason=reason or "paused by hand"),
                                   Action("pause", reason=reason or "paused by hand"))
        if verb == "resume":
            after, action = resume(status, now=now)
            return self._carry_out(after, replace(action, kind="resume") if
                                   action.kind == "hold" else action)
        if verb == "promote":
            return self._carry_out(*skip(status, now=now))
        if verb in ("abort", "rollback"):
            if status.done:
                raise RolloutError(f"cannot {verb} a canary that is {status.stage.value}")
            stage = Stage.ABORTED if verb == "abort" else Stage.ROLLED_BACK
            why = reason or f"{verb} by hand"
            return self._carry_out(finish(status, stage, now=now, reason=why),
                                   Action(verb, 0, why))
        raise RolloutError(f"unknown canary command {verb!r}")

    def run(self, stop: threading.Event | None = None, *, first_delay: float | None = None) -> CanaryStatus:
        """Tick every ``interval`` until the canary is done or ``stop`` is set."""
        stop = stop or threading.Event()
        stop.wait(self.spec.interval if first_delay is None else first_delay)
        while not stop.is_set():
            began = time.monotonic()
            status = self.tick()
            if status.done:
                return status
            stop.wait(max(0.0, self.spec.interval - (time.monotonic() - began)))
        final = self.target.load()
        if final is None:
            raise RolloutError(f"{self.name}: the canary status was lost")
        return final

    # -- internals -----------------------------------------------------------------------

    def _carry_out(self, status: CanaryStatus, action: Action) -> CanaryStatus:
        """Traffic first (one router change), then persist, then the event."""
        if action.kind == "mirror":
            self.target.mirror(self.spec.mirror, action.reason)
        elif action.kind == "advance" and action.weight is not None:
            self.target.set_weight(action.weight, action.reason)
        elif action.kind == "promote":
            self.target.promote(action.reason)
        elif action.kind in ("rollback", "abort"):
            self.target.rollback(action.reason)
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


SPAWNED_PID = "controller.pid"  # written by whoever starts a detached controller


@contextlib.contextmanager
def controller_lock(directory: Path) -> Iterator[Path]:
    """Hold the deployment's controller lock (StateError when another controller runs).

    The lock file records the pid of the holder, for ``deploy status``.
    """
    import fcntl

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "controller.lock"
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateError(
                f"a canary controller already runs for this deployment (pid {_pid(path)})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield path
    finally:
        handle.close()


def controller_running(directory: Path) -> int | None:
    """The pid of the controller that holds the lock, or None when none runs."""
    process = controller_process(directory)
    return process.pid if process.alive else None


@dataclass(frozen=True)
class ControllerProcess:
    """A deployment's canary controller: the pid of the latest one, and whether it runs."""

    pid: int | None  # None: no controller ever started here
    alive: bool  # it holds the controller lock

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "alive": self.alive}


def controller_process(directory: Path) -> ControllerProcess:
    """The deployment's controller as seen now.

    The lock file names its latest holder; a detached start also writes
    ``controller.pid``, which names a controller that has not taken the lock yet (or died
    before it could): the newer of the two files is the latest controller.
    """
    import fcntl

    path = directory / "controller.lock"
    if path.exists():
        with path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return ControllerProcess(_pid(path), True)
            fcntl.flock(handle, fcntl.LOCK_UN)
    candidates = [p for p in (path, directory / SPAWNED_PID) if p.exists()]
    latest = max(candidates, key=lambda p: p.stat().st_mtime_ns, default=None)
    return ControllerProcess(None if latest is None else _pid(latest), False)


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None
