"""Blue/green deployments: one public endpoint (nginx) in front of two colours.

This is the one Python API that the ``workbench deploy`` CLI and the notebook
extension both call. Every action is a short transaction on the persisted state
(:mod:`workbench.deploy.state`): take the deployment's file lock, read, compute the
next rollout (:mod:`workbench.deploy.rollout`, pure), carry out its effects in one
order — **traffic first** (one router apply), **then instances** (stop what no
longer belongs), **then the state file**, **then the event** — and release. Slow
work (starting a process, waiting for readiness, the agreement check) happens
outside the lock, and each tick re-checks under the lock that nobody else moved
the rollout in the meantime.

    >>> manager = DeploymentManager()
    >>> web = manager.create("web", "digits", "1.0.0")      # blue live behind the router
    >>> web.update("1.1.0")                                  # green started and verified
    >>> web.promote()                                        # all traffic to green
    >>> web.rollback()                                       # all traffic back to blue
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.deploy import rollout as flow
from workbench.deploy.backends import get_backend
from workbench.deploy.base import COLORS, Backend, Instance, InstanceSpec, check_deployment_name
from workbench.deploy.client import ServingClient
from workbench.deploy.process import free_port, port_in_use
from workbench.deploy.rollout import CHECKS, Phase, Rollout, Verdict
from workbench.deploy.state import (
    DeploymentState,
    HistoryEntry,
    InstanceRecord,
    Plan,
    StateStore,
)
from workbench.errors import (
    BackendError,
    DeployError,
    RolloutError,
    RouterError,
    WorkbenchError,
)

if TYPE_CHECKING:
    from workbench._types import Color, StrPath
    from workbench.deploy.agreement import AgreementReport
    from workbench.deploy.router import NginxRouter, RoutingTable

log = logging.getLogger(__name__)

#: Phases after which the candidate slot is emptied (its instance stopped).
_SINGLE = frozenset({Phase.STABLE, Phase.STARTING, Phase.ROLLED_BACK, Phase.FAILED})
#: Phases in which the candidate has an upstream in the router.
_ROUTED = frozenset({Phase.VERIFIED, Phase.CANARY, Phase.PROMOTED})


@dataclass(frozen=True)
class DeployEvent:
    """Something happened to a deployment (for notebooks, logs and watchers)."""

    deployment: str
    action: str
    outcome: str
    phase: str
    message: str
    weights: Mapping[str, int] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


@dataclass(frozen=True)
class InstanceStatus:
    """One colour as seen now: what the state says and what the instance answers."""

    color: Color
    role: str  # "stable" | "candidate"
    version: str
    url: str
    ref: str
    weight: int
    running: bool
    ready: bool
    error: str = ""

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
        }


@dataclass(frozen=True)
class DeploymentStatus:
    """A deployment's persisted state plus a live look at its router and instances."""

    state: DeploymentState
    router_running: bool
    instances: tuple[InstanceStatus, ...]

    @property
    def healthy(self) -> bool:
        """Router up and every colour that takes traffic running and ready."""
        serving = [i for i in self.instances if i.weight > 0]
        return self.router_running and bool(serving) and all(i.ready for i in serving)

    def to_dict(self) -> dict[str, Any]:
        state = self.state
        return {
            "name": state.name,
            "model": state.model,
            "url": state.url,
            "backend": state.backend,
            "phase": state.phase,
            "message": state.rollout.message,
            "stable": state.rollout.stable,
            "weights": dict(state.weights),
            "stable_version": state.stable_version,
            "candidate_version": state.candidate_version,
            "router_running": self.router_running,
            "healthy": self.healthy,
            "instances": [i.to_dict() for i in self.instances],
            "agreement": None if state.agreement is None else dict(state.agreement),
            "revision": state.revision,
            "updated_at": state.updated_at,
        }


