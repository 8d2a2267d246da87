"""The nginx router: a routing table in, a checked and reloaded nginx out.

A :class:`RoutingTable` says where each colour listens and what share of traffic
green gets. :func:`render_nginx` and :func:`render_front` turn it into complete
nginx configurations (pure functions over the packaged templates in
``templates/``), and :meth:`NginxRouter.apply` installs them the safe way::

    render -> write temp files in the workdir -> `nginx -t` on each
           -> os.replace over the installed files -> start, or graceful reload
           -> wait until new requests see the new table

A configuration that fails the check is never installed; the error carries
nginx's own message. Switching and rolling back are one ``apply`` (one reload).

Two nginx masters run per deployment: the *front* owns the public address and
forwards everything over kept-alive connections to the *router* on a unix
socket, which does the routing and is what ``apply`` reloads. A plain nginx
reload closes idle kept-alive client connections, and a client that sends on one
at that instant gets an error; behind the front, that request is retried on a
fresh connection instead, so a cutover loses no request.

Routing, in order of precedence:

1. ``x-deploy-color: blue|green`` forces that colour (if it has an upstream);
2. ``x-model-version: V`` forces the colour serving ``V`` (unknown version: ignored);
3. otherwise a sticky split on the user header (``x-user-id``) with
   ``split_clients``, or a random split (on ``$request_id``) when it is absent.

Each colour's upstream lists the other colour as ``backup``, so a connection
error or timeout is retried on the other colour (POST included). Responses carry
``x-deploy-color`` (the colour that answered, after any retry) and the upstream's
``x-model-version``. The access log (``access.log`` in the workdir) is JSON lines
with colour, status, upstream address and upstream response time.

Where nginx runs is the :class:`NginxRunner` seam: :class:`LocalNginx` (a local
process, here) or ``DockerNginx`` (a container, in ``workbench/deploy/docker.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import ipaddress
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import filelock
import psutil

from workbench.deploy.base import COLORS, check_deployment_name
from workbench.errors import RouterError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from workbench._types import JSON, Color, StrPath

__all__ = [
    "LocalNginx",
    "NginxRouter",
    "NginxRunner",
    "RoutingTable",
    "Upstream",
    "render_front",
    "render_nginx",
]

logger = logging.getLogger(__name__)

# File names inside a router's workdir (the rendered config points at them).
CONF_FILE = "nginx.conf"
PID_FILE = "nginx.pid"
ERROR_LOG = "error.log"
ACCESS_LOG = "access.log"
TABLE_FILE = "table.json"
OUTPUT_FILE = "nginx.out"  # stderr of a locally started master
_LOCK_FILE = ".router.lock"

FRONT_DIR = "front"  # the front's own workdir, inside the router's
SOCKET_FILE = "router.sock"  # in FRONT_DIR: the router listens here, the front connects
_MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL
_TEMPLATES = Path(__file__).parent / "templates"
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*$")
_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+_-]{0,63}$")
_HEADER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_host(host: str, what: str) -> str:
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(host))
    if not _HOSTNAME.match(host):
        raise RouterError(f"invalid {what} {host!r}: use an IP address or a host name")
    return host


def _check_port(port: int, what: str) -> None:
    if not _is_int(port) or not 0 < port < 65536:
        raise RouterError(f"{what} must be an integer in 1..65535, not {port!r}")


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Upstream:
    """One colour's serving instance: where it listens and which version it serves."""

    color: Color
    host: str
    port: int
    version: str

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise RouterError(f"upstream color must be one of {COLORS}, not {self.color!r}")
        object.__setattr__(self, "host", _check_host(self.host, "upstream host"))
        _check_port(self.port, f"{self.color} upstream port")
        if not isinstance(self.version, str) or not _VERSION.match(self.version):
            raise RouterError(
                f"invalid {self.color} version {self.version!r}: expected a semantic version "
                "such as 1.2.0 or 1.2.0+build"
            )

    @property
    def address(self) -> str:
        """``host:port`` as nginx writes it (IPv6 in brackets)."""
        return _hostport(self.host, self.port)


