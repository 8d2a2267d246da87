"""The serving-backend seam: what to run (:class:`InstanceSpec`), what runs (:class:`Instance`).

A :class:`Backend` runs ``workbench serve`` somewhere (a local process, a container
on a local or remote Docker engine) and reports where it listens. It knows nothing
of routing or rollouts; the rollout asks it for instances and talks to them over HTTP.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from workbench.deploy.names import check_color, check_deployment_name, check_port

if TYPE_CHECKING:
    from collections.abc import Mapping

    from workbench._types import Color

def check_instance_address(color: str, port: int) -> None:
    """Raise DeployValueError unless ``color`` is blue or green and ``port`` is a TCP port."""
    check_color(color)
    check_port(port)


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
    extra_args: tuple[str, ...] = ()  # more ``workbench serve`` options (e.g. --segment-by)
    #: Chaos-testing options (``--fault-error-rate`` ...): a candidate's only, never stable's.
    faults: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    engine: str = ""  # the Docker engine it runs on ("" = the backend's default)
    replica: int = 0  # which of the colour's instances on that engine (0, 1, ...)

    def __post_init__(self) -> None:
        check_deployment_name(self.deployment)
        check_instance_address(self.color, self.port)
        if isinstance(self.replica, bool) or not isinstance(self.replica, int) or self.replica < 0:
            raise ValueError(f"replica must be a non-negative integer, not {self.replica!r}")

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
        return [*args, *self.extra_args, *self.faults]

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON, as backends record it (pid file, container labels).

        ``admin_token`` and ``env`` are left out: they may hold secrets.
        """
        return {
            "deployment": self.deployment,
            "color": self.color,
            "model": self.model,
            "version": self.version,
            "repo": self.repo,
            "port": self.port,
            "host": self.host,
            "device": self.device,
            "workers": self.workers,
            "extra_args": list(self.extra_args),
            "faults": list(self.faults),
            "engine": self.engine,
            "replica": self.replica,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InstanceSpec:
        """Read back :meth:`to_dict` (numbers may come as strings, e.g. from labels)."""
        return cls(
            deployment=str(data["deployment"]),
            color=check_color(str(data["color"])),
            model=str(data["model"]),
            version=str(data["version"]),
            repo=str(data["repo"]),
            port=int(data["port"]),
            host=str(data.get("host", "127.0.0.1")),
            device=str(data.get("device", "cpu")),
            workers=int(data.get("workers", 1)),
            extra_args=tuple(str(a) for a in data.get("extra_args", ())),
            faults=tuple(str(a) for a in data.get("faults", ())),
            engine=str(data.get("engine", "")),
            replica=int(data.get("replica", 0)),
        )


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


class Readiness(NamedTuple):
    """An instance as its platform sees it (e.g. a Kubernetes Deployment's status)."""

    running: bool
    ready: bool
    error: str = ""  # why it is not ready


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

    def readiness(self, instance: Instance) -> Readiness | None:
        """Whether the instance runs and is ready, as the platform itself knows it; None
        (the default) when the caller is to ask the instance over HTTP instead.

        Raises BackendError when the engine cannot be asked.
        """
        return None

    @abstractmethod
    def logs(self, instance: Instance, tail: int = 200) -> str:
        """The last ``tail`` lines of the instance's output."""

    @abstractmethod
    def find(self, deployment: str) -> list[Instance]:
        """Rediscover the running instances of a deployment (after a restart)."""
