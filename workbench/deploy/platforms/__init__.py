"""The platforms a deployment runs on, and the factories that pick one by name.

Each platform is one folder behind the core's seams (:class:`~workbench.deploy.backend.Backend`,
:class:`~workbench.deploy.router.Router` and its ``NginxRunner``):

- :mod:`.process`: serving instances as local processes, nginx as a local process;
- :mod:`.docker`: containers on one or several Docker engines (a fleet), nginx in a container;
- :mod:`.kubernetes`: a Deployment per colour, traffic through Services and an HTTPRoute,
  state in a ConfigMap, manifests exported for GitOps.

This module is the only one of the deploy core that names a platform. It imports each
platform when asked for it, so a process deployment needs no Docker SDK or Kubernetes
client (and ``workbench --help`` stays instant). The platforms never import each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.deploy.state import StateStore
from workbench.errors import BackendError, DeployError, RouterError

if TYPE_CHECKING:
    from workbench.deploy.backend import Backend
    from workbench.deploy.router import NginxRunner, Router

__all__ = [
    "BACKENDS",
    "RUNNERS",
    "fleet_backend",
    "get_backend",
    "get_runner",
    "kubernetes_address",
    "kubernetes_router",
    "state_store",
]

BACKENDS: tuple[str, ...] = ("process", "docker", "kubernetes")


def get_backend(name: str = "process", **options: Any) -> Backend:
    """A backend by name; ``options`` go to its constructor.

    ``process``: ``home``, ``command``, ``env``. ``docker``: whatever
    :class:`~workbench.deploy.platforms.docker.backend.DockerBackend` takes (e.g. ``docker_host``),
    imported only when asked for, so the process backend needs no Docker SDK.
    Options that are None are dropped, so callers can pass CLI values through.
    """
    options = {k: v for k, v in options.items() if v is not None}
    if name == "process":
        from workbench.deploy.platforms.process.backend import ProcessBackend

        options.pop("docker_host", None)
        return ProcessBackend(**options)
    if name == "docker":
        try:
            from workbench.deploy.platforms.docker.backend import DockerBackend
        except ModuleNotFoundError as exc:
            if exc.name != "workbench.deploy.platforms.docker.backend":
                raise
            raise BackendError("the docker backend is not available in this build") from exc
        backend: Backend = DockerBackend(**options)
        return backend
    if name == "kubernetes":
        # the kubernetes client itself is imported when the backend first talks to the API
        from workbench.deploy.platforms.kubernetes.backend import KubernetesBackend

        return KubernetesBackend(**options)
    raise BackendError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")


RUNNERS: tuple[str, ...] = ("process", "docker")


def get_runner(name: str = "process", **options: Any) -> NginxRunner:
    """An nginx runner by name; ``options`` go to its constructor.

    ``process``: :class:`~workbench.deploy.platforms.process.router.LocalNginx` (``binary``...).
    ``docker``: :class:`~workbench.deploy.platforms.docker.router.DockerNginx` (``docker_host``,
    ``image``...), imported only when asked for. Options that are None are dropped.
    """
    options = {k: v for k, v in options.items() if v is not None}
    if name == "process":
        from workbench.deploy.platforms.process.router import LocalNginx

        return LocalNginx(**options)
    if name == "docker":
        from workbench.deploy.platforms.docker.router import DockerNginx

        return DockerNginx(**options)
    raise RouterError(f"unknown router runner {name!r}; choose one of: {', '.join(RUNNERS)}")


def fleet_backend(backends: Mapping[str, Backend]) -> Backend:
    """One backend over several Docker engines (engine URL -> its backend)."""
    from workbench.deploy.platforms.docker.fleet import FleetBackend

    return FleetBackend(backends)


# -- Kubernetes: state in a ConfigMap, traffic through Services ---------------------------


def state_store(home: Path, lock_timeout: float) -> StateStore:
    """Where deployment states live: files under ``home``, or the cluster when
    ``WORKBENCH_STATE=kubernetes`` (see :func:`.kubernetes.store.store_from_env`)."""
    from workbench.deploy.platforms.kubernetes.store import store_from_env

    return store_from_env(home, lock_timeout=lock_timeout) or StateStore(home, lock_timeout=lock_timeout)


def kubernetes_router(name: str, backend: Backend, workdir: Path) -> Router:
    from workbench.deploy.platforms.kubernetes.backend import KubernetesBackend
    from workbench.deploy.platforms.kubernetes.router import KubernetesRouter

    if not isinstance(backend, KubernetesBackend):
        raise DeployError(f"deployment {name!r} routes in Kubernetes but runs on {backend.name}")
    return KubernetesRouter(name, backend, workdir=workdir)


def kubernetes_address(name: str, backend: Backend) -> tuple[str, int]:
    """A deployment's public address: the stable Service's in-cluster host and port, or
    its in-cluster nginx router's (see ``KubernetesBackend.public_address``)."""
    from workbench.deploy.platforms.kubernetes.backend import KubernetesBackend

    assert isinstance(backend, KubernetesBackend)
    return backend.public_address(name)