@dataclass(frozen=True, kw_only=True)
class RoutingTable:
    """Where traffic of one deployment goes. ``green_weight`` is green's share in percent.

    Blue gets ``100 - green_weight``. A colour with a share above zero must have an
    upstream; a colour may have an upstream and no share (it is then reachable only
    by pinning, e.g. while green is verified). ``upstreams`` is normalised to blue
    first, then green.
    """

    deployment: str
    listen_port: int
    upstreams: tuple[Upstream, ...]
    green_weight: int = 0
    listen_host: str = "127.0.0.1"
    user_header: str = "x-user-id"
    connect_timeout: float = 2.0  # seconds to connect to an upstream before trying the other
    read_timeout: float = 120.0  # seconds an upstream may take to answer
    max_body_mb: int = 64  # largest request body accepted (inference inputs can be big)

    def __post_init__(self) -> None:
        try:
            check_deployment_name(self.deployment)
        except ValueError as exc:
            raise RouterError(str(exc)) from exc
        object.__setattr__(self, "listen_host", _check_host(self.listen_host, "listen host"))
        _check_port(self.listen_port, "listen port")
        ups = tuple(self.upstreams)
        if not all(isinstance(u, Upstream) for u in ups):
            raise RouterError("upstreams must be Upstream objects")
        colors = [u.color for u in ups]
        if not ups or len(set(colors)) != len(colors):
            raise RouterError(f"need one upstream per colour (blue and/or green), got {colors}")
        if len({u.address for u in ups}) != len(ups):
            raise RouterError("blue and green upstreams must listen on different addresses")
        if any(u.address == _hostport(self.listen_host, self.listen_port) for u in ups):
            raise RouterError("an upstream cannot listen on the router's own address")
        object.__setattr__(self, "upstreams", tuple(sorted(ups, key=lambda u: COLORS.index(u.color))))
        w = self.green_weight
        if not _is_int(w) or not 0 <= w <= 100:
            raise RouterError(f"green_weight must be an integer percentage 0..100, not {w!r}")
        for color, share in self.weights.items():
            if share > 0 and self.upstream(color) is None:
                raise RouterError(f"{color} gets {share}% of traffic but has no upstream")
        if not _HEADER.match(self.user_header):
            raise RouterError(f"invalid user header name {self.user_header!r}")
        for name in ("connect_timeout", "read_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise RouterError(f"{name} must be a positive number of seconds, not {value!r}")
        if not _is_int(self.max_body_mb) or self.max_body_mb < 1:
            raise RouterError(f"max_body_mb must be a positive integer, not {self.max_body_mb!r}")

    @property
    def weights(self) -> dict[Color, int]:
        """Traffic share per colour in percent, e.g. ``{"blue": 75, "green": 25}``."""
        return {"blue": 100 - self.green_weight, "green": self.green_weight}

    @property
    def colors(self) -> tuple[Color, ...]:
        """Colours that have an upstream."""
        return tuple(u.color for u in self.upstreams)

    def upstream(self, color: Color) -> Upstream | None:
        """The upstream of ``color``, or None."""
        return next((u for u in self.upstreams if u.color == color), None)

    def with_weight(self, green_weight: int) -> RoutingTable:
        """The same table with another green share."""
        return dataclasses.replace(self, green_weight=green_weight)

    @property
    def url(self) -> str:
        """Where clients reach the router (a wildcard listen address is reached on loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.listen_host, self.listen_host)
        return f"http://{_hostport(host, self.listen_port)}"

    def to_dict(self) -> JSON:
        data = dataclasses.asdict(self)
        data["upstreams"] = [dataclasses.asdict(u) for u in self.upstreams]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoutingTable:
        known = {f.name for f in dataclasses.fields(cls)}
        args = {k: v for k, v in data.items() if k in known}
        try:
            args["upstreams"] = tuple(Upstream(**u) for u in data["upstreams"])
            return cls(**args)
        except (KeyError, TypeError) as exc:
            raise RouterError(f"invalid routing table {data!r}: {exc}") from exc

    @property
    def revision(self) -> str:
        """A short digest of the table; the running router reports it at ``/router/table``."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def __str__(self) -> str:
        ups = ", ".join(f"{u.color}={u.address}@{u.version}" for u in self.upstreams)
        return (
            f"RoutingTable({self.deployment} on {_hostport(self.listen_host, self.listen_port)}: "
            f"blue {self.weights['blue']}% / green {self.green_weight}%; {ups})"
        )


# --------------------------------------------------------------------------- rendering


class _ConfTemplate(Template):
    delimiter = "@@"  # nginx uses `$` for its own variables


def _served_patterns(table: RoutingTable) -> Iterable[tuple[str, Color]]:
    """Regexes matching the last address in ``$upstream_addr`` for each colour."""
    ports = [u.port for u in table.upstreams]
    for u in table.upstreams:
        if u.host == "localhost":
            addr = rf"(127\.0\.0\.1|\[::1\]):{u.port}"
        else:
            try:
                ipaddress.ip_address(u.host)
                addr = re.escape(u.address)
            except ValueError:  # a host name: nginx logs the address it resolved to
                if ports.count(u.port) > 1:
                    continue  # ambiguous by port alone: report the routed colour
                addr = rf"[^\s]*:{u.port}"
        yield rf"~(^|\s){addr}$", u.color


def _duration(seconds: float) -> str:
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _common(table: RoutingTable, workdir: StrPath, user: str | None) -> dict[str, str]:
    """Checks and template values shared by both tiers."""
    workdir = str(workdir).rstrip("/")
    if not workdir.startswith("/") or any(c in workdir for c in " ;{}'\"$\\\n"):
        raise RouterError(f"workdir must be an absolute path without spaces or quotes: {workdir!r}")
    socket_path = f"{workdir}/{FRONT_DIR}/{SOCKET_FILE}"
    if len(socket_path.encode()) > _MAX_SOCKET_PATH:
        raise RouterError(
            f"workdir {workdir!r} is too long: the router's unix socket {socket_path!r} must be at "
            f"most {_MAX_SOCKET_PATH} bytes; use a shorter workdir"
        )
    if user is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]*$", user):
        raise RouterError(f"invalid user name {user!r}")
    return {
        "deployment": table.deployment,
        "revision": table.revision,
        "workdir": workdir,
        "front": f"{workdir}/{FRONT_DIR}",
        "socket": socket_path,
        "public": _hostport(table.listen_host, table.listen_port),
        "user": f"user {user};\n" if user else "",
        "max_body_mb": str(table.max_body_mb),
    }