BackendFactory = Callable[[str, Mapping[str, str]], Backend]
RouterFactory = Callable[[Path], "NginxRouter"]
EventCallback = Callable[[DeployEvent], None]


class DeploymentManager:
    """Creates, finds and deletes deployments under one workbench home."""

    def __init__(
        self,
        home: StrPath | None = None,
        *,
        repo: StrPath | None = None,
        backend_factory: BackendFactory | None = None,
        router_factory: RouterFactory | None = None,
        lock_timeout: float = 60.0,
    ) -> None:
        from workbench.settings import Settings

        settings = Settings.from_env()
        self.home = Path(home) if home is not None else settings.home
        self.repo = Path(repo) if repo is not None else settings.repo
        self.store = StateStore(self.home, lock_timeout=lock_timeout)
        self._backend_factory = backend_factory
        self._router_factory = router_factory
        self._backends: dict[tuple[str, tuple[tuple[str, str], ...]], Backend] = {}
        self._subscribers: list[EventCallback] = []

    def __repr__(self) -> str:
        return f"DeploymentManager(home={str(self.home)!r})"

    # -- plumbing shared by deployments ----------------------------------------------------

    def backend(self, name: str, options: Mapping[str, str] | None = None) -> Backend:
        """The backend ``name`` with ``options`` (one object per combination)."""
        opts = dict(options or {})
        key = (name, tuple(sorted(opts.items())))
        if key not in self._backends:
            if self._backend_factory is not None:
                self._backends[key] = self._backend_factory(name, opts)
            elif name == "process":
                self._backends[key] = get_backend("process", home=self.home)
            else:
                self._backends[key] = get_backend(name, **opts)
        return self._backends[key]

    def router(self, name: str) -> NginxRouter:
        workdir = self.store.directory(name) / "router"
        if self._router_factory is not None:
            return self._router_factory(workdir)
        from workbench.deploy.router import NginxRouter

        return NginxRouter(workdir)

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(DeployEvent)`` after every action; returns an unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def emit(self, event: DeployEvent) -> None:
        log.info(
            "%s: %s %s (%s) %s", event.deployment, event.action, event.outcome, event.phase,
            event.message,
        )
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a broken subscriber must not break a rollback
                log.exception("deploy event subscriber %r failed", callback)

    def resolve_version(self, model: str, ref: str) -> str:
        """A version string for ``ref`` (a version, or an alias such as ``stable``)."""
        try:
            from workbench.model.repository import ModelRepository
        except ImportError:  # pragma: no cover - the model layer ships with the package
            return ref
        try:
            return str(ModelRepository(self.repo).resolve(model, ref))
        except WorkbenchError as exc:
            raise DeployError(f"cannot deploy {model} {ref}: {exc}") from exc

    # -- the API -------------------------------------------------------------------------

    def names(self) -> list[str]:
        return self.store.names()

    def list(self) -> list[DeploymentState]:
        return self.store.all()

    def get(self, name: str) -> Deployment:
        """An existing deployment (StateError if there is none of that name)."""
        check_deployment_name(name)
        self.store.load(name)
        return Deployment(self, name)

    def create(
        self,
        name: str,
        model: str,
        version: str = "stable",
        *,
        backend: str = "process",
        docker_host: str | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        device: str = "cpu",
        workers: int = 1,
        instance_port: int | None = None,
        timeout: float = 180.0,
        backend_options: Mapping[str, str] | None = None,
    ) -> Deployment:
        """Start ``model`` ``version`` as blue, wait until it is ready and healthy, put
        the router on ``port`` in front of it. Nothing is left behind if any step fails.

        ``backend_options`` go to the backend's constructor and are persisted (e.g.
        ``{"image": "paddle-workbench:gpu"}`` for docker); ``docker_host`` is one of them.
        """
        try:
            check_deployment_name(name)
        except ValueError as exc:
            raise DeployError(str(exc)) from exc
        resolved = self.resolve_version(model, version)
        options = {k: str(v) for k, v in (backend_options or {}).items() if v is not None}
        if docker_host:
            options["docker_host"] = docker_host
        with self.store.transaction(name) as txn:
            if txn.exists:
                raise DeployError(f"deployment {name!r} already exists ({txn.state.url})")
            public = port or free_port(host)
            if port_in_use(public, host):
                raise DeployError(f"cannot create {name!r}: port {public} on {host} is in use")
            state = DeploymentState(
                name=name,
                model=model,
                repo=str(self.repo),
                port=public,
                host=host,
                backend=backend,
                backend_options=options,
                device=device,
                workers=workers,
                rollout=Rollout(phase=Phase.STABLE, stable="blue", since=time.time()),
            )
            deployment = Deployment(self, name)
            spec = deployment._spec(state, "blue", resolved, instance_port or free_port())
            engine = self.backend(backend, options)
            instance = engine.start(spec)
            try:
                deployment._wait_healthy(engine, instance, timeout)
                state = state.with_instance(InstanceRecord.from_instance(instance))
                self.router(name).apply(deployment._table(state))
            except BaseException:
                with contextlib.suppress(WorkbenchError):
                    engine.stop(instance)
                with contextlib.suppress(WorkbenchError):
                    self.router(name).stop()
                raise
            state = txn.save(state.record("create", "ok", f"{model} {resolved} live on blue"))
        self.emit(DeployEvent(name, "create", "ok", state.phase, f"{model} {resolved} on blue",
                              dict(state.weights)))
        return deployment

    def delete(self, name: str) -> None:
        """Stop the router and every instance, then remove the deployment's files."""
        self.get(name).delete()


