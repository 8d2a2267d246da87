"""The deploy layer's seams: serving backends and nginx runners.

A :class:`Backend` runs ``workbench serve`` somewhere (a local process, a container
on a local or remote Docker engine) and reports where it listens. It knows nothing
of routing or rollouts; the rollout asks it for instances and talks to them over HTTP.

An :class:`NginxRunner` runs the router's nginx somewhere (a local process, a
container) on configurations the router renders and installs.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pathlib import Path

    from workbench._types import Color

COLORS: tuple[Color, Color] = ("blue", "green")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")


def check_deployment_name(name: str) -> str:
    """Return ``name`` if it is a valid deployment name (DNS-label-like), else raise ValueError."""
    if not _NAME.match(name):
        raise ValueError(
            f"invalid deployment name {name!r}: use 1-40 lowercase letters, digits and '-', "
            "starting with a letter"
        )
    return name


def check_instance_address(color: str, port: int) -> None:
    """Raise ValueError unless ``color`` is blue or green and ``port`` is a TCP port."""
    if color not in COLORS:
        raise ValueError(f"color must be one of {COLORS}, not {color!r}")
    if not 0 < port < 65536:
        raise ValueError(f"port must be in 1..65535, not {port}")


@dataclass(frozen=True)
class InstanceSpec:
    """What to run: one serving instance of one model version, for one colour."""

    deployment: str
    color: Color
    model: str
    version: str
    repo: str  # model repository path (mounted read-only into containers)
    port: int
    host: str = "127.0.0.1"
    device: str = "cpu"
    workers: int = 1
    admin_token: str | None = None
    extra_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        check_deployment_name(self.deployment)
        check_instance_address(self.color, self.port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def serve_args(self) -> list[str]:
        """Arguments after ``workbench`` that start this instance."""
        args = [
            "serve",
            "--repo", self.repo,
            "--model", self.model,
            "--version", self.version,
            "--host", self.host,
            "--port", str(self.port),
            "--device", self.device,
            "--workers", str(self.workers),
        ]
        return [*args, *self.extra_args]


@dataclass(frozen=True)
class Instance:
    """A running (or last known) serving instance started by a backend."""

    spec: InstanceSpec
    backend: str  # "process" | "docker"
    ref: str  # pid for processes, container id for Docker
    labels: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def url(self) -> str:
        return self.spec.url


class Backend(ABC):
    """Starts, finds and stops serving instances."""

    name: str

    @abstractmethod
    def start(self, spec: InstanceSpec) -> Instance:
        """Start an instance and return once it runs (not necessarily ready).

        Raises BackendError with a clear message when it cannot start (port in
        use, image missing, process or container exited during start).
        """

    @abstractmethod
    def stop(self, instance: Instance, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM, drain), kill after ``timeout``. Idempotent."""

    @abstractmethod
    def is_running(self, instance: Instance) -> bool:
        """Whether the process or container is still running."""

    @abstractmethod
    def logs(self, instance: Instance, tail: int = 200) -> str:
        """The last ``tail`` lines of the instance's output."""

    @abstractmethod
    def find(self, deployment: str) -> list[Instance]:
        """Rediscover the running instances of a deployment (after a restart)."""


@runtime_checkable
class NginxRunner(Protocol):
    """Where the router's nginx master runs: a local process or a container.

    Implementations: :class:`~workbench.deploy.nginx_local.LocalNginx` and
    :class:`~workbench.deploy.docker_router.DockerNginx`; ``get_runner`` in
    :mod:`workbench.deploy.router` picks one by name.

    Every method takes ``conf``, the path of a configuration file; its directory
    (``conf.parent``) is the router's workdir and holds everything the rendered
    configuration names, by absolute path: ``nginx.pid``, ``error.log``,
    ``access.log`` and the temp directories. Pass it to nginx as ``-c conf -p
    conf.parent/``. The configuration says ``daemon off``: the master stays in the
    foreground (what a container's main process needs).

    :class:`~workbench.deploy.router.NginxRouter` runs two masters through one
    runner, one per directory: the router (``<workdir>/nginx.conf``) and the front
    (``<workdir>/front/nginx.conf``); they meet on the unix socket
    ``<workdir>/front/router.sock``. Key everything on ``conf.parent``.

    A runner that runs nginx elsewhere (``DockerNginx``) must make ``conf.parent``
    visible at the *same absolute path* (a bind mount) and see the same network
    (host networking), so the addresses in the configuration mean the same thing
    there. Runners are stateless about which workdir they serve: a new runner
    object (another CLI process) must find a master started by an earlier one,
    from ``conf.parent`` alone (pid file, container label or name).

    Errors are :class:`~workbench.errors.RouterError` carrying nginx's own output.
    """

    #: Rendered into nginx's ``user`` directive: the user the workers run as. Set it
    #: when the master runs as root, since workers otherwise run as ``nobody`` and
    #: cannot use a private workdir. None: no directive.
    worker_user: str | None

    def check(self, conf: Path) -> None:
        """``nginx -t`` on ``conf``; RouterError with nginx's message if it fails."""
        ...

    def start(self, conf: Path) -> None:
        """Start a master on ``conf``; return once it and its workers run.

        No-op when one already runs for this workdir. RouterError with nginx's
        output when it exits during start (e.g. its port is taken).
        """
        ...

    def reload(self, conf: Path) -> None:
        """Graceful reload (SIGHUP to the master, i.e. ``nginx -s reload``).

        Return only once the old workers stopped accepting connections (they may
        still finish requests in flight), so every new connection sees the new
        configuration. RouterError if nginx is not running or rejected the reload
        (the master then keeps the previous configuration).
        """
        ...

    def stop(self, conf: Path, timeout: float = 10.0) -> None:
        """Graceful stop (SIGQUIT: finish requests in flight), kill after ``timeout``.

        Idempotent: a master that is not running is fine.
        """
        ...

    def is_running(self, conf: Path) -> bool:
        """Whether a master for this workdir runs."""
        ...
