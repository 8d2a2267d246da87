"""The serving-backend seam: something that starts and stops serving instances.

A backend runs ``workbench serve`` somewhere (a local process, a container on a
local or remote Docker engine) and reports where it listens. It knows nothing of
routing or rollouts; the rollout asks it for instances and talks to them over HTTP.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
        if self.color not in COLORS:
            raise ValueError(f"color must be one of {COLORS}, not {self.color!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, not {self.port}")

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