class _Probe:
    """Looks at a deployment's candidate for ``rollout.advance`` (one HTTP call per check)."""

    def __init__(self, deployment: Deployment, state: DeploymentState) -> None:
        self.deployment = deployment
        self.state = state
        self.report: AgreementReport | None = None

    def _client(self, record: InstanceRecord, timeout: float = 10.0) -> ServingClient:
        return ServingClient(record.url, timeout=timeout)

    def running(self) -> Verdict:
        record = self.state.candidate
        if record is None:
            return Verdict.pending("waiting for the backend to start the candidate")
        engine = self.deployment._backend(self.state)
        instance = record.to_instance(self.state)
        if engine.is_running(instance):
            return Verdict.passed()
        tail = engine.logs(instance, tail=15).strip()
        return Verdict.failed(
            f"the candidate ({record.version}, {record.backend} {record.ref}) exited"
            + (f"; last lines of its log:\n{tail}" if tail else "")
        )

    def ready(self) -> Verdict:
        record = self.state.candidate
        assert record is not None
        with self._client(record) as client:
            health = client.ready()
        if health.ok:
            return Verdict.passed(f"{record.color} {record.version} is ready")
        return Verdict.pending(f"waiting for {record.color} to be ready ({health.error})")

    def deep_health(self) -> Verdict:
        record = self.state.candidate
        assert record is not None
        with self._client(record, timeout=60.0) as client:
            health = client.deep_health()
        if health.ok:
            seconds = health.detail.get("seconds")
            took = f" in {float(seconds) * 1000:.0f} ms" if isinstance(seconds, int | float) else ""
            return Verdict.passed(f"deep health check passed{took}")
        if health.status is None:
            return Verdict.pending(f"deep health check unreachable: {health.error}")
        return Verdict.failed(health.error or f"status {health.status}")

    def agreement(self) -> Verdict:
        from workbench.deploy.agreement import check_agreement

        stable, candidate = self.state.stable, self.state.candidate
        assert candidate is not None
        if stable is None:
            return Verdict.passed("no stable instance to compare with")
        plan = self.state.plan
        try:
            batches = self.deployment._samples(self.state, plan)
        except WorkbenchError as exc:
            return Verdict.failed(str(exc))
        if not batches:
            return Verdict.passed("no sample inputs to compare on (agreement not checked)")
        with self._client(stable, 60.0) as left, self._client(candidate, 60.0) as right:
            report = check_agreement(
                left,
                right,
                self.state.model,
                batches,
                min_top1=plan.min_agreement if plan else 0.0,
                stable_version=stable.version,
                candidate_version=candidate.version,
            )
        self.report = report
        return Verdict(report.passed, report.summary())


