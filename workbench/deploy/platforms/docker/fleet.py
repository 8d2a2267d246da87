"""One backend over several engines: each instance goes to the engine its spec names.

:class:`FleetBackend` holds one backend per engine URL (e.g. a
:class:`~workbench.deploy.platforms.docker.backend.DockerBackend` per ``ssh://`` host) and sends
each call to the engine of the instance (``spec.engine``). :meth:`FleetBackend.find`
asks every engine and leaves out those it cannot reach (logged), so one dead host does
not hide the others.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from workbench.deploy.backend import Backend, Instance, InstanceSpec, Readiness
from workbench.errors import BackendError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["FleetBackend"]

log = logging.getLogger(__name__)


class FleetBackend(Backend):
    """Dispatches to ``backends[spec.engine]`` (BackendError for an engine it does not know)."""

    def __init__(self, backends: Mapping[str, Backend]) -> None:
        if not backends:
            raise ValueError("a fleet needs at least one engine")
        self.backends = dict(backends)
        self.name = next(iter(self.backends.values())).name

    def __repr__(self) -> str:
        return f"FleetBackend({', '.join(map(repr, self.backends.values()))})"

    def engine(self, url: str) -> Backend:
        """The backend of engine ``url``."""
        try:
            return self.backends[url]
        except KeyError:
            raise BackendError(
                f"engine {url or '(default)'} is not one of this deployment's engines "
                f"({', '.join(u or '(default)' for u in self.backends)})"
            ) from None

    def start(self, spec: InstanceSpec) -> Instance:
        return self.engine(spec.engine).start(spec)

    def stop(self, instance: Instance, timeout: float = 10.0) -> None:
        self.engine(instance.spec.engine).stop(instance, timeout)

    def is_running(self, instance: Instance) -> bool:
        return self.engine(instance.spec.engine).is_running(instance)

    def readiness(self, instance: Instance) -> Readiness | None:
        return self.engine(instance.spec.engine).readiness(instance)

    def logs(self, instance: Instance, tail: int = 200) -> str:
        return self.engine(instance.spec.engine).logs(instance, tail)

    def find(self, deployment: str) -> list[Instance]:
        found: list[Instance] = []
        for url, backend in self.backends.items():
            try:
                instances = backend.find(deployment)
            except BackendError as exc:
                log.warning("%s: cannot list the instances on %s: %s", deployment, url, exc)
                continue
            found.extend(
                dataclasses.replace(i, spec=dataclasses.replace(i.spec, engine=url))
                for i in instances
            )
        return found

    def close(self) -> None:
        for backend in self.backends.values():
            close = getattr(backend, "close", None)
            if close is not None:
                close()
