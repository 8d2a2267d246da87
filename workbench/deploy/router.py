"""The router seam: what the rollout asks of a router, and where its nginx runs.

A :class:`Router` takes a :class:`~workbench.deploy.routing.RoutingTable` and
makes it live; :class:`~workbench.deploy.nginx.NginxRouter` is the real one,
:class:`NopRouter` keeps the table in memory for pure-logic tests.

An :class:`NginxRunner` runs the router's nginx somewhere (a local process, a
container) on configurations the router renders and installs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pathlib import Path

    from workbench.deploy.routing import RoutingTable


@runtime_checkable
class Router(Protocol):
    """Makes a routing table live; one per deployment."""

    def apply(self, table: RoutingTable) -> None:
        """Install ``table`` (start the router if needed); new requests see it on return."""
        ...

    @property
    def running(self) -> bool:
        """Whether the router answers."""
        ...

    def stop(self) -> None:
        """Stop the router. Idempotent."""
        ...


class NopRouter:
    """A router that only remembers: the applied tables, in order (for pure-logic tests)."""

    def __init__(self) -> None:
        self.tables: list[RoutingTable] = []
        self._running = False

    def __repr__(self) -> str:
        return f"NopRouter(applied={len(self.tables)}, running={self._running})"

    @property
    def table(self) -> RoutingTable | None:
        return self.tables[-1] if self.tables else None

    def apply(self, table: RoutingTable) -> None:
        self.tables.append(table)
        self._running = True

    @property
    def running(self) -> bool:
        return self._running

    def stop(self) -> None:
        self._running = False


@runtime_checkable
class NginxRunner(Protocol):
    """Where the router's nginx master runs: a local process or a container.

    Implementations: :class:`~workbench.deploy.platforms.process.router.LocalNginx` and
    :class:`~workbench.deploy.platforms.docker.router.DockerNginx`; ``get_runner`` in
    :mod:`workbench.deploy.platforms` picks one by name.

    Every method takes ``conf``, the path of a configuration file; its directory
    (``conf.parent``) is the router's workdir and holds everything the rendered
    configuration names, by absolute path: ``nginx.pid``, ``error.log``,
    ``access.log`` and the temp directories. Pass it to nginx as ``-c conf -p
    conf.parent/``. The configuration says ``daemon off``: the master stays in the
    foreground (what a container's main process needs).

    :class:`~workbench.deploy.nginx.NginxRouter` runs two masters through one
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
