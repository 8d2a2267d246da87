"""The nginx router of a deployment: a routing table in, a checked and reloaded nginx out.

:meth:`NginxRouter.apply` installs the configurations :mod:`workbench.deploy.routing`
renders from a :class:`~workbench.deploy.routing.RoutingTable`, the safe way::

    render -> write temp files in the workdir -> `nginx -t` on each
           -> os.replace over the installed files -> start, or graceful reload
           -> wait until new requests see the new table

A configuration that fails the check is never installed; the error carries
nginx's own message. Switching and rolling back are one ``apply`` (one reload).

Where nginx runs is the :class:`~workbench.deploy.router.NginxRunner` seam:
:class:`~workbench.deploy.platforms.process.router.LocalNginx` (a local process, the default) or
:class:`~workbench.deploy.platforms.docker.router.DockerNginx` (a container);
:func:`~workbench.deploy.platforms.get_runner` picks one by name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

import filelock

from workbench._fs import atomic_path, write_atomic
from workbench.deploy.platforms import get_runner
from workbench.deploy.routing import (
    ACCESS_LOG,
    CONF_FILE,
    ERROR_LOG,
    FRONT_DIR,
    SOCKET_FILE,
    RoutingTable,
    brake_file,
    hostport,
    render_front,
    render_nginx,
)
from workbench.errors import RouterError

if TYPE_CHECKING:
    from workbench._types import StrPath
    from workbench.deploy.router import NginxRunner

__all__ = ["NginxRouter"]

logger = logging.getLogger(__name__)

TABLE_FILE = "table.json"  # in the workdir: the installed table, read back by `table`
_LOCK_FILE = ".router.lock"

def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.create_server((host, port), family=family):
            pass
    except OSError as exc:
        raise RouterError(
            f"cannot listen on {hostport(host, port)}: {exc.strerror or exc} "
            "(is another process using this port?)"
        ) from exc


def _write_candidate(candidates: contextlib.ExitStack, conf: Path, text: str) -> Path:
    """``text`` in a temp file beside ``conf``, put in place when ``candidates`` closes."""
    try:
        tmp = candidates.enter_context(atomic_path(conf))
        tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise RouterError(f"cannot write a candidate for {conf}: {exc}") from exc
    return tmp


class NginxRouter:
    """The nginx router of one deployment; all its files live in ``workdir``.

    Two nginx masters, started through the same runner: the **router**
    (``<workdir>/nginx.conf``, :func:`render_nginx`) routes, and the **front**
    (``<workdir>/front/nginx.conf``, :func:`render_front`) owns the public
    address and forwards to the router's unix socket. A switch reloads only the
    router; the front keeps the clients' connections, so none of them sees the
    reload (a plain nginx reload closes idle kept-alive connections, and a client
    that sends on one at that instant gets an error).

    ``apply(table)`` is the only way a configuration gets installed. Several
    processes (a notebook, an SSH shell) may share one workdir: applies are
    serialised by a file lock, and :attr:`table` reads back what is installed.
    """

    def __init__(
        self, workdir: StrPath, runner: NginxRunner | None = None, *, ready_timeout: float = 5.0
    ) -> None:
        self.workdir = Path(workdir).expanduser().resolve()
        self.runner: NginxRunner = runner if runner is not None else get_runner("process")
        self.ready_timeout = ready_timeout

    def __repr__(self) -> str:
        return f"NginxRouter({str(self.workdir)!r}, runner={self.runner!r})"

    @property
    def conf_path(self) -> Path:
        """The installed router configuration."""
        return self.workdir / CONF_FILE

    @property
    def front_conf_path(self) -> Path:
        """The installed front configuration."""
        return self.workdir / FRONT_DIR / CONF_FILE

    @property
    def access_log(self) -> Path:
        """JSON lines, one per request: color, routed, status, upstream, upstream_response_time..."""
        return self.workdir / ACCESS_LOG

    @property
    def error_log(self) -> Path:
        return self.workdir / ERROR_LOG

    @property
    def table(self) -> RoutingTable | None:
        """The installed routing table, or None before the first ``apply``."""
        try:
            data = json.loads((self.workdir / TABLE_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise RouterError(f"cannot read {self.workdir / TABLE_FILE}: {exc}") from exc
        return RoutingTable.from_dict(data)

    @property
    def running(self) -> bool:
        """Whether both the front and the router run."""
        return all(p.exists() and self.runner.is_running(p) for p in self._confs)

    @property
    def url(self) -> str:
        """Where clients reach the router, e.g. ``http://127.0.0.1:8080``."""
        table = self.table
        if table is None:
            raise RouterError(f"no routing table applied in {self.workdir} yet")
        return table.url

    def render(self, table: RoutingTable) -> str:
        """The router configuration ``apply(table)`` installs (a hook: ``apply`` calls it)."""
        return render_nginx(table, workdir=self.workdir, user=self.runner.worker_user)

    def apply(self, table: RoutingTable) -> None:
        """Install ``table`` and return once new requests are routed by it.

        Renders both configurations, checks each with ``nginx -t`` and only then
        replaces them atomically; starts nginx if it is not running, else reloads
        the router gracefully (requests in flight finish where they started; the
        front only reloads when its listen address or limits change). Raises
        RouterError, with nginx's message, when a check, the start or the reload
        fails; the previously installed configuration then stays in place and
        keeps serving.
        """
        if not isinstance(table, RoutingTable):
            raise TypeError(f"expected a RoutingTable, not {type(table).__name__}")
        started = time.monotonic()
        user = self.runner.worker_user
        texts = {
            self.conf_path: self.render(table),
            self.front_conf_path: render_front(table, workdir=self.workdir, user=user),
        }
        self.front_conf_path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock():
            was_running = {conf: conf.exists() and self.runner.is_running(conf) for conf in texts}
            self._clear_dead(was_running)
            changed = {conf: not conf.exists() or conf.read_text() != text for conf, text in texts.items()}
            changed[self.conf_path] = True  # the router always reloads: that is the switch
            installed = self.table
            # a table applied routes as it says, even one braked earlier (the same revision)
            (self.workdir / brake_file(table.revision)).unlink(missing_ok=True)
            # each candidate replaces its file when the block ends, all checks passed
            with contextlib.ExitStack() as candidates:
                for conf, text in texts.items():
                    if not changed[conf]:
                        continue  # the installed file passed this check already
                    tmp = _write_candidate(candidates, conf, text)
                    try:
                        self.runner.check(tmp)
                    except RouterError as exc:  # name the file the user knows, not the temp one
                        raise RouterError(str(exc).replace(str(tmp), f"{conf} (candidate)")) from exc
                front_up = was_running[self.front_conf_path]
                if not front_up or installed is None or installed.url != table.url:
                    _check_port_free(table.listen_host, table.listen_port)
                snapshot = self._snapshot()
            write_atomic(self.workdir / TABLE_FILE, json.dumps(table.to_dict(), indent=2).encode())
            self._bring_up(was_running, changed, snapshot)
            self._wait_for(table)
        logger.info("router %s: applied %s in %.3f s", self.workdir, table, time.monotonic() - started)

    def install_checked(self, checked: Path, table: RoutingTable) -> None:
        """Switch the running router to ``checked``, a configuration rendered for ``table``
        that passed ``nginx -t`` when it was made (:mod:`workbench.deploy.prepared`): renamed
        over the router's, reloaded, and returned once new requests are routed by ``table``.
        RouterError when the router does not run (nothing changed) or the reload fails."""
        started = time.monotonic()
        with self._lock():
            if not (self.conf_path.exists() and self.runner.is_running(self.conf_path)):
                raise RouterError(f"nginx is not running in {self.workdir}")
            snapshot = self._snapshot()
            checked.replace(self.conf_path)
            write_atomic(self.workdir / TABLE_FILE, json.dumps(table.to_dict(), indent=2).encode())
            running = dict.fromkeys(self._confs, True)
            self._bring_up(running, {self.conf_path: True, self.front_conf_path: False}, snapshot)
            self._wait_for(table)
        logger.info("router %s: switched to the checked %s in %.3f s", self.workdir, table,
                    time.monotonic() - started)

    def start(self) -> None:
        """Start nginx on the installed configuration (e.g. after a restart). No-op if running."""
        table = self.table
        if table is None or not all(p.exists() for p in self._confs):
            raise RouterError(f"no routing table applied in {self.workdir}; call apply(table)")
        with self._lock():
            was_running = {conf: self.runner.is_running(conf) for conf in self._confs}
            self._clear_dead(was_running)
            if not was_running[self.front_conf_path]:
                _check_port_free(table.listen_host, table.listen_port)
            self._bring_up(was_running, dict.fromkeys(self._confs, False), None)
            self._wait_for(table)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop nginx gracefully (front first; in-flight requests finish). Idempotent."""
        for conf in reversed(self._confs):
            if conf.exists():
                self.runner.stop(conf, timeout)

    def _clear_dead(self, was_running: dict[Path, bool]) -> None:
        """Clean up after masters that are not running: a killed master's orphaned workers
        still hold its port or socket until the runner kills them."""
        for conf, running in was_running.items():
            if not running and conf.exists():
                self.runner.stop(conf, 5.0)

    @property
    def _confs(self) -> tuple[Path, Path]:
        """Router, then front: the order to start in (stop in reverse)."""
        return self.conf_path, self.front_conf_path

    def _bring_up(
        self,
        was_running: dict[Path, bool],
        changed: dict[Path, bool],
        snapshot: dict[Path, bytes | None] | None,
    ) -> None:
        """Start what is not running, reload what changed; on failure, roll the files back."""
        done: list[tuple[Path, str]] = []
        try:
            for conf in self._confs:
                if not was_running[conf]:
                    if conf == self.conf_path:  # a stale socket would fail the bind
                        (self.workdir / FRONT_DIR / SOCKET_FILE).unlink(missing_ok=True)
                    self.runner.start(conf)
                    done.append((conf, "started"))
                elif changed[conf]:
                    self.runner.reload(conf)
                    done.append((conf, "reloaded"))
        except RouterError:
            if snapshot is not None:
                self._restore(snapshot)
            for conf, how in reversed(done):  # best effort back to what ran before
                with contextlib.suppress(RouterError):
                    if how == "started":
                        self.runner.stop(conf, 5.0)
                    elif conf.exists():
                        self.runner.reload(conf)
            raise

    @property
    def lock_path(self) -> Path:
        """The file lock every change of the installed files holds (``flock``)."""
        return self.workdir / _LOCK_FILE

    def _lock(self) -> filelock.BaseFileLock:
        return filelock.FileLock(str(self.lock_path), timeout=60)

    def _snapshot(self) -> dict[Path, bytes | None]:
        paths = (*self._confs, self.workdir / TABLE_FILE)
        return {p: p.read_bytes() if p.exists() else None for p in paths}

    def _restore(self, snapshot: dict[Path, bytes | None]) -> None:
        for path, data in snapshot.items():
            if data is None:
                path.unlink(missing_ok=True)
            else:
                write_atomic(path, data)

    def _wait_for(self, table: RoutingTable) -> None:
        """Poll ``/router/table`` through the front, on fresh connections, until it shows ``table``.

        Each probe has at most a second and the whole wait ``ready_timeout``, both in all
        (connect to last byte): a front that trickles its answer cannot stretch either.
        """
        # with http.client (email, ssl): not imported before the switch it follows
        from http.client import HTTPException

        from workbench.deploy.http import request_within

        deadline = time.monotonic() + self.ready_timeout
        last: object = None
        while True:
            try:
                left = deadline - time.monotonic()
                answer = request_within("GET", f"{table.url}/router/table", min(1.0, max(left, 0.001)))
                shown = answer.json() if answer.status == 200 else None
                if isinstance(shown, dict) and shown.get("revision") == table.revision:
                    return
                last = f"HTTP {answer.status}: {answer.body[:200]!r}"
            except (OSError, ValueError, HTTPException) as exc:
                last = exc
            if time.monotonic() > deadline:
                raise RouterError(
                    f"nginx did not serve revision {table.revision} at {table.url} within "
                    f"{self.ready_timeout:g} s (last answer: {last})"
                )
            time.sleep(0.005)