def render_nginx(table: RoutingTable, *, workdir: StrPath, user: str | None = None) -> str:
    """The router's ``nginx.conf`` for ``table``: a pure function of its arguments.

    The router does the routing (pins, split, retry, colour header, access log)
    and listens on the unix socket ``<workdir>/front/router.sock``; the front
    (:func:`render_front`) owns the public address. ``workdir`` (absolute, as
    nginx sees it) holds the pid file, logs and temp paths. ``user`` renders a
    ``user`` directive (needed when the master runs as root and the workdir is
    private; None leaves it out).
    """
    values = _common(table, workdir, user)
    indent = " " * 8
    forced = "".join(f"{indent}{c:<7} {c};\n" for c in table.colors)
    versions = [u.version for u in table.upstreams]
    pins = "".join(
        f'{indent}"{u.version}" {u.color};\n' for u in table.upstreams if versions.count(u.version) == 1
    )
    w = table.green_weight
    if w in (0, 100):
        split = f"{indent}{'*':<7} {'green' if w else 'blue'};\n"
    else:
        split = f"{indent}{f'{w}%':<7} green;\n{indent}{'*':<7} blue;\n"
    green = table.upstream("green")
    served = "".join(f"{indent}{pattern} {color};\n" for pattern, color in _served_patterns(table))
    upstreams = []
    for u in table.upstreams:
        lines = [f"    upstream wb_{u.color} {{", f"        server {u.address} max_fails=0;"]
        lines += [f"        server {o.address} max_fails=0 backup;" for o in table.upstreams if o != u]
        # keepalive_timeout stays below the serving instances' own (uvicorn: 5 s), so
        # nginx never reuses a connection the upstream is closing.
        lines += ["        keepalive 16;", "        keepalive_timeout 4s;", "    }"]
        upstreams.append("\n".join(lines) + "\n")
    table_json = json.dumps(
        {**table.to_dict(), "revision": table.revision, "weights": table.weights},
        sort_keys=True,
        separators=(",", ":"),
    )
    if "$" in table_json:
        raise RouterError("the routing table must not contain '$'")
    values.update(
        shutdown_timeout=str(round(table.read_timeout) + 10),
        forced=forced,
        versions=pins,
        salt=f"{green.version}/" if green else "",
        user_var="http_" + table.user_header.lower().replace("-", "_"),
        split=split,
        served=served,
        upstreams="\n".join(upstreams),
        listen=f"unix:{values['socket']}",
        table_json=table_json.replace("\\", "\\\\").replace("'", "\\'"),
        connect_timeout=_duration(table.connect_timeout),
        read_timeout=_duration(table.read_timeout),
    )
    return _ConfTemplate((_TEMPLATES / "nginx.conf.tmpl").read_text(encoding="utf-8")).substitute(values)