class Deployment:
    """One deployment; every method reads the persisted state afresh."""

    def __init__(self, manager: DeploymentManager, name: str) -> None:
        self.manager = manager
        self.name = check_deployment_name(name)

    def __repr__(self) -> str:
        return f"Deployment({self.name!r})"

    # -- reading -------------------------------------------------------------------------

    @property
    def state(self) -> DeploymentState:
        return self.manager.store.load(self.name)

    @property
    def url(self) -> str:
        return self.state.url

    @property
    def phase(self) -> Phase:
        return self.state.rollout.phase

    @property
    def agreement(self) -> dict[str, Any] | None:
        """The last output-agreement report (as persisted), or None."""
        report = self.state.agreement
        return None if report is None else dict(report)

    def history(self, limit: int | None = None) -> list[HistoryEntry]:
        entries = list(self.state.history)
        return entries[-limit:] if limit else entries

    def status(self, *, probe: bool = True, timeout: float = 1.0) -> DeploymentStatus:
        """The state plus, with ``probe``, whether the router and each instance answer."""
        state = self.state
        engine = self._backend(state)
        weights = state.weights
        instances = []
        for color in COLORS:
            record = state.instances.get(color)
            if record is None:
                continue
            running = ready = False
            error = ""
            if probe:
                instance = record.to_instance(state)
                try:
                    running = engine.is_running(instance)
                except WorkbenchError as exc:
                    error = str(exc)
                if running:
                    with ServingClient(record.url, timeout=timeout) as client:
                        health = client.ready(timeout=timeout)
                    ready, error = health.ok, health.error
                elif not error:
                    error = "not running"
            instances.append(
                InstanceStatus(
                    color=color,
                    role="stable" if color == state.rollout.stable else "candidate",
                    version=record.version,
                    url=record.url,
                    ref=record.ref,
                    weight=weights.get(color, 0),
                    running=running,
                    ready=ready,
                    error=error,
                )
            )
        router_running = False
        if probe:
            with contextlib.suppress(WorkbenchError, OSError):
                router_running = self.manager.router(self.name).running
        return DeploymentStatus(state, router_running, tuple(instances))

    def logs(self, color: Color, tail: int = 200) -> str:
        state = self.state
        record = state.instances.get(color)
        if record is None:
            raise DeployError(f"{self.name} has no {color} instance")
        return self._backend(state).logs(record.to_instance(state), tail)

    # -- the rollout -----------------------------------------------------------------------

    def update(
        self,
        version: str,
        *,
        sample_file: StrPath | None = None,
        auto_promote: bool = False,
        min_agreement: float = 0.0,
        checks: Sequence[str] = CHECKS,
        timeout: float = 180.0,
        instance_port: int | None = None,
        wait: bool = True,
        poll: float = 0.2,
        on_tick: Callable[[DeploymentState], None] | None = None,
    ) -> DeploymentState:
        """Start ``version`` as the candidate colour and verify it (readiness, deep health,
        output agreement with stable); then wait for :meth:`promote` (or promote at once
        with ``auto_promote``). The stable colour keeps all traffic throughout.

        With ``wait=False`` it returns once the candidate was started; call :meth:`tick`
        until the rollout is no longer in progress. Raises RolloutError when the
        candidate fails (the state then says ``failed`` and why).
        """
        state = self.state
        resolved = self.manager.resolve_version(state.model, version)
        if not 0.0 <= min_agreement <= 1.0:
            raise DeployError(f"min_agreement must be in 0..1, not {min_agreement}")
        sample = None
        if sample_file is not None:
            sample = str(Path(sample_file).expanduser().resolve())
            if not Path(sample).is_file():
                raise DeployError(f"sample file {sample} does not exist")
        unknown = set(checks) - set(CHECKS)
        if unknown:
            raise DeployError(f"unknown checks {sorted(unknown)}; choose from {list(CHECKS)}")
        plan = Plan(
            version=resolved,
            port=instance_port or free_port(),
            sample_file=sample,
            min_agreement=min_agreement,
        )

        def begin(rollout: Rollout, now: float) -> Rollout:
            return flow.begin_update(
                rollout,
                now=now,
                timeout=timeout,
                auto_promote=auto_promote,
                checks=tuple(c for c in CHECKS if c in checks),
            )

        state = self._act(
            "update", begin, plan=plan, reason=f"{state.model} {resolved} as candidate"
        )
        spec = self._spec(state, state.rollout.candidate, resolved, plan.port)
        engine = self._backend(state)
        try:
            for stale in engine.find(self.name):
                # left behind by an update that was killed before it recorded its instance
                if stale.spec.color == spec.color:
                    log.warning("%s: stopping a stale %s instance (%s)", self.name, stale.spec.color,
                                stale.ref)
                    engine.stop(stale)
            instance = engine.start(spec)
        except BackendError as exc:
            self._fail(state, str(exc))
            raise RolloutError(
                f"{self.name}: could not start {resolved} on {spec.color}: {exc}; "
                f"{state.rollout.stable} keeps all traffic"
            ) from exc
        state = self._attach(state, instance)
        if not wait:
            return state
        return self._follow(state, poll, on_tick)

    def wait(
        self,
        *,
        poll: float = 0.2,
        on_tick: Callable[[DeploymentState], None] | None = None,
    ) -> DeploymentState:
        """Tick a starting or verifying rollout until it is verified, promoted or failed.

        This is how another process (a notebook, a new shell) takes over a rollout
        whose ``update`` was interrupted. Raises RolloutError when the candidate failed.
        """
        state = self.state
        if not state.rollout.in_progress:
            return state
        return self._follow(state, poll, on_tick)

    def _follow(
        self,
        state: DeploymentState,
        poll: float,
        on_tick: Callable[[DeploymentState], None] | None,
    ) -> DeploymentState:
        resolved = state.plan.version if state.plan else state.candidate_version
        while state.rollout.in_progress:
            time.sleep(poll)
            state = self.tick()
            if on_tick is not None:
                on_tick(state)
        if state.rollout.phase is Phase.FAILED:
            raise RolloutError(
                f"{self.name}: {resolved} failed verification: {state.rollout.message}; "
                f"{state.rollout.stable} keeps all traffic"
            )
        if state.rollout.phase not in (Phase.VERIFIED, Phase.PROMOTED):
            raise RolloutError(
                f"{self.name}: the rollout of {resolved} was changed by another process "
                f"(now {state.phase}: {state.rollout.message})"
            )
        return state

    def tick(self) -> DeploymentState:
        """Advance a starting or verifying rollout by one check (and persist it)."""
        state = self.state
        if not state.rollout.in_progress:
            return state
        probe = _Probe(self, state)
        rollout = flow.advance(state.rollout, probe, now=time.time())
        if rollout == state.rollout and probe.report is None:
            return state
        with self.manager.store.transaction(self.name) as txn:
            current = txn.state
            if current.revision != state.revision:
                return current  # someone else moved it; look again on the next tick
            after = replace(current, rollout=rollout)
            if probe.report is not None:
                after = replace(after, agreement=probe.report.to_dict())
            after = self._effects(current, after)
            entries = []
            if probe.report is not None:
                entries.append(("agreement", "ok" if probe.report.passed else "failed",
                                probe.report.summary()))
            if rollout.phase is not current.rollout.phase and not rollout.in_progress:
                action = "verify" if rollout.phase is not Phase.PROMOTED else "promote"
                outcome = "failed" if rollout.phase is Phase.FAILED else "ok"
                entries.append((action, outcome, rollout.message))
            for action, outcome, reason in entries:
                after = after.record(action, outcome, reason)
            saved = txn.save(after)
        for action, outcome, reason in entries:
            self.manager.emit(
                DeployEvent(self.name, action, outcome, saved.phase, reason, dict(saved.weights))
            )
        return saved

    def promote(self, reason: str = "") -> DeploymentState:
        """All traffic to the candidate; the stable colour stays warm as the rollback target."""
        return self._act("promote", lambda r, now: flow.promote(r, now=now), reason=reason)

    def weight(self, percent: int, reason: str = "") -> DeploymentState:
        """Send ``percent`` of traffic to the candidate (sticky per user id when the
        request carries one); 0 keeps it warm without traffic, 100 promotes."""
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise DeployError(f"weight must be an integer percentage 0..100, not {percent!r}")
        return self._act(
            "weight",
            lambda r, now: flow.set_weight(r, percent, now=now),
            reason=reason or f"{percent}% to the candidate",
        )

    def switch(self, reason: str = "") -> DeploymentState:
        """Flip all traffic to the other colour; both colours stay warm."""
        return self._act("switch", lambda r, now: flow.switch(r, now=now), reason=reason)

    def rollback(self, reason: str = "") -> DeploymentState:
        """All traffic back to stable (one router reload), then stop the candidate."""
        return self._act(
            "rollback", lambda r, now: flow.rollback(r, now=now, reason=reason), reason=reason
        )

    def abort(self, reason: str = "") -> DeploymentState:
        """Drop the candidate before it was promoted; stable keeps all traffic."""
        return self._act(
            "abort", lambda r, now: flow.abort(r, now=now, reason=reason), reason=reason
        )

    def restore(self, timeout: float = 180.0) -> DeploymentState:
        """Bring back what the state says should run, e.g. after the host or the workbench
        container restarted: restart each colour whose instance is gone (same version and
        port), wait until it is ready and healthy, then start the router on the recorded
        table. Colours that still run are left alone."""
        restarted: list[str] = []
        with self.manager.store.transaction(self.name) as txn:
            state = txn.state
            engine = self._backend(state)
            for color, record in sorted(state.instances.items()):
                old = record.to_instance(state)
                if engine.is_running(old):
                    continue
                engine.stop(old)  # forget the stale record
                instance = engine.start(self._spec(state, color, record.version, record.port))
                try:
                    self._wait_healthy(engine, instance, timeout)
                except BaseException:
                    with contextlib.suppress(WorkbenchError):
                        engine.stop(instance)
                    txn.save(state.record("restore", "failed", f"{color} did not come back"))
                    raise
                state = state.with_instance(InstanceRecord.from_instance(instance))
                restarted.append(f"{color} {record.version}")
            router_was_up = self._router_up()
            if restarted or not router_was_up:
                self.manager.router(self.name).apply(self._table(state))
            what = ", ".join(restarted) or "no instance"
            message = f"restarted {what}" + ("" if router_was_up else " and the router")
            saved = txn.save(state.record("restore", "ok", message))
        self.manager.emit(
            DeployEvent(self.name, "restore", "ok", saved.phase, message, dict(saved.weights))
        )
        return saved

    def delete(self, timeout: float = 10.0) -> None:
        """Stop the router and every instance (graceful), then remove the files."""
        store = self.manager.store
        with store.lock(self.name):
            state = store.load(self.name)
            with contextlib.suppress(RouterError):
                self.manager.router(self.name).stop()
            engine = self._backend(state)
            seen = set()
            for record in state.instances.values():
                seen.add(record.ref)
                with contextlib.suppress(BackendError):
                    engine.stop(record.to_instance(state), timeout)
            with contextlib.suppress(BackendError):
                for instance in engine.find(self.name):
                    if instance.ref not in seen:
                        engine.stop(instance, timeout)
        store.remove(self.name)
        self.manager.emit(DeployEvent(self.name, "delete", "ok", "deleted", "deleted"))

    # -- internals -----------------------------------------------------------------------

    def _backend(self, state: DeploymentState) -> Backend:
        return self.manager.backend(state.backend, state.backend_options)

    def _spec(self, state: DeploymentState, color: Color, version: str, port: int) -> InstanceSpec:
        return InstanceSpec(
            deployment=state.name,
            color=color,
            model=state.model,
            version=version,
            repo=state.repo,
            port=port,
            host="127.0.0.1",
            device=state.device,
            workers=state.workers,
        )

    def _table(self, state: DeploymentState) -> RoutingTable:
        from workbench.deploy.router import RoutingTable, Upstream

        # The candidate joins the router (pinnable, and backup of the stable colour)
        # only once verified: before that it must not see a single request.
        routed = {
            color: record
            for color, record in state.instances.items()
            if color == state.rollout.stable or state.rollout.phase in _ROUTED
        }
        upstreams = tuple(
            Upstream(color=r.color, host=r.host, port=r.port, version=r.version)
            for r in routed.values()
        )
        green = state.rollout.weights["green"]
        if "green" not in routed:
            green = 0
        if "blue" not in routed:
            green = 100
        return RoutingTable(
            deployment=state.name,
            listen_port=state.port,
            listen_host=state.host,
            upstreams=upstreams,
            green_weight=green,
        )

    def _effects(self, before: DeploymentState, after: DeploymentState) -> DeploymentState:
        """Carry out what changed from ``before`` to ``after``: traffic, then instances.

        Returns ``after`` without the instances that were stopped.
        """
        phase = after.rollout.phase
        drop: list[InstanceRecord] = []
        if phase in _SINGLE and phase is not before.rollout.phase:
            candidate = after.candidate
            if candidate is not None:
                drop.append(candidate)
                after = after.without_instance(candidate.color)
        if self._table(after) != self._table(before) or not self._router_up():
            self.manager.router(self.name).apply(self._table(after))
        engine = self._backend(after)
        for record in drop:
            try:
                engine.stop(record.to_instance(before))
            except BackendError as exc:
                log.warning("%s: could not stop %s: %s", self.name, record.color, exc)
        return after

    def _router_up(self) -> bool:
        try:
            return self.manager.router(self.name).running
        except (RouterError, OSError):
            return False

    def _act(
        self,
        action: str,
        change: Callable[[Rollout, float], Rollout],
        *,
        reason: str = "",
        plan: Plan | None = None,
    ) -> DeploymentState:
        """One locked transaction: next rollout, effects, persist (refusals recorded), emit."""
        with self.manager.store.transaction(self.name) as txn:
            before = txn.state
            now = time.time()
            try:
                rollout = change(before.rollout, now)
            except RolloutError as exc:
                txn.save(before.record(action, "refused", str(exc)))
                raise RolloutError(f"{self.name}: {exc}") from None
            after = replace(before, rollout=rollout)
            if plan is not None:
                after = replace(after, plan=plan, agreement=None)
            try:
                after = self._effects(before, after)
            except WorkbenchError as exc:
                txn.save(before.record(action, "failed", str(exc)))
                raise
            message = reason or rollout.message
            saved = txn.save(after.record(action, "ok", message))
        self.manager.emit(
            DeployEvent(self.name, action, "ok", saved.phase, message, dict(saved.weights))
        )
        return saved

    def _attach(self, state: DeploymentState, instance: Instance) -> DeploymentState:
        """Record the started candidate, unless another process moved the rollout meanwhile."""
        with self.manager.store.transaction(self.name) as txn:
            current = txn.state
            ok = (
                current.rollout.phase is Phase.STARTING
                and current.plan == state.plan
                and current.rollout.candidate == instance.spec.color
            )
            if ok:
                saved = txn.save(current.with_instance(InstanceRecord.from_instance(instance)))
        if not ok:
            with contextlib.suppress(BackendError):
                self._backend(state).stop(instance)
            raise RolloutError(
                f"{self.name}: the rollout was changed by another process while "
                f"{instance.spec.version} was starting (now {current.phase}); stopped it"
            )
        return saved

    def _fail(self, state: DeploymentState, reason: str) -> None:
        with self.manager.store.transaction(self.name) as txn:
            current = txn.state
            if current.rollout.phase is not Phase.STARTING or current.plan != state.plan:
                return
            after = replace(current, rollout=flow.fail(current.rollout, reason, now=time.time()))
            after = self._effects(current, after)
            saved = txn.save(after.record("verify", "failed", reason))
        self.manager.emit(
            DeployEvent(self.name, "verify", "failed", saved.phase, reason, dict(saved.weights))
        )

    def _wait_healthy(self, engine: Backend, instance: Instance, timeout: float) -> None:
        """Wait for readiness, then run the deep health check (BackendError on failure)."""
        deadline = time.monotonic() + timeout
        with ServingClient(instance.url, timeout=60.0) as client:
            while True:
                if not engine.is_running(instance):
                    tail = engine.logs(instance, tail=15).strip()
                    raise BackendError(
                        f"{instance.spec.deployment}/{instance.spec.color} "
                        f"({instance.spec.model} {instance.spec.version}) exited before it was "
                        f"ready" + (f"; last lines of its log:\n{tail}" if tail else "")
                    )
                health = client.ready()
                if health.ok:
                    break
                if time.monotonic() > deadline:
                    raise BackendError(
                        f"{instance.spec.color} was not ready within {timeout:g}s: {health.error}"
                    )
                time.sleep(0.1)
            deep = client.deep_health()
        if not deep.ok:
            raise BackendError(f"{instance.spec.color} failed its deep health check: {deep.error}")

    def _samples(
        self, state: DeploymentState, plan: Plan | None
    ) -> list[tuple[str, Mapping[str, Any]]]:
        """The agreement inputs: both versions' manifest samples and the plan's sample file."""
        from workbench.deploy.agreement import load_sample_file

        batches: list[tuple[str, Mapping[str, Any]]] = []
        names: list[str] = []
        versions = [v for v in (state.candidate_version, state.stable_version) if v]
        try:
            from workbench.model.repository import ModelRepository

            repo = ModelRepository(state.repo)
            for version in dict.fromkeys(versions):
                try:
                    sample = repo.sample(state.model, version)
                    names = names or [t.name for t in repo.manifest(state.model, version).inputs]
                except WorkbenchError as exc:
                    log.info("%s: no manifest sample for %s: %s", self.name, version, exc)
                    continue
                if not any(_same(sample, seen) for _, seen in batches):
                    batches.append((f"manifest sample of {version}", sample))
        except ImportError:  # pragma: no cover
            pass
        if plan is not None and plan.sample_file:
            if not names and batches:
                names = list(batches[0][1])
            batches.append((plan.sample_file, load_sample_file(plan.sample_file, names)))
        return batches


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    import numpy as np

    return a.keys() == b.keys() and all(
        np.shape(a[k]) == np.shape(b[k]) and bool(np.array_equal(a[k], b[k])) for k in a
    )


def open_deployment(name: str, home: StrPath | None = None) -> Deployment:
    """Shortcut: ``DeploymentManager(home).get(name)``."""
    return DeploymentManager(home).get(name)


__all__ = [
    "DeployEvent",
    "Deployment",
    "DeploymentManager",
    "DeploymentStatus",
    "InstanceStatus",
    "open_deployment",
]
