"""A canary of a deployment: the controller wired to the deployment, its instances and state.

:class:`DeploymentTarget` lets the :class:`~workbench.deploy.rollout.controller.CanaryController`
act on a :class:`~workbench.deploy.deployment.Deployment` (weights, promote, rollback
through the router; the canary status and each tick's verdicts in the state file, key
``canary``, and its history). :func:`controller` builds one from the persisted spec, so
a CLI command in another shell (``deploy pause``, ``resume``, ``promote``) acts on the
same canary a detached controller or a notebook thread runs. :func:`run` starts a canary
on a verified candidate and ticks it to the end. :func:`steer` is where a person's
promote, rollback or abort is sent to the canary's controller while a canary runs, for
every face.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.deploy import prepared
from workbench.deploy.canary_state import CanaryState
from workbench.deploy.deployment import resolve_version
from workbench.deploy.history import face
from workbench.deploy.nginx import NginxRouter
from workbench.deploy.rollout import phases as flow
from workbench.deploy.rollout.analysis import AnalysisSpec
from workbench.deploy.rollout.controller import (
    Action,
    CanaryController,
    CanaryStatus,
)
from workbench.deploy.rollout.controller_process import controller_lock, controller_running
from workbench.deploy.rollout.hooks import Hooks
from workbench.deploy.rollout.phases import Phase
from workbench.deploy.rollout.segments import serve_args as segment_serve_args
from workbench.deploy.rollout.segments import uncounted
from workbench.deploy.tables import routing_table
from workbench.deploy.verification import is_pipeline
from workbench.errors import (
    CanaryConflictError,
    DeployError,
    DeployValueError,
    RolloutError,
    WorkbenchError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from workbench._types import StrPath
    from workbench.deploy.deployment import Deployment
    from workbench.deploy.rollout.signals import MetricsSource, OutputCheck
    from workbench.deploy.routing import RoutingTable
    from workbench.deploy.state import DeploymentState

__all__ = [
    "DeploymentTarget",
    "Steered",
    "active",
    "check_files",
    "check_segments",
    "command",
    "controller",
    "remember",
    "run",
    "running_pid",
    "steer",
    "update_spec",
]

log = logging.getLogger(__name__)


class DeploymentTarget:
    """The deployment seen by the controller (see the module docstring)."""

    def __init__(self, deployment: Deployment, spec: AnalysisSpec, source: str = "scrape") -> None:
        self.deployment = deployment
        self.spec = spec
        self.source = source
        #: who acts through this target: the controller's loop, or a face's command
        self.by = face()
        self._action: tuple[str, float] | None = None

    def set_weight(self, percent: int, reason: str) -> None:
        self._acted("weight")
        self.deployment.weight(percent, reason)

    def mirror(self, percent: int, reason: str) -> None:
        """The candidate at 0% with a mirror share: one router change, undone by the
        first weight (the deployment's routing table has no mirror)."""
        state = self.deployment.state
        if state.rollout.phase is not Phase.VERIFIED:
            raise RolloutError(f"{state.name}: mirroring needs a verified candidate")
        self.deployment.context.router(state).apply(routing_table(state).with_mirror(percent))

    def promote(self, reason: str) -> None:
        self._acted("promote")
        self.deployment.promote(reason)

    def rollback(self, reason: str) -> None:
        """The router switch first (to the configuration the deployment keeps checked,
        :mod:`workbench.deploy.prepared`, when it is still the one to install), then the
        deployment's rollback, which finds the router switched, records it and stops the
        candidate."""
        if self.deployment.phase in (Phase.VERIFIED, Phase.CANARY, Phase.PROMOTED):
            self._acted("rollback")
            found = _rollback_table(self.deployment)
            if found is not None:
                prepared.switch(*found)
            self.deployment.rollback(reason)

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """The deployment's state lock; the deployment's actions and :meth:`save` join it."""
        return self.deployment.context.store.lock(self.deployment.name)

    def load(self) -> CanaryStatus | None:
        canary = self.deployment.state.canary
        return None if canary is None else canary.status

    def save(self, status: CanaryStatus, action: Action) -> None:
        """Persist ``status`` (CanaryConflictError unless the persisted status is the
        revision before it); one history entry per action: the verdicts join the entry the
        deployment recorded for a weight, promote or rollback; a gate, pause, resume or
        mirror gets one of its own; a hold gets none (its verdicts are in the status)."""
        store = self.deployment.context.store
        acted, self._action = self._action, None
        with store.transaction(self.deployment.name) as txn:
            state = txn.state
            before = state.canary.status if state.canary is not None else None
            if before is not None and before.revision != status.revision - 1:
                raise CanaryConflictError(
                    f"{state.name}: the canary changed meanwhile (revision {before.revision}, "
                    f"this change was made on {status.revision - 1})"
                )
            kept = state.canary or CanaryState()
            canary = replace(kept, status=status, spec=self.spec.to_dict(), source=self.source)
            state = replace(state, canary=canary)
            # a hold, or a look with only a source failure to count: status only
            if action.kind in ("hold", "none", "observe"):
                txn.save(state)
                return
            details: dict[str, Any] = {
                "canary": action.kind,
                "stage": status.stage.value,
                "step": status.index,
                "steps": len(status.steps),
                "weight": status.weight,
                "results": [r.to_dict() for r in status.last],
            }
            ruled = action.kind == "rollback" and any(r.sustained for r in status.last)
            outcome = "failed" if ruled else None
            reason = action.reason or status.message
            if acted is not None:
                name, since = acted
                state = state.amend(name, since=since, details=details, by=self.by,
                                    outcome=outcome, reason=reason)
            else:
                state = state.record(action.kind, outcome or "ok", reason, details=details,
                                     by=self.by)
            txn.save(state)

    def _acted(self, action: str) -> None:
        """Remember that this tick changed the deployment (which records ``action``)."""
        self._action = (action, time.time() - 1.0)


def _rollback_table(deployment: Deployment) -> tuple[NginxRouter, RoutingTable] | None:
    """The nginx router of ``deployment`` and the table a rollback now installs (None: no
    nginx router, or no rollback possible)."""
    state = deployment.state
    router = deployment.context.router(state)
    if not isinstance(router, NginxRouter):
        return None
    try:
        rollout = flow.rollback(state.rollout, now=time.time())
    except RolloutError:
        return None
    return router, routing_table(replace(state, rollout=rollout))


def active(deployment: Deployment) -> bool:
    """Whether ``deployment`` has a canary that is not done yet."""
    canary = deployment.state.canary
    return canary is not None and canary.active


#: What a person's promote, rollback or abort does during a canary (see :func:`steer`).
STEERED = ("promote", "rollback", "abort")
#: The reason recorded when a person gave none.
_BY_HAND = {"rollback": "rolled back by hand", "abort": "aborted by hand"}


@dataclass(frozen=True)
class Steered:
    """What :func:`steer` did: the deployment's state after it, and the canary's status
    when a canary took the command (None: the deployment acted on its own)."""

    state: DeploymentState
    canary: CanaryStatus | None = None


def steer(deployment: Deployment, verb: str, reason: str = "") -> Steered:
    """A person's ``promote``, ``rollback`` or ``abort``, from any face.

    During a canary it goes to the canary's controller: ``promote`` skips ahead a step
    (past a gate, too), ``rollback`` and ``abort`` move all traffic to stable at once and
    end the canary (the running controller sees it at its next look). Otherwise it is the
    deployment's own action. Decided and done under the deployment's lock, so the canary
    cannot end between the look and the act.
    """
    if verb not in STEERED:
        raise RolloutError(f"unknown command {verb!r}; choose from {', '.join(STEERED)}")
    with deployment.context.store.lock(deployment.name):
        if active(deployment):
            status = controller(deployment).command(verb, reason or _BY_HAND.get(verb, ""))
            return Steered(deployment.state, status)
        act: Callable[[str], DeploymentState] = getattr(deployment, verb)
        return Steered(act(reason))


def command(deployment: Deployment, verb: str, reason: str = "") -> CanaryStatus:
    """``pause``, ``resume``, ``promote`` (skip ahead), ``abort`` or ``rollback`` the
    deployment's canary, under its lock, whichever process runs the controller."""
    return controller(deployment).command(verb, reason)


def remember(deployment: Deployment, spec: AnalysisSpec, prometheus: str | None = None) -> None:
    """Persist how the deployment's next canary is judged (its controller, wherever it
    runs, reads it back); the status of an earlier canary is dropped."""
    store = deployment.context.store
    with store.transaction(deployment.name) as txn:
        canary = CanaryState(spec=spec.to_dict(), prometheus=prometheus,
                             source="prometheus" if prometheus else "scrape")
        txn.save(replace(txn.state, canary=canary))


def running_pid(deployment: Deployment) -> int | None:
    """The pid of the controller running this deployment's canary, if one runs."""
    return controller_running(deployment.context.store.directory(deployment.name))


def controller(
    deployment: Deployment,
    spec: AnalysisSpec | None = None,
    *,
    prometheus: str | None = None,
    by: str | None = None,
) -> CanaryController:
    """A controller for ``deployment``'s canary: ``spec`` or the persisted one; ``by`` is
    who its actions are recorded as (default: this process's face)."""
    state = deployment.state
    canary = state.canary or CanaryState()
    if spec is None:
        spec = AnalysisSpec.from_dict(canary.spec, source="persisted canary spec")
    prometheus = prometheus or canary.prometheus
    stable, candidate = state.rollout.stable, state.rollout.candidate

    def urls() -> dict[str, list[str]]:
        now = deployment.state
        return {color: group.urls for color, group in now.instances.items()}  # every instance

    source: MetricsSource
    if prometheus:
        from workbench.deploy.rollout.prometheus import PrometheusSource, instance_selector

        source = PrometheusSource(
            prometheus, lambda: {c: instance_selector(u) for c, u in urls().items()},
            segments=any(getattr(rule, "segment_by", None) for rule in spec.rules),
        )
    else:
        from workbench.deploy.rollout.scrape import ScrapeSource

        source = ScrapeSource(urls)
    labelled = spec.labelled
    token = deployment.admin_token
    fallback: dict[str, Any] = {}  # stable's manifest sample, read once (stable does not change)
    pipeline = is_pipeline(state.repo, state.model, state.stable_version)
    # the keys agreement is judged per segment by: each segment's sample replayed as well
    segmented = tuple(dict.fromkeys(
        str(getattr(rule, "segment_by", "")) for rule in spec.rules
        if getattr(rule, "reads", None) == "output" and getattr(rule, "segment_by", None)))

    def output() -> OutputCheck | None:
        """Replay the labelled set if one is given, else the stable instance's reservoir of
        recent request inputs, else stable's manifest sample, to both colours (an OCR
        pipeline: its images, scored by pages, :mod:`~workbench.deploy.rollout.pages`)."""
        from workbench.deploy.rollout.replay import output_check, with_segments

        now = deployment.state
        if stable not in now.instances or candidate not in now.instances:
            return None
        if pipeline:
            from workbench.deploy.rollout.pages import ocr_check  # numpy

            return ocr_check(now.instances[stable].url, now.instances[candidate].url, now.model,
                             labelled=labelled, admin_token=token)
        if not labelled and "sample" not in fallback:
            fallback["sample"] = None
            with contextlib.suppress(WorkbenchError, OSError):
                from workbench.model.repository import ModelRepository

                fallback["sample"] = ModelRepository(now.repo).sample(
                    now.model, now.instances[stable].version)
        sample = fallback.get("sample")
        stable_url, candidate_url = now.instances[stable].url, now.instances[candidate].url
        check = output_check(stable_url, candidate_url, now.model, labelled=labelled,
                             admin_token=token, sample=sample)
        if labelled or token is None or not segmented:
            return check
        return with_segments(check, stable_url, candidate_url, now.model, token, segmented)

    target = DeploymentTarget(deployment, spec, "prometheus" if prometheus else "scrape")
    target.by = by or target.by
    return CanaryController(deployment.name, target, spec, source, stable=stable,
                            candidate=candidate, output=output,
                            hooks=Hooks(spec.hooks, confirm=spec.confirm,
                                        timeout=spec.hook_timeout))


def serve_args(spec: AnalysisSpec | None) -> tuple[str, ...]:
    """The ``workbench serve`` options a candidate needs for ``spec`` (per-segment
    counting for rules judged per segment); every face passes them to ``update``."""
    return () if spec is None else tuple(segment_serve_args(spec.rules))


def update_spec(
    strategy: str,
    *,
    analysis: StrPath | None = None,
    steps: str | None = None,
    interval: str | None = None,
    mirror: int | None = None,
    synthetic: float | None = None,
    labelled: StrPath | None = None,
) -> AnalysisSpec | None:
    """The canary spec of ``deploy update``'s options, for every face: ``analysis`` (a
    .toml or .yaml file) or the defaults, with the flags given on top; None for
    blue-green. DeployValueError, one sentence, on an unknown strategy or on ``labelled``
    without a canary (only a canary's accuracy rule judges it). The files the spec names
    are read later, against the candidate, by :func:`check_files`."""
    if strategy == "canary":
        spec = AnalysisSpec.load(Path(analysis)) if analysis is not None else AnalysisSpec()
        return spec.with_flags(steps=steps, interval=interval, mirror=mirror, synthetic=synthetic,
                               labelled=None if labelled is None else str(labelled))
    if strategy != "blue-green":
        raise DeployValueError(f"--strategy is blue-green or canary, not {strategy!r}")
    if labelled is not None:
        raise DeployValueError("--labelled is judged by a canary's accuracy rule: add --strategy canary")
    return None


def check_files(deployment: Deployment, spec: AnalysisSpec, version: str) -> AnalysisSpec:
    """Read and validate every file ``spec`` names against ``version``'s inputs before any
    traffic moves; ``spec`` back with their paths made absolute (a detached controller or
    a later restore may run elsewhere). Raises DeployError, one sentence, on the first bad one.
    Stable's instances are checked first (:func:`check_segments`): every face calls this
    before a canary starts.
    """
    check_segments(deployment.state, spec)
    if not spec.labelled:
        return spec
    from workbench.deploy.rollout.pages import load_images  # numpy
    from workbench.deploy.rollout.replay import load_labelled
    from workbench.model.repository import ModelRepository

    labelled = Path(spec.labelled).expanduser().resolve()
    state = deployment.state
    resolved = resolve_version(state.repo, state.model, version)
    if is_pipeline(state.repo, state.model, resolved):
        load_images(labelled, labelled=True)  # images and their texts, read and checked
        return replace(spec, labelled=str(labelled))
    if labelled.is_dir():
        raise DeployError(f"the labelled set {labelled} is a directory of images: that is for an "
                          f"OCR pipeline, and {state.model} {resolved} is a model (give an .npz)")
    inputs, _ = load_labelled(labelled)
    try:
        names = [t.name for t in ModelRepository(state.repo).manifest(state.model, resolved).inputs]
    except WorkbenchError as exc:
        raise DeployError(f"cannot check the labelled set {labelled}: {exc}") from exc
    missing = [name for name in names if name not in inputs]
    if missing:
        raise DeployError(f"the labelled set {labelled} lacks the inputs {missing} of "
                          f"{state.model} {resolved} (it has {sorted(inputs)})")
    return replace(spec, labelled=str(labelled))


def check_segments(state: DeploymentState, spec: AnalysisSpec) -> None:
    """Refuse, in one sentence before anything starts, a canary whose rules compare each
    segment with stable's (``relative_latency``, ``error_rate.max_ratio`` with
    ``segment_by``) or replay stable's sample of each segment (``agreement`` with
    ``segment_by``) while stable's instances do not serve per segment."""
    rollout = state.rollout
    color = rollout.candidate if rollout.phase is Phase.PROMOTED else rollout.stable
    records = state.records(color)
    missing = [found for r in records for found in uncounted(spec.rules, r.args)]
    if not records or not missing:
        return
    rule, key = missing[0]
    version = records[0].version
    section = {"latency_vs_stable": "relative_latency"}.get(rule.name, rule.name)
    what = (f"{rule.name} replays stable's own sample of each {key} segment"
            if getattr(rule, "reads", None) == "output" else
            f"{rule.name} compares each {key} segment with the same segment of stable")
    raise DeployValueError(
        f"{what}, but "
        f"stable ({color}, {state.model} {version}) does not count requests per segment: "
        f"start stable with it first (workbench deploy update {state.name} --version {version} "
        f"--segment-by {key} --auto-promote), or set segment_by = false in the analysis' {section} "
        "table")


def run(
    deployment: Deployment,
    spec: AnalysisSpec | None = None,
    *,
    prometheus: str | None = None,
    stop: threading.Event | None = None,
    on_tick: Callable[[CanaryStatus, Action], None] | None = None,
    on_verify: Callable[[DeploymentState], None] | None = None,
) -> CanaryStatus:
    """Run ``deployment``'s canary to its end (or until ``stop``), holding its controller lock.

    A candidate still starting or verifying (``update --detach`` returns once it started)
    is verified first: a failure ends the run with the RolloutError saying why. A
    verified candidate starts at the plan's first step; a canary persisted earlier (a
    restore after a crash) carries on where it stood.
    """
    with controller_lock(deployment.context.store.directory(deployment.name)):
        if deployment.state.rollout.in_progress:
            deployment.wait(on_tick=on_verify)
        control = controller(deployment, spec, prometheus=prometheus, by="controller")
        if on_tick is not None:
            control.listeners.append(on_tick)
        status = control.status
        fresh = status is None or status.done or deployment.phase is Phase.VERIFIED
        if fresh:
            if deployment.phase is not Phase.VERIFIED:
                raise RolloutError(
                    f"{deployment.name}: a canary starts from a verified candidate, "
                    f"not from phase {deployment.phase.value!r}"
                )
            _scrape(control)
            status = control.begin()
        synthetic = _synthetic(deployment, control.spec)
        try:
            return control.run(stop)
        finally:
            if synthetic is not None:
                synthetic.stop()


def _scrape(control: CanaryController) -> None:
    """Give the scrape source a base, so the first window is one interval long."""
    scrape = getattr(control.source, "scrape", None)
    if scrape is not None:
        with contextlib.suppress(Exception):
            scrape()


def _synthetic(deployment: Deployment, spec: AnalysisSpec) -> Any:
    """Sample traffic at ``spec.synthetic`` requests/s through the router, if asked for."""
    if not spec.synthetic:
        return None
    from workbench.deploy.rollout.synthetic import SyntheticTraffic
    from workbench.model.repository import ModelRepository

    state = deployment.state
    candidate = state.candidate
    if candidate is None:
        return None
    if is_pipeline(state.repo, state.model, candidate.version):
        log.warning("%s: %s is a pipeline: it has no sample to send as synthetic traffic",
                    state.name, candidate.version)
        return None
    sample = ModelRepository(state.repo).sample(state.model, candidate.version)
    if not sample:
        log.warning("%s: %s has no sample to send as synthetic traffic", state.name,
                    candidate.version)
        return None
    budget = max(1.0, spec.interval * (len(spec.steps) + spec.max_inconclusive + 2))
    traffic = SyntheticTraffic(
        candidate.url, state.model, sample, rate=spec.synthetic,
        max_requests=int(spec.synthetic * budget) + 1, max_seconds=budget,
    )
    return traffic.start()
