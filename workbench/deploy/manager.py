"""DeploymentManager: creates, finds and deletes the deployments under one workbench home.

It also owns what the deployments of one process share: the serving backends and
nginx runners (one object per configuration), the subscribers to deploy events,
and version resolution against the model repository.

Where a deployment's router runs is decided when it is created and persisted as
``state.router``, so every later process builds the same runner and finds the same
nginx: ``"docker"`` (:class:`~workbench.deploy.platforms.docker.router.DockerNginx`, a
container of the instances' image on their engine) for the docker backend on a
local engine, ``"process"`` (:class:`~workbench.deploy.platforms.process.router.LocalNginx`)
otherwise.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.deploy.deployment import DeployContext, Deployment, resolve_version
from workbench.deploy.events import DeployEvent, EventCallback, Subscribers
from workbench.deploy.fleet import check_fleet, describe, is_local, parse_engine, start_all
from workbench.deploy.names import check_deployment_name, check_host, check_port
from workbench.deploy.nginx import NginxRouter
from workbench.deploy.platforms import (
    RUNNERS,
    fleet_backend,
    get_backend,
    get_runner,
    kubernetes_address,
    kubernetes_router,
    state_store,
)
from workbench.deploy.ports import free_port, port_in_use
from workbench.deploy.records import InstanceRecord
from workbench.deploy.rollout.phases import Phase, Rollout
from workbench.deploy.state import DeploymentState, StateStore
from workbench.deploy.tables import routing_table
from workbench.deploy.verification import wait_healthy
from workbench.errors import DeployError, DeployValueError, StateCorruptError, WorkbenchError

if TYPE_CHECKING:
    from workbench._types import StrPath
    from workbench.deploy.backend import Backend
    from workbench.deploy.fleet import Engine
    from workbench.deploy.router import NginxRunner, Router

__all__ = ["BackendFactory", "DeploymentManager", "RouterFactory", "open_deployment"]

BackendFactory = Callable[[str, Mapping[str, str]], "Backend"]
RouterFactory = Callable[[Path], "NginxRouter"]

#: How an instance may run a version (``workbench serve --isolation``).
ISOLATIONS = ("process", "thread")
#: Backend options that say which engine and image a docker router uses.
_DOCKER_ROUTER_OPTIONS = ("docker_host", "image", "known_hosts", "identity_file")


def _local_engine(options: Mapping[str, str]) -> bool:
    return is_local(options.get("docker_host"))


def fleet_of(backend: str, docker_host: str | None, engines: Sequence[Engine]) -> tuple[Engine, ...]:
    """The engines of a new deployment: those given, or a remote ``docker_host`` alone
    (so its instances are recorded at its host's address, not at loopback), or none."""
    if engines and backend != "docker":
        raise DeployValueError(f"engines are Docker engines; they need backend 'docker', not {backend!r}")
    if engines and docker_host:
        raise DeployValueError("give either docker_host or engines, not both")
    if not engines and backend == "docker" and docker_host and not _local_engine(
        {"docker_host": docker_host}
    ):
        return (parse_engine(docker_host),)
    return check_fleet(engines)


def default_router(backend: str, options: Mapping[str, str]) -> str:
    """Where the router of a new deployment runs: ``docker`` beside docker instances on a
    local engine, else ``process``.

    The router container bind-mounts the router's workdir (under the workbench home)
    at the same path, so the engine must see this machine's files: a local socket or
    ``DOCKER_HOST``, or a ``tcp://``/``ssh://`` address of this machine (when the
    workbench itself runs in a container, mount its home at the same path on the
    host). A remote engine (``ssh://`` to another machine) keeps a local nginx,
    which must then reach the instances' addresses from here.
    """
    if backend == "kubernetes":
        # the stable Service's selector and the HTTPRoute's weights, or the nginx router in the
        # cluster; other pods on the host network (no kube-proxy needed) are reached by the
        # workbench's own nginx here
        host_network = options.get("host_network", "").strip().lower() in ("1", "true", "yes", "on")
        in_cluster = options.get("router", "").strip() == "nginx"
        return "process" if host_network and not in_cluster else "kubernetes"
    return "docker" if backend == "docker" and _local_engine(options) else "process"


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
        store: StateStore | None = None,
    ) -> None:
        from workbench.settings import Settings

        settings = Settings.from_env()
        self.home = Path(home) if home is not None else settings.home
        self.repo = Path(repo) if repo is not None else settings.repo
        self.store = store if store is not None else state_store(self.home, lock_timeout)
        self._backend_factory = backend_factory
        self._router_factory = router_factory
        self._backends: dict[tuple[str, tuple[tuple[str, str], ...]], Backend] = {}
        self._runners: dict[tuple[str, tuple[tuple[str, str], ...]], NginxRunner] = {}
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

    def close(self) -> None:
        """Close the backends' engine connections (e.g. SSH to remote engines); they
        reopen on next use."""
        for backend in self._backends.values():
            close = getattr(backend, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    def runner(self, state: DeploymentState | None) -> NginxRunner:
        """The nginx runner of a deployment's router (one object per configuration).

        ``state.router`` names it; a docker router uses the engine and image of the
        deployment's instances (its ``backend_options``). No state: a local process.
        """
        name = state.router if state is not None else "process"
        options: dict[str, str] = {}
        if state is not None and name == "docker":
            options = {k: v for k, v in state.backend_options.items() if k in _DOCKER_ROUTER_OPTIONS}
        key = (name, tuple(sorted(options.items())))
        if key not in self._runners:
            self._runners[key] = get_runner(name, **options)
        return self._runners[key]

    def router(self, name: str, state: DeploymentState | None = None) -> Router:
        """The router of deployment ``name``, run where its ``state`` says (read if not given)."""
        workdir = self.store.directory(name) / "router"
        if self._router_factory is not None:
            return self._router_factory(workdir)
        if state is None and self.store.exists(name):
            state = self.store.load(name)
        if state is not None and state.router == "kubernetes":
            return kubernetes_router(name, self.backend(state.backend, state.backend_options), workdir)
        return NginxRouter(workdir, self.runner(state))

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(DeployEvent)`` after every action; returns an unsubscribe function."""
        return self._subscribers.subscribe(callback)

    def emit(self, event: DeployEvent) -> None:
        self._subscribers.emit(event)

    def resolve_version(self, model: str, ref: str) -> str:
        """A version string for ``ref`` (a version, or an alias such as ``stable``)."""
        return resolve_version(self.repo, model, ref)

    def fleet_backend(self, state: DeploymentState) -> Backend:
        """The backend of a deployment's instances: one per engine of its fleet, if it has one."""
        if not state.fleet:
            return self.backend(state.backend, state.backend_options)
        return fleet_backend({
            e.url: self.backend(state.backend, {**state.backend_options, "docker_host": e.url})
            for e in state.fleet
        })

    @property
    def context(self) -> DeployContext:
        """What the deployments of this manager act through."""
        return DeployContext(
            store=self.store,
            backend=self.fleet_backend,
            router=lambda state: self.router(state.name, state),
            events=self._subscribers,
        )

    # -- the API -------------------------------------------------------------------------

    def names(self) -> list[str]:
        return self.store.names()

    def list(self) -> list[DeploymentState]:
        return self.store.all()

    def get(self, name: str) -> Deployment:
        """An existing deployment (StateError if there is none of that name)."""
        check_deployment_name(name)
        with contextlib.suppress(StateCorruptError):  # restore and delete --force handle it
            self.store.load(name)
        return Deployment(self.context, name)

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
        router: str | None = None,
        engines: Sequence[Engine] = (),
        min_ready: int = 0,
        serve_args: Sequence[str] = (),
        isolation: str | None = None,
    ) -> Deployment:
        """Start ``model`` ``version`` as blue, wait until it is ready and healthy, put
        the router on ``port`` in front of it. Nothing is left behind if any step fails.

        ``backend_options`` go to the backend's constructor and are persisted (e.g.
        ``{"image": "paddle-workbench:gpu"}`` for docker); ``docker_host`` is one of them.
        ``router``: where nginx runs, ``process`` or ``docker`` (a container of the
        same image on the same engine); None picks :func:`default_router`.
        ``engines``: the Docker engines each colour spans (:mod:`workbench.deploy.fleet`),
        with their replicas; a remote ``docker_host`` alone is a fleet of one.
        ``min_ready``: instances of a colour that must be ready (0: all).
        ``serve_args``: more ``workbench serve`` options for blue, recorded with its
        instances (e.g. ``--segment-by``, so that a canary's per-segment rules can compare
        with stable's segments; later candidates inherit them).
        ``isolation``: how each instance runs a version, ``process`` (worker processes,
        ``workbench serve``'s default) or ``thread`` (in the instance's own process: an OCR
        pipeline's three stages start in seconds, not minutes, on a small CPU); recorded
        like ``serve_args``, so later candidates run the same way.
        """
        # every value is checked before anything is made, so a mistake leaves nothing behind
        check_deployment_name(name)
        host = check_host(host, "host")
        if port is not None:
            check_port(port, "port")
        if instance_port is not None:
            check_port(instance_port, "instance port")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise DeployValueError(f"workers must be a positive integer, not {workers!r}")
        if isolation is not None:
            if isolation not in ISOLATIONS:
                raise DeployValueError(f"isolation is {' or '.join(ISOLATIONS)}, not {isolation!r}")
            serve_args = (*serve_args, "--isolation", isolation)
        resolved = self.resolve_version(model, version)
        options = {k: str(v) for k, v in (backend_options or {}).items() if v is not None}
        if docker_host:
            options["docker_host"] = docker_host
        router = router or (
            "process" if engines else default_router(backend, options)
        )
        if router not in (*RUNNERS, "kubernetes"):
            raise DeployError(f"unknown router {router!r}; choose one of: {', '.join(RUNNERS)}")
        if router == "docker" and (engines or not _local_engine(options)):
            where = ", ".join(e.url for e in engines) or describe(options.get("docker_host"))
            raise DeployError(
                "the docker router needs a Docker engine on this machine (it mounts the "
                f"router's files), not {where}; use router='process'"
            )
        fleet = fleet_of(backend, docker_host, engines)
        if fleet:
            options.pop("docker_host", None)  # each engine of the fleet names its own
        existed = self.store.directory(name).exists()
        try:
            state = self._create(name, model, resolved, options, router, public_port=port,
                                 host=host, backend=backend, device=device, workers=workers,
                                 instance_port=instance_port, timeout=timeout,
                                 fleet=fleet, min_ready=min_ready, serve_args=tuple(serve_args))
        except BaseException:
            if not existed and not self.store.exists(name):
                self.store.remove(name)  # not even an empty directory stays behind
            raise
        self.emit(DeployEvent.of(state, "create", "ok", f"{model} {resolved} on blue"))
        return Deployment(self.context, name)

    def _create(
        self,
        name: str,
        model: str,
        resolved: str,
        options: dict[str, str],
        router: str,
        *,
        public_port: int | None,
        host: str,
        backend: str,
        device: str,
        workers: int,
        instance_port: int | None,
        timeout: float,
        fleet: tuple[Engine, ...] = (),
        min_ready: int = 0,
        serve_args: tuple[str, ...] = (),
    ) -> DeploymentState:
        with self.store.transaction(name) as txn:
            if txn.exists:
                raise DeployError(f"deployment {name!r} already exists ({txn.state.url})")
            if router == "kubernetes":  # the stable Service is the public address
                host, public_port = kubernetes_address(name, self.backend(backend, options))
            public = public_port or free_port(host)
            if router != "kubernetes" and port_in_use(public, host):
                raise DeployError(f"cannot create {name!r}: port {public} on {host} is in use")
            state = DeploymentState(
                name=name,
                model=model,
                repo=str(self.repo.expanduser().resolve()),
                port=public,
                host=host,
                backend=backend,
                backend_options=options,
                router=router,
                device=device,
                workers=workers,
                rollout=Rollout(phase=Phase.STABLE, stable="blue", since=time.time()),
                fleet=fleet,
                min_ready=min_ready,
            )
            specs = state.instance_specs("blue", resolved, instance_port or free_port(),
                                         admin_token=self.store.admin_token(name))
            specs = [replace(spec, extra_args=(*spec.extra_args, *serve_args)) for spec in specs]
            engine = self.fleet_backend(state)
            instances = start_all(engine, specs, need=state.needed(len(specs)),
                                  ready=lambda i: wait_healthy(engine, i, timeout))
            try:
                state = state.with_instances(InstanceRecord.from_instance(i) for i in instances)
                self.router(name, state).apply(routing_table(state))
            except BaseException:
                for instance in instances:
                    with contextlib.suppress(WorkbenchError):
                        engine.stop(instance)
                with contextlib.suppress(WorkbenchError):
                    self.router(name, state).stop()
                raise
            return txn.save(state.record("create", "ok", f"{model} {resolved} live on blue"))

    def delete(self, name: str, *, force: bool = False) -> None:
        """Stop the router and every instance, then remove the deployment's files.

        ``force``: also when its state is unreadable (see :meth:`Deployment.delete`).
        """
        self.get(name).delete(force=force)


def open_deployment(name: str, home: StrPath | None = None) -> Deployment:
    """Shortcut: ``DeploymentManager(home).get(name)``."""
    return DeploymentManager(home).get(name)
