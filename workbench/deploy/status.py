"""A deployment as seen now: its persisted state plus a live look at the router and instances."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from workbench.deploy.rollout.phases import Phase
from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from workbench._types import Color
    from workbench.deploy.backend import Backend
    from workbench.deploy.records import InstanceRecord
    from workbench.deploy.rollout.controller_process import ControllerProcess
    from workbench.deploy.state import DeploymentState

__all__ = ["DeploymentStatus", "InstanceStatus", "finished", "look_at_instances", "roles", "step"]


@dataclass(frozen=True)
class InstanceStatus:
    """One instance as seen now: what the state says and what the instance answers.

    :attr:`state` sums it up: ``ready``; ``not ready`` (it runs but does not say ready);
    ``lost`` (its container or process is gone, or its engine cannot be reached); or
    ``unknown`` (not probed).
    """

    color: Color
    role: str  # "stable" | "candidate" | "previous" (see Rollout.roles)
    version: str
    url: str
    ref: str
    weight: int
    running: bool
    ready: bool
    error: str = ""
    engine: str = ""  # "" = the deployment's default engine
    replica: int = 0
    lost: bool = False

    @property
    def state(self) -> str:
        if self.lost:
            return "lost"
        if self.ready:
            return "ready"
        return "not ready" if self.running else "unknown"

    @property
    def address(self) -> str:
        """``host:port`` the router reaches it at."""
        return self.url.removeprefix("http://")

    def to_dict(self) -> dict[str, Any]:
        return {
            "color": self.color,
            "role": self.role,
            "version": self.version,
            "url": self.url,
            "ref": self.ref,
            "weight": self.weight,
            "running": self.running,
            "ready": self.ready,
            "error": self.error,
            "engine": self.engine,
            "replica": self.replica,
            "address": self.address,
            "state": self.state,
        }


@dataclass(frozen=True)
class DeploymentStatus:
    """A deployment's persisted state plus a live look at its router and instances
    (and, with a canary, at its controller process)."""

    state: DeploymentState
    router_running: bool
    instances: tuple[InstanceStatus, ...]
    controller: ControllerProcess | None = None

    @property
    def healthy(self) -> bool:
        """Router up and every colour that takes traffic has enough ready instances
        (all of them, or the deployment's ``min_ready``)."""
        serving = {i.color for i in self.instances if i.weight > 0}
        for color in serving:
            mine = [i for i in self.instances if i.color == color]
            if sum(i.ready for i in mine) < self.state.needed(len(mine)):
                return False
        return self.router_running and bool(serving)

    @property
    def canary_problem(self) -> str | None:
        """Why an unfinished canary needs a person, in one line: it is paused, or no live
        controller judges it (None when neither, or when no canary is under way)."""
        canary = self.state.canary
        if canary is None:
            return None
        status = canary.status
        name = self.state.name
        if status is not None:
            if status.done:
                return None
            weight = self.state.weights.get(self.state.rollout.candidate, 0)
            if status.stage == "paused":
                why = status.message.strip().rstrip(".")
                return (f"{name}: the canary is paused at {weight}%" + (f" ({why})" if why else "")
                        + f"; go on with: workbench deploy resume {name}")
        elif not (self.state.rollout.in_progress or self.state.phase == "verified"):
            return None  # a canary spec left from a start that never began, nothing pending
        else:
            weight = 0
        if self.controller is not None and (self.controller.alive or _runs(self.controller.pid)):
            return None  # judging, or started and about to take the controller lock
        return (f"{name}: the canary at {weight}% has no live controller, so nothing judges "
                f"it; carry on with: workbench deploy restore {name}")

    @property
    def lost(self) -> list[InstanceStatus]:
        """The instances whose container, process or engine is gone."""
        return [i for i in self.instances if i.lost]

    def to_dict(self) -> dict[str, Any]:
        state = self.state
        return {
            "name": state.name,
            "model": state.model,
            "url": state.url,
            "backend": state.backend,
            "router": state.router,
            "phase": state.phase,
            "message": state.rollout.message,
            "stable": state.rollout.stable,
            "weights": dict(state.weights),
            "roles": roles(state),
            "step": step(state),
            "stable_version": state.stable_version,
            "candidate_version": state.candidate_version,
            "router_running": self.router_running,
            "healthy": self.healthy,
            "instances": [i.to_dict() for i in self.instances],
            "agreement": None if state.agreement is None else dict(state.agreement),
            "canary": self._canary(),
            "revision": state.revision,
            "updated_at": state.updated_at,
        }

    def _canary(self) -> dict[str, Any] | None:
        """The canary's persisted status, its controller (``{"pid", "alive"}``) and, once it
        ended, how (``finished``: stage, time, rule, by whom)."""
        canary = self.state.canary
        if canary is None:
            return None
        controller = self.controller.to_dict() if self.controller is not None else None
        status = None if canary.status is None else canary.status.to_dict()
        return {"status": status, "controller": controller,
                "finished": finished(self.state), "problem": self.canary_problem}
def _runs(pid: int | None) -> bool:
    """Whether ``pid`` is a running ``workbench deploy canary-run`` (a zombie has no
    command line; a reused pid runs something else)."""
    if pid is None:
        return False
    try:
        return b"canary-run" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


#: The order roles are listed in: the one taking the traffic first.
ROLE_ORDER = ("stable", "candidate", "previous")


def roles(state: DeploymentState) -> dict[str, dict[str, Any]]:
    """Each role (stable, candidate, previous; see :attr:`Rollout.roles`) that has instances:
    its colour, version and weight."""
    weights = state.weights
    out = {}
    for role, color in state.rollout.roles.items():
        group = state.instances.get(color)
        if group is not None:
            out[role] = {"color": color, "version": group.version, "weight": weights.get(color, 0)}
    return out


def step(state: DeploymentState) -> dict[str, int] | None:
    """Where a canary stands in its plan, ``{"index": k, "of": n}`` (k from 1; 0 while it
    mirrors), or None when no canary runs."""
    canary = state.canary
    if canary is None or canary.status is None or canary.status.done:
        return None
    return {"index": canary.status.index + 1, "of": len(canary.status.steps)}


def finished(state: DeploymentState) -> dict[str, Any] | None:
    """How the deployment's last canary ended, or None while it runs (or none ran):
    ``{"stage", "at", "rule", "by", "message"}``; ``rule`` names the rule that rolled it
    back (None when a person did), ``by`` who acted (controller, cli, notebook, api)."""
    status = None if state.canary is None else state.canary.status
    if status is None or not status.done:
        return None
    rule = None
    if status.stage is Phase.ROLLED_BACK:
        rule = next((r.rule for r in status.last if r.verdict == "fail" and r.sustained), None)
    by = next((e.by for e in reversed(state.history)
               if e.details.get("canary") in ("promote", "rollback", "abort")), "")
    return {"stage": status.stage.value, "at": status.updated, "rule": rule, "by": by,
            "message": status.message}


def look_at_instances(
    state: DeploymentState, engine: Backend, *, probe: bool = True, timeout: float = 1.0
) -> tuple[InstanceStatus, ...]:
    """Each recorded instance, blue first; with ``probe``, whether it runs and is ready.

    An instance whose engine cannot be reached, or whose container or process is gone,
    is ``lost`` (with the reason as its error), never an exception. Engines are asked
    at the same time, one thread each (an engine's client is used by one thread), and
    an engine that cannot be reached is asked once: its other instances share the
    answer, so a dead host costs one connect timeout, not one per instance.
    """
    weights = state.weights
    records = state.records()
    looks: dict[int, _Look] = {}
    if probe:
        by_engine: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            by_engine.setdefault(record.engine, []).append(index)

        def look_at_engine(indexes: list[int]) -> None:
            failed: _Look | None = None  # the engine's answer once it could not be reached
            for index in indexes:
                look = failed or _look_at(state, records[index], engine, timeout)
                looks[index] = look
                if look.engine_failed:
                    failed = look

        if len(by_engine) == 1:
            look_at_engine(next(iter(by_engine.values())))
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(8, len(by_engine))) as pool:
                list(pool.map(look_at_engine, by_engine.values()))
    instances = []
    for index, record in enumerate(records):
        color = record.color
        look = looks.get(index, _NOT_PROBED)
        instances.append(
            InstanceStatus(
                color=color,
                role=state.rollout.role(color),
                version=record.version,
                url=record.url,
                ref=record.ref,
                weight=weights.get(color, 0),
                running=look.running,
                ready=look.ready,
                error=look.error,
                engine=record.engine,
                replica=record.replica,
                lost=look.lost,
            )
        )
    return tuple(instances)


class _Look(NamedTuple):
    running: bool
    ready: bool
    lost: bool
    error: str
    engine_failed: bool = False  # the engine could not be asked


_NOT_PROBED = _Look(False, False, False, "")


def _look_at(
    state: DeploymentState, record: InstanceRecord, engine: Backend, timeout: float
) -> _Look:
    """Whether one instance runs and is ready."""
    instance = record.to_instance(state)
    try:
        known = engine.readiness(instance)
        running = known.running if known is not None else engine.is_running(instance)
    except WorkbenchError as exc:
        return _Look(False, False, True, str(exc), engine_failed=True)
    if not running:
        return _Look(False, False, True, known.error if known is not None else "not running")
    if known is not None:
        return _Look(True, known.ready, False, known.error)
    from workbench.deploy.client import ServingClient

    with ServingClient(record.url, timeout=timeout) as client:
        health = client.ready(timeout=timeout)
    return _Look(True, health.ok, False, health.error)
