"""DeploymentManager: creates, finds and deletes the deployments under one workbench home.

It also owns what the deployments of one process share: the serving backends (one
object per configuration), the subscribers to deploy events, and version resolution
against the model repository.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.deploy.backends import get_backend
from workbench.deploy.base import check_deployment_name
from workbench.deploy.deployment import Deployment, instance_spec, routing_table
from workbench.deploy.events import DeployEvent, EventCallback, Subscribers
from workbench.deploy.process import free_port, port_in_use
from workbench.deploy.rollout import Phase, Rollout
from workbench.deploy.state import DeploymentState, InstanceRecord, StateStore
from workbench.deploy.verification import wait_healthy
from workbench.errors import DeployError, WorkbenchError

if TYPE_CHECKING:
    from workbench._types import StrPath
    from workbench.deploy.base import Backend
    from workbench.deploy.router import NginxRouter

__all__ = ["BackendFactory", "DeploymentManager", "RouterFactory", "open_deployment"]

BackendFactory = Callable[[str, Mapping[str, str]], "Backend"]
RouterFactory = Callable[[Path], "NginxRouter"]


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
        self._subscribers = Subscribers()

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
        return self._subscribers.subscribe(callback)

    def emit(self, event: DeployEvent) -> None:
        self._subscribers.emit(event)

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
            spec = instance_spec(state, "blue", resolved, instance_port or free_port())
            engine = self.backend(backend, options)
            instance = engine.start(spec)
            try:
                wait_healthy(engine, instance, timeout)
                state = state.with_instance(InstanceRecord.from_instance(instance))
                self.router(name).apply(routing_table(state))
            except BaseException:
                with contextlib.suppress(WorkbenchError):
                    engine.stop(instance)
                with contextlib.suppress(WorkbenchError):
                    self.router(name).stop()
                raise
            state = txn.save(state.record("create", "ok", f"{model} {resolved} live on blue"))
        self.emit(DeployEvent.of(state, "create", "ok", f"{model} {resolved} on blue"))
        return Deployment(self, name)

    def delete(self, name: str) -> None:
        """Stop the router and every instance, then remove the deployment's files."""
        self.get(name).delete()


def open_deployment(name: str, home: StrPath | None = None) -> Deployment:
    """Shortcut: ``DeploymentManager(home).get(name)``."""
    return DeploymentManager(home).get(name)
