"""Blue/green deployments: one public endpoint (nginx) in front of two colours.

This is the one Python API that the ``workbench deploy`` CLI and the notebook
extension both call. Every action is a short transaction on the persisted state
(:mod:`workbench.deploy.state`): take the deployment's file lock, read, compute the
next rollout (:mod:`workbench.deploy.rollout.phases`, pure), carry out its effects in one
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

A :class:`Deployment` acts through a small :class:`DeployContext` (the state store,
its backend, its router, the event subscribers) that
:class:`~workbench.deploy.manager.DeploymentManager` hands it; it never sees the
manager. The pieces live beside this module: :mod:`~workbench.deploy.verification`
(the checks a candidate passes), :mod:`~workbench.deploy.status`
(:class:`~workbench.deploy.status.DeploymentStatus`) and :mod:`~workbench.deploy.events`
(:class:`~workbench.deploy.events.DeployEvent`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.deploy import prepared
from workbench.deploy.events import DeployEvent
from workbench.deploy.fleet import start_all
from workbench.deploy.names import check_deployment_name
from workbench.deploy.nginx import NginxRouter
from workbench.deploy.platforms import get_backend, get_runner
from workbench.deploy.ports import free_port
from workbench.deploy.records import InstanceRecord
from workbench.deploy.rollout import phases as flow
from workbench.deploy.rollout.phases import CHECKS, DEFAULT_MIN_AGREEMENT, Phase, Rollout
from workbench.deploy.rollout.segments import merge_serve_args
from workbench.deploy.state import LOCK_FILE, Plan
from workbench.deploy.status import DeploymentStatus, look_at_instances
from workbench.deploy.tables import routing_table, settled
from workbench.deploy.verification import Probe, check_sample, wait_healthy
from workbench.errors import (
    BackendError,
    DeployError,
    RolloutError,
    RouterError,
    StateCorruptError,
    WorkbenchError,
)

if TYPE_CHECKING:
    from workbench._types import Color, StrPath
    from workbench.deploy.backend import Backend, Instance
    from workbench.deploy.events import Subscribers
    from workbench.deploy.history import HistoryEntry
    from workbench.deploy.logs import LogSource
    from workbench.deploy.router import Router
    from workbench.deploy.state import DeploymentState, StateStore
    from workbench.serving.faults import FaultConfig

__all__ = ["DeployContext", "Deployment", "resolve_version"]

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class DeployContext:
    """What a deployment acts through: its state, its instances, its router, its listeners."""

    store: StateStore
    #: The backend that runs a deployment's instances (``state.backend`` with its options).
    backend: Callable[[DeploymentState], Backend]
    #: The router of a deployment, run where ``state.router`` says.
    router: Callable[[DeploymentState], Router]
    events: Subscribers

    def emit(self, event: DeployEvent) -> None:
        self.events.emit(event)


def resolve_version(repo: StrPath, model: str, ref: str) -> str:
    """A version string for ``ref`` (a version, or an alias such as ``stable``) in ``repo``."""
    try:
        from workbench.model.repository import ModelRepository
    except ImportError:  # pragma: no cover - the model layer ships with the package
        return ref
    try:
        return str(ModelRepository(repo).resolve(model, ref))
    except WorkbenchError as exc:
        raise DeployError(f"cannot deploy {model} {ref} from the repository {repo}: {exc}") from exc


class Deployment:
    """One deployment; every method reads the persisted state afresh."""

    def __init__(self, context: DeployContext, name: str) -> None:
        self.context = context
        self.name = check_deployment_name(name)

    def __repr__(self) -> str:
        return f"Deployment({self.name!r})"

    # -- reading -------------------------------------------------------------------------

    @property
    def state(self) -> DeploymentState:
        return self.context.store.load(self.name)

    @property
    def admin_token(self) -> str:
        """The bearer token of this deployment's instances' admin API."""
        return self.context.store.admin_token(self.name)

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
        instances = look_at_instances(state, self._backend(state), probe=probe, timeout=timeout)
        router_running = False
        if probe:
            with contextlib.suppress(WorkbenchError, OSError):
                router_running = self.context.router(state).running
        controller = None
        if state.canary is not None:
            from workbench.deploy.rollout.controller_process import controller_process

            controller = controller_process(self.context.store.directory(self.name))
        return DeploymentStatus(state, router_running, instances, controller)

    def logs(self, color: Color, tail: int = 200) -> str:
        """The last lines of ``color``'s instances (each under a heading when there are several)."""
        state = self.state
        records = state.records(color)
        if not records:
            raise DeployError(f"{self.name} has no {color} instance")
        backend = self._backend(state)
        if len(records) == 1:
            return backend.logs(records[0].to_instance(state), tail)
        return "".join(f"== {color} {r.where} ==\n{backend.logs(r.to_instance(state), tail)}"
                       for r in records)

    def log_sources(self, color: Color | None = None) -> list[LogSource]:
        """Where this deployment's logs are: each colour's instance, then the router's access log."""
        from pathlib import Path

        from workbench.deploy.logs import LogSource

        state = self.state
        backend = self._backend(state)
        sources: list[LogSource] = []
        for record in state.records(color):
            instance = record.to_instance(state)
            path = instance.labels.get("log")
            name = record.color if not record.where else f"{record.color} {record.where}"
            if path:
                sources.append(LogSource(name, Path(path)))
            else:
                sources.append(LogSource(name, snapshot=functools.partial(backend.logs, instance)))
        access = getattr(self.context.router(state), "access_log", None)
        if color is None and isinstance(access, Path):
            sources.append(LogSource("router", access))
        return sources

    # -- the rollout -----------------------------------------------------------------------

    def update(
        self,
        version: str,
        *,
        sample_file: StrPath | None = None,
        auto_promote: bool = False,
        min_agreement: float = DEFAULT_MIN_AGREEMENT,
        checks: Sequence[str] = CHECKS,
        timeout: float = 180.0,
        instance_port: int | None = None,
        wait: bool = True,
        poll: float = 0.2,
        on_tick: Callable[[DeploymentState], None] | None = None,
        strategy: str = "blue-green",
        faults: FaultConfig | None = None,
        serve_args: Sequence[str] = (),
    ) -> DeploymentState:
        """Start ``version`` as the candidate colour and verify it (readiness, deep health,
        output agreement with stable); then wait for :meth:`promote` (or promote at once
        with ``auto_promote``). The stable colour keeps all traffic throughout.

        With ``wait=False`` it returns once the candidate was started; call :meth:`tick`
        until the rollout is no longer in progress. Raises RolloutError when the
        candidate fails (the state then says ``failed`` and why).

        ``faults`` (chaos testing) are injected into the candidate's instances only
        (``workbench serve --fault-error-rate/--fault-latency-ms``); stable never has any.
        ``serve_args`` go to the candidate's ``workbench serve`` too (e.g. a canary's
        ``--segment-by``), with those stable's instances were started with (a deployment
        that counts per segment keeps counting after a promotion).
        """
        state = self.state
        resolved = resolve_version(state.repo, state.model, version)
        if not 0.0 <= min_agreement <= 1.0:
            raise DeployError(f"min_agreement must be in 0..1, not {min_agreement}")
        sample = None
        if sample_file is not None:
            sample = str(Path(sample_file).expanduser().resolve())
            self._check_sample(state, resolved, sample)
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
                strategy=strategy,
            )

        state = self._act(
            "update", begin, plan=plan, reason=f"{state.model} {resolved} as candidate"
        )
        specs = state.instance_specs(state.rollout.candidate, resolved, plan.port,
                                     admin_token=self.admin_token)
        chaos = tuple(faults.serve_args()) if faults is not None else ()
        args = merge_serve_args(*(r.args for r in state.records(state.rollout.stable)), serve_args)
        specs = [replace(spec, extra_args=(*spec.extra_args, *args), faults=chaos) for spec in specs]
        color = state.rollout.candidate
        engine = self._backend(state)
        try:
            for stale in engine.find(self.name):
                # left behind by an update that was killed before it recorded its instance
                if stale.spec.color == color:
                    log.warning("%s: stopping a stale %s instance (%s)", self.name, stale.spec.color,
                                stale.ref)
                    engine.stop(stale)
            instances = start_all(engine, specs, need=state.needed(len(specs)))
        except BackendError as exc:
            self._fail(state, str(exc))
            raise RolloutError(
                f"{self.name}: could not start {resolved} on {color}: {exc}; "
                f"{state.rollout.stable} keeps all traffic"
            ) from exc
        state = self._attach(state, instances)
        if not wait:
            return state
        return self._follow(state, poll, on_tick)

    def _check_sample(self, state: DeploymentState, version: str, sample: str) -> None:
        """Read ``sample`` as verification will, before anything starts (DeployError if bad)."""
        check_sample(state, version, sample)

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
        probe = Probe(state, self._backend(state))
        rollout = flow.advance(state.rollout, probe, now=time.time())
        if rollout == state.rollout and probe.report is None:
            return state
        with self.context.store.transaction(self.name) as txn:
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
            self.context.emit(DeployEvent.of(saved, action, outcome, reason))
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
        table. Colours that still run are left alone.

        An unreadable state file is replaced by the previous state first (kept on every
        write), and the router is restarted, killing what is left of a dead nginx."""
        restarted: list[str] = []
        store = self.context.store
        recovered = ""
        with store.lock(self.name):
            try:
                store.load(self.name)
            except StateCorruptError as exc:
                log.warning("%s: %s", self.name, exc)
                previous = store.recover(self.name)
                recovered = f"recovered the state of revision {previous.revision}; "
        with store.transaction(self.name) as txn:
            state = txn.state
            engine = self._backend(state)
            for record in state.records():
                color = record.color
                old = record.to_instance(state)
                if engine.is_running(old):
                    continue
                engine.stop(old)  # forget the stale record
                instance = engine.start(record.restart_spec(state, self.admin_token))
                try:
                    wait_healthy(engine, instance, timeout)
                except BaseException:
                    with contextlib.suppress(WorkbenchError):
                        engine.stop(instance)
                    txn.save(state.record("restore", "failed", f"{color} did not come back"))
                    raise
                fresh = InstanceRecord.from_instance(instance)
                state = state.with_instances(
                    fresh if r == record else r for r in state.records(color)
                )
                restarted.append(" ".join(filter(None, (color, record.version, record.where))))
            router_was_up = self._router_up(state)
            if restarted or not router_was_up:
                self.context.router(state).apply(routing_table(state))
            what = ", ".join(restarted) or "no instance"
            message = recovered + f"restarted {what}" + ("" if router_was_up else " and the router")
            saved = txn.save(state.record("restore", "ok", message))
        self.context.emit(DeployEvent.of(saved, "restore", "ok", message))
        return saved

    def delete(self, timeout: float = 10.0, *, force: bool = False) -> None:
        """Stop the router and every instance (graceful), then remove the files.

        ``force``: also when the state file is unreadable; what to stop is then taken
        from the previous state, or else from the process records and the router's files.
        """
        store = self.context.store
        with store.lock(self.name):
            try:
                state: DeploymentState | None = store.load(self.name)
            except StateCorruptError:
                if not force:
                    raise
                state = store.load_previous(self.name)
            if state is None:
                self._stop_without_state(timeout)
            else:
                self._stop_everything(state, timeout)
        store.remove(self.name)
        self.context.emit(DeployEvent(self.name, "delete", "ok", "deleted", "deleted"))

    def _stop_everything(self, state: DeploymentState, timeout: float) -> None:
        with contextlib.suppress(RouterError):
            self.context.router(state).stop()
        engine = self._backend(state)
        seen = set()
        for record in state.records():
            seen.add(record.ref)
            with contextlib.suppress(BackendError):
                engine.stop(record.to_instance(state), timeout)
        with contextlib.suppress(BackendError):
            for instance in engine.find(self.name):
                if instance.ref not in seen:
                    engine.stop(instance, timeout)

    def _stop_without_state(self, timeout: float) -> None:
        """Best effort with no state at all: local instances by their records, local nginx."""
        log.warning("%s: no readable state; stopping local instances and nginx it left", self.name)
        with contextlib.suppress(RouterError):
            NginxRouter(self.context.store.directory(self.name) / "router", get_runner()).stop()
        engine = get_backend("process", home=self.context.store.home)
        with contextlib.suppress(BackendError):
            for instance in engine.find(self.name):
                engine.stop(instance, timeout)

    # -- internals -----------------------------------------------------------------------

    def _backend(self, state: DeploymentState) -> Backend:
        return self.context.backend(state)

    def _effects(self, before: DeploymentState, after: DeploymentState) -> DeploymentState:
        """Carry out what changed from ``before`` to ``after``: traffic, then instances.

        Returns ``after`` without the instances that were stopped.
        """
        after, drop = settled(before, after)
        if routing_table(after) != routing_table(before) or not self._router_up(after):
            self.context.router(after).apply(routing_table(after))
        engine = self._backend(after)
        for record in drop:
            try:
                engine.stop(record.to_instance(before))
            except BackendError as exc:
                log.warning("%s: could not stop %s: %s", self.name, record.color, exc)
        return after

    def _router_up(self, state: DeploymentState) -> bool:
        try:
            return self.context.router(state).running
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
        with self.context.store.transaction(self.name) as txn:
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
                txn.save(self._failed(action, before, after, exc))
                raise
            message = reason or rollout.message
            saved = txn.save(after.record(action, "ok", message))
            self._prepare_rollback(saved)
        self.context.emit(DeployEvent.of(saved, action, "ok", message))
        return saved

    def _failed(
        self, action: str, before: DeploymentState, after: DeploymentState, exc: WorkbenchError
    ) -> DeploymentState:
        """The state ``action`` leaves when its effects failed with ``exc``: ``before``,
        unless the router routes as ``after`` says all the same (the brake of
        ``workbench rollback`` sends all traffic to stable, or the new table is installed
        and only its wait failed). Then ``after``'s rollout, with the instances it would
        have stopped still recorded (they run, without traffic), and the failure."""
        intended, _ = settled(before, after)
        table = routing_table(intended)
        router = self.context.router(after)
        try:
            routed = isinstance(router, NginxRouter) and (
                router.table == table
                or (not table.servers(table.candidate) and prepared.braked(router))
            )
        except (RouterError, OSError):
            routed = False
        if not routed:
            return before.record(action, "failed", str(exc))
        stopped = " ".join(f"{r.color} {r.version}" for r in after.records() if r not in intended.records())
        message = (f"{exc}; the router routes as the {action} says all the same"
                   + (f" ({stopped} still runs, without traffic)" if stopped else ""))
        return after.record(action, "failed", message)

    def _prepare_rollback(self, state: DeploymentState) -> None:
        """Keep the router configuration a rollback of ``state`` would install, checked
        (:mod:`~workbench.deploy.prepared`), or none when no rollback could follow; and
        remove the brake files of configurations no longer installed."""
        router = self.context.router(state)
        if not isinstance(router, NginxRouter):
            return
        prepared.tidy(router)
        try:
            rollout = flow.rollback(state.rollout, now=time.time())
        except RolloutError:
            rollout = None
        if rollout is None:
            prepared.discard(router.workdir)
            return
        after, _ = settled(state, replace(state, rollout=rollout))
        lock = self.context.store.directory(self.name) / LOCK_FILE
        # a canary saves at every interval: for its controller's rollback, not the brake's
        canary = state.canary is not None and state.canary.active
        prepared.prepare(router, routing_table(after), -1 if canary else state.revision, lock)

    def _attach(self, state: DeploymentState, instances: Sequence[Instance]) -> DeploymentState:
        """Record the started candidate, unless another process moved the rollout meanwhile."""
        first = instances[0].spec
        with self.context.store.transaction(self.name) as txn:
            current = txn.state
            ok = (
                current.rollout.phase is Phase.STARTING
                and current.plan == state.plan
                and current.rollout.candidate == first.color
            )
            if ok:
                saved = txn.save(current.with_instances(
                    InstanceRecord.from_instance(i) for i in instances
                ))
        if not ok:
            for instance in instances:
                with contextlib.suppress(BackendError):
                    self._backend(state).stop(instance)
            raise RolloutError(
                f"{self.name}: the rollout was changed by another process while "
                f"{first.version} was starting (now {current.phase}); stopped it"
            )
        return saved

    def _fail(self, state: DeploymentState, reason: str) -> None:
        with self.context.store.transaction(self.name) as txn:
            current = txn.state
            if current.rollout.phase is not Phase.STARTING or current.plan != state.plan:
                return
            after = replace(current, rollout=flow.fail(current.rollout, reason, now=time.time()))
            after = self._effects(current, after)
            saved = txn.save(after.record("verify", "failed", reason))
        self.context.emit(DeployEvent.of(saved, "verify", "failed", reason))
