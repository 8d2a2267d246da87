"""Pick a serving backend by name: ``process`` (the embedded default), ``docker`` or ``kubernetes``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workbench.errors import BackendError

if TYPE_CHECKING:
    from workbench.deploy.backends.base import Backend

BACKENDS: tuple[str, ...] = ("process", "docker", "kubernetes")


def get_backend(name: str = "process", **options: Any) -> Backend:
    """A backend by name; ``options`` go to its constructor.

    ``process``: ``home``, ``command``, ``env``. ``docker``: whatever
    :class:`~workbench.deploy.backends.docker.DockerBackend` takes (e.g. ``docker_host``),
    imported only when asked for, so the process backend needs no Docker SDK.
    Options that are None are dropped, so callers can pass CLI values through.
    """
    options = {k: v for k, v in options.items() if v is not None}
    if name == "process":
        from workbench.deploy.backends.process import ProcessBackend

        options.pop("docker_host", None)
        return ProcessBackend(**options)
    if name == "docker":
        try:
            from workbench.deploy.backends.docker import DockerBackend
        except ModuleNotFoundError as exc:
            if exc.name != "workbench.deploy.backends.docker":
                raise
            raise BackendError("the docker backend is not available in this build") from exc
        backend: Backend = DockerBackend(**options)
        return backend
    if name == "kubernetes":
        # the kubernetes client itself is imported when the backend first talks to the API
        from workbench.deploy.backends.kubernetes import KubernetesBackend

        return KubernetesBackend(**options)
    raise BackendError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