def render_front(table: RoutingTable, *, workdir: StrPath, user: str | None = None) -> str:
    """The front's ``nginx.conf`` (``<workdir>/front/nginx.conf``): pure, like :func:`render_nginx`.

    The front listens on the table's public address and passes every request to
    the router's unix socket over kept-alive connections. It only changes (and
    reloads) when the listen address, body limit or timeouts change, so it keeps
    the clients' connections open while the router reloads; a request caught on a
    connection an old router worker is closing is retried on a fresh one.
    """
    values = _common(table, workdir, user)
    # the router may try both colours, each up to connect + read timeout
    budget = 2 * (table.connect_timeout + table.read_timeout) + 1
    values.update(
        shutdown_timeout=str(round(budget) + 10),
        listen=values["public"],
        read_timeout=_duration(budget),
    )
    return _ConfTemplate((_TEMPLATES / "front.conf.tmpl").read_text(encoding="utf-8")).substitute(values)


# --------------------------------------------------------------------------- runners


@runtime_checkable
class NginxRunner(Protocol):
    """Where the nginx master runs: a local process (:class:`LocalNginx`) or a container.

    Every method takes ``conf``, the path of a configuration file; its directory
    (``conf.parent``) is the router's workdir and holds everything the rendered
    configuration names, by absolute path: ``nginx.pid``, ``error.log``,
    ``access.log`` and the temp directories. Pass it to nginx as ``-c conf -p
    conf.parent/``. The configuration says ``daemon off``: the master stays in the
    foreground (what a container's main process needs).

    :class:`NginxRouter` runs two masters through one runner, one per directory:
    the router (``<workdir>/nginx.conf``) and the front
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


def _tail(path: Path, offset: int = 0, lines: int = 20) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class LocalNginx:
    """Runs nginx as a local process: ``nginx -c <workdir>/nginx.conf -p <workdir>/``.

    The binary is ``binary``, else ``nginx`` on PATH, else ``/usr/sbin/nginx``
    (needs nginx >= 1.19.5 for ``-e``). The master runs in its own session, so it
    outlives the Python process that started it; a later :class:`LocalNginx` finds
    it again through the pid file in the workdir.
    """

    name: ClassVar[str] = "process"

    def __init__(
        self,
        binary: StrPath | None = None,
        *,
        start_timeout: float = 10.0,
        reload_timeout: float = 10.0,
    ) -> None:
        self._binary = str(binary) if binary is not None else None
        self.start_timeout = start_timeout
        self.reload_timeout = reload_timeout
        euid = os.geteuid()
        self.worker_user: str | None = pwd.getpwuid(euid).pw_name if euid == 0 else None
        self._children: dict[Path, subprocess.Popen[bytes]] = {}

    def __repr__(self) -> str:
        return f"LocalNginx(binary={self._binary!r})"

    @property
    def binary(self) -> str:
        """Path of the nginx executable; RouterError when nginx is not installed."""
        if self._binary is None:
            candidates = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
            found = shutil.which("nginx") or next((c for c in candidates if Path(c).exists()), None)
            if found is None:
                raise RouterError(
                    "nginx is not installed (not on PATH nor in /usr/sbin): install it "
                    "(e.g. `apt-get install nginx-light`) or use the docker router"
                )
            self._binary = found
        return self._binary

    def _args(self, conf: Path) -> list[str]:
        return [self.binary, "-e", "stderr", "-p", f"{conf.parent}/", "-c", str(conf)]

    def check(self, conf: Path) -> None:
        try:
            proc = subprocess.run([*self._args(conf), "-t", "-q"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RouterError(f"could not run `nginx -t`: {exc}") from exc
        if proc.returncode != 0:
            message = (proc.stderr + proc.stdout).strip() or f"exit status {proc.returncode}"
            raise RouterError(f"nginx rejected the configuration:\n{message}")

    def _master(self, conf: Path) -> psutil.Process | None:
        child = self._children.get(conf.parent)
        if child is not None and child.poll() is not None:  # reap an exited master
            del self._children[conf.parent]
        pid = _read_pid(conf.parent / PID_FILE)
        if pid is None:
            return None
        try:
            master = psutil.Process(pid)
            if master.status() == psutil.STATUS_ZOMBIE or "nginx" not in master.name():
                return None
            if str(conf) not in " ".join(master.cmdline()):  # a stale pid file, reused pid
                return None
        except psutil.Error:
            return None
        return master

    def is_running(self, conf: Path) -> bool:
        return self._master(conf) is not None

    def start(self, conf: Path) -> None:
        if self.is_running(conf):
            return
        workdir = conf.parent
        (workdir / PID_FILE).unlink(missing_ok=True)
        out_path = workdir / OUTPUT_FILE
        offset = _size(out_path)
        try:
            with out_path.open("ab") as out:
                proc = subprocess.Popen(
                    self._args(conf),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as exc:
            raise RouterError(f"could not start nginx: {exc}") from exc
        self._children[workdir] = proc
        deadline = time.monotonic() + self.start_timeout
        while True:
            if proc.poll() is not None:
                del self._children[workdir]
                raise RouterError(
                    f"nginx exited with status {proc.returncode} while starting:\n" + _tail(out_path, offset)
                )
            if _read_pid(workdir / PID_FILE) == proc.pid:
                with contextlib.suppress(psutil.Error):
                    if psutil.Process(proc.pid).children():
                        logger.debug("nginx master %d started in %s", proc.pid, workdir)
                        return
            if time.monotonic() > deadline:
                self._kill(proc.pid)
                raise RouterError(
                    f"nginx did not start within {self.start_timeout:g} s:\n" + _tail(out_path, offset)
                )
            time.sleep(0.01)

    def reload(self, conf: Path) -> None:
        master = self._master(conf)
        if master is None:
            raise RouterError(f"nginx is not running in {conf.parent}; start it first")
        try:
            old = {p.pid for p in master.children()}
        except psutil.Error as exc:
            raise RouterError(f"nginx master {master.pid} went away: {exc}") from exc
        log = conf.parent / ERROR_LOG
        offset = _size(log)
        master.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + self.reload_timeout
        while True:
            emerg = [line for line in _tail(log, offset, 50).splitlines() if "[emerg]" in line]
            if emerg:
                raise RouterError(
                    "nginx refused to reload and keeps its previous configuration:\n" + "\n".join(emerg)
                )
            try:
                children = master.children()
            except psutil.Error as exc:
                raise RouterError(f"nginx master {master.pid} exited during reload") from exc
            fresh = [c for c in children if c.pid not in old]
            if fresh and not any(c.pid in old and not _shutting_down(c) for c in children):
                return
            if time.monotonic() > deadline:
                raise RouterError(
                    f"nginx did not reload within {self.reload_timeout:g} s:\n" + _tail(log, offset)
                )
            time.sleep(0.002)

    def stop(self, conf: Path, timeout: float = 10.0) -> None:
        master = self._master(conf)
        child = self._children.pop(conf.parent, None)
        if master is not None:
            with contextlib.suppress(psutil.Error):
                master.send_signal(signal.SIGQUIT)
                try:
                    master.wait(timeout)
                except psutil.TimeoutExpired:
                    logger.warning("nginx master %d did not quit in %g s; killing", master.pid, timeout)
                    self._kill(master.pid)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(5)

    @staticmethod
    def _kill(pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            master = psutil.Process(pid)
            procs = [*master.children(), master]
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            psutil.wait_procs(procs, timeout=5)


def _shutting_down(worker: psutil.Process) -> bool:
    """An old worker that closed its listening sockets (nginx retitles it first)."""
    try:
        return "shutting down" in " ".join(worker.cmdline())
    except psutil.Error:  # gone (or a zombie): not accepting either
        return True


# --------------------------------------------------------------------------- router


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.create_server((host, port), family=family):
            pass
    except OSError as exc:
        raise RouterError(
            f"cannot listen on {_hostport(host, port)}: {exc.strerror or exc} "
            "(is another process using this port?)"
        ) from exc


def _write_candidate(conf: Path, text: str) -> Path:
    """Write ``text`` to a temp file beside ``conf`` (same filesystem: os.replace is atomic)."""
    fd, name = tempfile.mkstemp(dir=conf.parent, prefix=".nginx-", suffix=".conf")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        Path(name).unlink(missing_ok=True)
        raise RouterError(f"cannot write {name}: {exc}") from exc
    return Path(name)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        Path(name).replace(path)
    finally:
        Path(name).unlink(missing_ok=True)


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
        self.runner: NginxRunner = runner if runner is not None else LocalNginx()
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
            changed = {conf: not conf.exists() or conf.read_text() != text for conf, text in texts.items()}
            changed[self.conf_path] = True  # the router always reloads: that is the switch
            installed = self.table
            candidates: dict[Path, Path] = {}
            try:
                for conf, text in texts.items():
                    if not changed[conf]:
                        continue  # the installed file passed this check already
                    candidates[conf] = tmp = _write_candidate(conf, text)
                    try:
                        self.runner.check(tmp)
                    except RouterError as exc:  # name the file the user knows, not the temp one
                        raise RouterError(str(exc).replace(str(tmp), f"{conf} (candidate)")) from exc
                front_up = was_running[self.front_conf_path]
                if not front_up or installed is None or installed.url != table.url:
                    _check_port_free(table.listen_host, table.listen_port)
                snapshot = self._snapshot()
                for conf, tmp in candidates.items():
                    tmp.replace(conf)
            finally:
                for tmp in candidates.values():
                    tmp.unlink(missing_ok=True)
            _write_atomic(self.workdir / TABLE_FILE, json.dumps(table.to_dict(), indent=2).encode())
            self._bring_up(was_running, changed, snapshot)
            self._wait_for(table)
        logger.info("router %s: applied %s in %.3f s", self.workdir, table, time.monotonic() - started)

    def start(self) -> None:
        """Start nginx on the installed configuration (e.g. after a restart). No-op if running."""
        table = self.table
        if table is None or not all(p.exists() for p in self._confs):
            raise RouterError(f"no routing table applied in {self.workdir}; call apply(table)")
        with self._lock():
            was_running = {conf: self.runner.is_running(conf) for conf in self._confs}
            if not was_running[self.front_conf_path]:
                _check_port_free(table.listen_host, table.listen_port)
            self._bring_up(was_running, dict.fromkeys(self._confs, False), None)
            self._wait_for(table)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop nginx gracefully (front first; in-flight requests finish). Idempotent."""
        for conf in reversed(self._confs):
            if conf.exists():
                self.runner.stop(conf, timeout)

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

    def _lock(self) -> filelock.BaseFileLock:
        return filelock.FileLock(str(self.workdir / _LOCK_FILE), timeout=60)

    def _snapshot(self) -> dict[Path, bytes | None]:
        paths = (*self._confs, self.workdir / TABLE_FILE)
        return {p: p.read_bytes() if p.exists() else None for p in paths}

    def _restore(self, snapshot: dict[Path, bytes | None]) -> None:
        for path, data in snapshot.items():
            if data is None:
                path.unlink(missing_ok=True)
            else:
                _write_atomic(path, data)

    def _wait_for(self, table: RoutingTable) -> None:
        """Poll ``/router/table`` through the front, on fresh connections, until it shows ``table``."""
        host = table.url.removeprefix("http://").rsplit(":", 1)[0].strip("[]")
        deadline = time.monotonic() + self.ready_timeout
        last: object = None
        while True:
            conn = http.client.HTTPConnection(host, table.listen_port, timeout=1.0)
            try:
                conn.request("GET", "/router/table")
                response = conn.getresponse()
                body = response.read()
                if response.status == 200 and json.loads(body).get("revision") == table.revision:
                    return
                last = f"HTTP {response.status}: {body[:200]!r}"
            except (OSError, ValueError, http.client.HTTPException) as exc:
                last = exc
            finally:
                conn.close()
            if time.monotonic() > deadline:
                raise RouterError(
                    f"nginx did not serve revision {table.revision} at {table.url} within "
                    f"{self.ready_timeout:g} s (last answer: {last})"
                )
            time.sleep(0.005)
