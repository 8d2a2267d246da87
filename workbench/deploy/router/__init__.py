"""The router: routing tables in, a checked and reloaded nginx out.

:mod:`~workbench.deploy.router.base` (the :class:`Router` and ``NginxRunner`` seams,
:class:`NopRouter`), :mod:`~workbench.deploy.router.table` (the routing table and its
render), :mod:`~workbench.deploy.router.nginx` (:class:`NginxRouter`) and the nginx
runners :mod:`~workbench.deploy.router.local` and :mod:`~workbench.deploy.router.docker`,
picked by name with :func:`get_runner`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workbench.errors import RouterError

if TYPE_CHECKING:
    from workbench.deploy.router.base import NginxRunner

RUNNERS: tuple[str, ...] = ("process", "docker")


def get_runner(name: str = "process", **options: Any) -> NginxRunner:
    """An nginx runner by name; ``options`` go to its constructor.

    ``process``: :class:`~workbench.deploy.router.local.LocalNginx` (``binary``...).
    ``docker``: :class:`~workbench.deploy.router.docker.DockerNginx` (``docker_host``,
    ``image``...), imported only when asked for. Options that are None are dropped.
    """
    options = {k: v for k, v in options.items() if v is not None}
    if name == "process":
        from workbench.deploy.router.local import LocalNginx

        return LocalNginx(**options)
    if name == "docker":
        from workbench.deploy.router.docker import DockerNginx

        return DockerNginx(**options)
    raise RouterError(f"unknown router runner {name!r}; choose one of: {', '.join(RUNNERS)}")
