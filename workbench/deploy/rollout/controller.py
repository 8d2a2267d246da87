"""The canary controller: the loop that carries out :mod:`~workbench.deploy.rollout.decisions`.

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
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from workbench.deploy.rollout.analysis import AnalysisSpec, Observation, RuleResult, format_steps
from workbench.deploy.rollout.background import BackgroundRead
from workbench.deploy.rollout.decisions import (
    Action,
    CanaryStage,
    CanaryStatus,
    Stage,
    decide,
    finish,
    pause,
    resume,
    skip,
    start,
)
from workbench.deploy.rollout.evidence import AgreementTally
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
        self._early: float | None = None  # the step whose early output check is in
        self._tally = AgreementTally()  # the step's distinct replayed rows
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
        reason; it never ends the controller. The output check (a replay) runs on a
        thread of its own (the looks go on): once as the step begins and again when an
        interval ends, which it does at the first look that finds that check done. The
        rules that are not sequential are judged when an interval ends; between, their
        last results stand — except that a rule judging the replay (``early``) may fail
        the candidate at the look an early check comes in, on its sequential test over
        the step's distinct rows (:class:`~.evidence.AgreementTally`).
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
        if self.output is not None and (due or self._early != status.since):
            done, check, error = self._replay.poll(status.since, wait=spec.look if due else 0.0)
            if due:
                due, waiting = done, not done
            elif done:
                self._early = status.since  # one early check per step
            if error is not None:
                failures[OUTPUT] = str(error) or type(error).__name__
            elif check is not None:
                check = self._tally.add(status.since, check)
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
                early = rule.judge(seen) if (seen is not None and check is not None
                                             and getattr(rule, "early", False)) else None
                if early is not None and early.verdict == "fail" and early.sustained:
                    results.append(early)  # the evidence against it is in: no need to wait
                elif waiting:  # the interval ends once the output check is in
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
