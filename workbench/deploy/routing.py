"""Routing tables and the nginx configurations rendered from them (pure: no nginx runs here).

A :class:`RoutingTable` says where each colour listens and what share of traffic
green gets. :func:`render_nginx` and :func:`render_front` turn it into complete
nginx configurations: pure functions over the packaged templates in
``templates/``, checked by golden-file tests. :class:`~workbench.deploy.nginx.NginxRouter`
installs them.

Two nginx masters run per deployment: the *front* owns the public address and
forwards everything over kept-alive connections to the *router* on a unix
socket, which does the routing and is what a switch reloads. A plain nginx
reload closes idle kept-alive client connections, and a client that sends on one
at that instant gets an error; behind the front, that request is retried on a
fresh connection instead, so a cutover loses no request.

Routing, in order of precedence:

1. ``x-deploy-color: blue|green`` forces that colour (if it has an upstream);
2. ``x-model-version: V`` forces the colour serving ``V`` (unknown version: ignored);
3. otherwise a sticky split on the user header (``x-user-id``) with
   ``split_clients``, or a random split (on ``$request_id``) when it is absent.

A colour may have several upstream servers (instances of the same version);
its upstream balances over them by least connections, with passive health: a
server that fails ``max_fails`` times within ``fail_timeout`` is left out for
``fail_timeout``. Each colour's upstream lists the other colour's servers as
``backup``, so a connection error or timeout is retried on another server of
the colour, then on the other colour (POST included: inference is idempotent).
Each colour is proxied from its own named location, so that the candidate's
5xx answers are answered by the stable colour instead (``error_page``: they do
not count against the candidate's passive health, so a canary keeps its share
of traffic and its analysis sees every failure), while of stable's own 5xx only
a 503 (instance unavailable: its worker down, not ready, draining, queue full)
is retried, and a 500 (a real model error) goes to the client unchanged. A
request pinned to stable (``x-deploy-color`` or ``x-model-version``) keeps
stable's 503: the client asked for that colour. A failing candidate is thus
answered by stable, and its own ``/metrics`` still count the failure against it.

With ``mirror_percent`` above zero, that share of the requests routed to the stable
colour is also copied to the candidate (nginx ``mirror``); the copies' answers are
discarded, so the candidate is judged under real load at 0% user exposure. Responses carry
``x-deploy-color`` (the colour that answered, after any retry) and the upstream's
``x-model-version``. The access log (``access.log`` in the workdir) is JSON lines
with colour, status, upstream address and upstream response time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

from workbench.deploy.names import COLORS, check_deployment_name, check_host, check_port
from workbench.errors import DeployValueError, RouterError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from workbench._types import JSON, Color, StrPath

__all__ = [
    "RoutingTable",
    "Upstream",
    "brake_file",
    "render_front",
    "render_nginx",
]

# File names inside a router's workdir (the rendered configuration points at them).
CONF_FILE = "nginx.conf"
PID_FILE = "nginx.pid"
ERROR_LOG = "error.log"
ACCESS_LOG = "access.log"
FRONT_DIR = "front"  # the front's own workdir, inside the router's
SOCKET_FILE = "router.sock"  # in FRONT_DIR: the router listens here, the front connects
BRAKE_PREFIX = "brake."  # + a table's revision: while it exists, that table routes all to stable
_MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL
_TEMPLATES = Path(__file__).parent / "templates"
_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+_-]{0,63}$")
_HEADER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_host(host: str, what: str) -> str:
    try:
        return check_host(host, what)
    except DeployValueError as exc:
        raise RouterError(str(exc)) from None


def _check_port(port: int, what: str) -> None:
    try:
        check_port(port, what)
    except DeployValueError as exc:
        raise RouterError(str(exc)) from None


def hostport(host: str, port: int) -> str:
    """``host:port`` as nginx and URLs write it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Upstream:
    """One serving instance of a colour: where it listens and which version it serves."""

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
        return hostport(self.host, self.port)


@dataclass(frozen=True, kw_only=True)
class RoutingTable:
    """Where traffic of one deployment goes. ``green_weight`` is green's share in percent.

    Blue gets ``100 - green_weight``. A colour with a share above zero must have an
    upstream; a colour may have an upstream and no share (it is then reachable only
    by pinning, e.g. while green is verified). A colour may have several upstreams
    (instances on distinct addresses, all serving the colour's one version).
    ``upstreams`` is normalised to blue first, then green, each colour's in the
    order given.
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
    stable: Color = "blue"  # the known-good colour; the other one is the candidate
    mirror_percent: int = 0  # share of stable's requests copied to the candidate (answers dropped)
    max_fails: int = 3  # failed attempts within fail_timeout that take a server out (0: never)
    fail_timeout: int = 10  # seconds the failures are counted in, and a failed server stays out

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
        if not ups:
            raise RouterError("need at least one upstream (blue and/or green)")
        addresses = [u.address for u in ups]
        if len(set(addresses)) != len(addresses):
            twice = sorted({a for a in addresses if addresses.count(a) > 1})
            raise RouterError(f"upstreams must listen on different addresses: {', '.join(twice)} twice")
        for color in COLORS:
            versions = sorted({u.version for u in ups if u.color == color})
            if len(versions) > 1:
                raise RouterError(
                    f"the {color} upstreams serve different versions ({', '.join(versions)}): "
                    "a colour serves one version"
                )
        if any(u.address == hostport(self.listen_host, self.listen_port) for u in ups):
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
        if self.stable not in COLORS:
            raise RouterError(f"stable must be one of {COLORS}, not {self.stable!r}")
        m = self.mirror_percent
        if not _is_int(m) or not 0 <= m <= 100:
            raise RouterError(f"mirror_percent must be an integer percentage 0..100, not {m!r}")
        if m and self.upstream(self.candidate) is None:
            raise RouterError(f"mirroring to the candidate ({self.candidate}) needs its upstream")
        if not _is_int(self.max_fails) or self.max_fails < 0:
            raise RouterError(f"max_fails must be a non-negative integer, not {self.max_fails!r}")
        if not _is_int(self.fail_timeout) or self.fail_timeout < 1:  # nginx counts it in whole seconds
            raise RouterError(
                f"fail_timeout must be a positive whole number of seconds, not {self.fail_timeout!r}"
            )

    @property
    def weights(self) -> dict[Color, int]:
        """Traffic share per colour in percent, e.g. ``{"blue": 75, "green": 25}``."""
        return {"blue": 100 - self.green_weight, "green": self.green_weight}

    @property
    def candidate(self) -> Color:
        """The colour that is not the stable one."""
        return "green" if self.stable == "blue" else "blue"

    def with_mirror(self, percent: int) -> RoutingTable:
        """The same table copying ``percent`` of stable's requests to the candidate."""
        return dataclasses.replace(self, mirror_percent=percent)

    @property
    def colors(self) -> tuple[Color, ...]:
        """Colours that have an upstream."""
        return tuple(c for c in COLORS if self.upstream(c) is not None)

    def upstream(self, color: Color) -> Upstream | None:
        """The (first) upstream of ``color``, or None."""
        return next((u for u in self.upstreams if u.color == color), None)

    def servers(self, color: Color) -> tuple[Upstream, ...]:
        """All upstreams of ``color`` (empty when it has none)."""
        return tuple(u for u in self.upstreams if u.color == color)

    def version(self, color: Color) -> str | None:
        """The version ``color`` serves, or None when it has no upstream."""
        first = self.upstream(color)
        return first.version if first else None

    def with_weight(self, green_weight: int) -> RoutingTable:
        """The same table with another green share."""
        return dataclasses.replace(self, green_weight=green_weight)

    @property
    def url(self) -> str:
        """Where clients reach the router (a wildcard listen address is reached on loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.listen_host, self.listen_host)
        return f"http://{hostport(host, self.listen_port)}"

    def to_dict(self) -> JSON:
        data = dataclasses.asdict(self)
        data["upstreams"] = [dataclasses.asdict(u) for u in self.upstreams]
        defaults = (("stable", "blue"), ("mirror_percent", 0), ("max_fails", 3), ("fail_timeout", 10))
        for name, default in defaults:
            if data[name] == default:  # tables (and revisions) from before these fields
                del data[name]
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
        ups = ", ".join(
            f"{c}={','.join(u.address for u in self.servers(c))}@{self.version(c)}" for c in self.colors
        )
        return (
            f"RoutingTable({self.deployment} on {hostport(self.listen_host, self.listen_port)}: "
            f"blue {self.weights['blue']}% / green {self.green_weight}%"
            + (f", {self.mirror_percent}% mirrored to {self.candidate}" if self.mirror_percent else "")
            + f"; {ups})"
        )


# --------------------------------------------------------------------------- rendering


class _ConfTemplate(Template):
    delimiter = "@@"  # nginx uses `$` for its own variables


def _served_patterns(table: RoutingTable) -> Iterable[tuple[str, Color]]:
    """Regexes matching the last address in ``$upstream_addr`` for each colour."""
    seen = set()
    for u in table.upstreams:
        if u.host == "localhost":
            addr = rf"(127\.0\.0\.1|\[::1\]):{u.port}"
        else:
            try:
                ipaddress.ip_address(u.host)
                addr = re.escape(u.address)
            except ValueError:  # a host name: nginx logs the address it resolved to
                if any(o.port == u.port for o in table.servers(_other(u.color))):
                    continue  # ambiguous by port alone: report the routed colour
                addr = rf"[^\s]*:{u.port}"  # the same for the colour's instances on one port
        if addr not in seen:
            seen.add(addr)
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
        "public": hostport(table.listen_host, table.listen_port),
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
    versions = {c: table.version(c) for c in table.colors}
    pins = "".join(
        f'{indent}"{v}" {c};\n' for c, v in versions.items() if list(versions.values()).count(v) == 1
    )
    w = table.green_weight
    if w in (0, 100):
        split = f"{indent}{'*':<7} {'green' if w else 'blue'};\n"
    else:
        split = f"{indent}{f'{w}%':<7} green;\n{indent}{'*':<7} blue;\n"
    green = table.upstream("green")
    served = "".join(f"{indent}{pattern} {color};\n" for pattern, color in _served_patterns(table))
    upstreams = [_upstream_block(table, f"wb_{c}", c) for c in table.colors]
    color_locations = "".join(_color_location(table, c) for c in table.colors)
    pinned = ""
    if _has_final(table):
        upstreams.append(_upstream_block(table, f"wb_{table.stable}_final", table.stable))
        color_locations += _color_location(table, table.stable, final=True)
        pinned = f"{indent}~^{table.stable}:. {table.stable}_final;\n"
    mirror = _mirror(table, indent)
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
        pinned=pinned,
        upstreams="\n".join(upstreams),
        listen=f"unix:{values['socket']}",
        table_json=table_json.replace("\\", "\\\\").replace("'", "\\'"),
        connect_timeout=_duration(table.connect_timeout),
        read_timeout=_duration(table.read_timeout),
        **mirror,
        brake=_brake(table, values["workdir"]),
        color_locations=color_locations,
    )
    return _ConfTemplate((_TEMPLATES / "nginx.conf.tmpl").read_text(encoding="utf-8")).substitute(values)


def brake_file(revision: str) -> str:
    """The name, in the router's workdir, of the brake of the configuration of table
    ``revision``: while that file exists, the configuration sends every request to the
    stable colour (its ``final`` location), as a rollback will, with no reload."""
    return BRAKE_PREFIX + revision


def _brake(table: RoutingTable, workdir: str) -> str:
    """The brake's lines of ``location /`` (none when stable is the only colour routed)."""
    if not _has_final(table):
        return ""
    return (
        "            # The brake (`workbench rollback`): while this file exists, every request\n"
        "            # goes to stable, as the rollback's configuration routes it (no reload).\n"
        f"            if (-f {workdir}/{brake_file(table.revision)}) {{\n"
        "                return 419;\n"
        "            }\n"
        f"            error_page 419 = @wb_{table.stable}_final;\n"
    )


def _other(color: Color) -> Color:
    return "green" if color == "blue" else "blue"


def _server_params(table: RoutingTable) -> str:
    return f"max_fails={table.max_fails} fail_timeout={table.fail_timeout}s"


def _upstream_block(table: RoutingTable, name: str, color: Color) -> str:
    """``color``'s servers balanced by least connections, the other colour's as backup."""
    params = _server_params(table)
    lines = [f"    upstream {name} {{", "        least_conn;"]
    lines += [f"        server {u.address} {params};" for u in table.servers(color)]
    lines += [f"        server {u.address} {params} backup;" for u in table.servers(_other(color))]
    # keepalive_timeout stays below the serving instances' own (uvicorn: 5 s), so
    # nginx never reuses a connection the upstream is closing.
    lines += ["        keepalive 16;", "        keepalive_timeout 4s;", "    }"]
    return "\n".join(lines) + "\n"


def _has_final(table: RoutingTable) -> bool:
    """Whether stable needs a location whose 503s are final: both colours have upstreams."""
    return bool(table.servers(table.stable)) and bool(table.servers(table.candidate))


def _color_location(table: RoutingTable, color: Color, *, final: bool = False) -> str:
    """The named location proxying to ``color``.

    Connection errors and timeouts go to another server of the colour, then to the
    other colour's (its backups); only these count against a server's passive health,
    and stable's 503s. Stable's 503 (instance unavailable) is retried the same way,
    except in its ``final`` location (requests pinned to stable, and the candidate's
    fallbacks). A 500 from stable is a real model error and goes to the client. A
    candidate's 5xx are answered by stable's final location (``error_page``), so they
    never take the candidate out of rotation: the canary analysis keeps seeing them.
    """
    retry = "error timeout non_idempotent"
    extra = ""
    block = len(table.servers(color)) + len(table.servers(_other(color)))
    if color != table.stable and _has_final(table):
        extra = (
            "            proxy_intercept_errors on;\n"
            f"            error_page 500 502 503 504 = @wb_{table.stable}_final;\n"
        )
    elif color == table.stable and block > 1 and not final:
        retry = "error timeout http_503 non_idempotent"
    if color == table.stable and table.mirror_percent:
        extra = "            mirror /_wb_mirror;\n            mirror_request_body on;\n"
    name = f"{color}_final" if final else color
    # every server of the colour once, then one of the other colour; within one
    # connect + read timeout after the first try
    tries = len(table.servers(color)) + (1 if table.servers(_other(color)) else 0)
    return (
        f"\n        location @wb_{name} {{\n{extra}"
        f"            proxy_pass http://wb_{name};\n"
        "            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n'
        "            proxy_set_header Host $host;\n"
        "            proxy_set_header X-Forwarded-For $http_x_forwarded_for;\n"
        "            proxy_set_header X-Request-Id $request_id;\n"
        f"            proxy_connect_timeout {_duration(table.connect_timeout)};\n"
        f"            proxy_send_timeout {_duration(table.read_timeout)};\n"
        f"            proxy_read_timeout {_duration(table.read_timeout)};\n"
        f"            proxy_next_upstream {retry};\n"
        f"            proxy_next_upstream_tries {tries};\n"
        f"            proxy_next_upstream_timeout {_duration(table.connect_timeout + table.read_timeout)};\n"
        "            proxy_hide_header x-deploy-color;\n"
        "            add_header x-deploy-color $wb_served_color always;\n"
        "        }\n"
    )


def _mirror(table: RoutingTable, indent: str) -> dict[str, str]:
    """The template values of the mirror (all empty when nothing is mirrored)."""
    targets = table.servers(table.candidate)
    if not table.mirror_percent or not targets:
        return {"mirror_split": "", "mirror_upstream": "", "mirror_location": ""}
    split = (
        f"{indent}{'*':<7} 1;\n" if table.mirror_percent == 100
        else f"{indent}{f'{table.mirror_percent}%':<7} 1;\n{indent}{'*':<7} \"\";\n"
    )
    return {
        "mirror_split": (
            f"    # A copy of {table.mirror_percent}% of the requests routed to {table.stable} goes to\n"
            f"    # the candidate ({table.candidate}); its answers are discarded.\n"
            f'    split_clients "${{request_id}}" $wb_mirror_draw {{\n{split}    }}\n\n'
            f'    map "$wb_color:$wb_mirror_draw" $wb_mirror {{\n'
            f'        default "";\n        "{table.stable}:1" 1;\n    }}\n\n'
        ),
        "mirror_upstream": (
            "    upstream wb_mirror {\n        least_conn;\n"
            + "".join(f"        server {t.address} max_fails=0;\n" for t in targets)
            + "        keepalive 8;\n        keepalive_timeout 4s;\n    }\n\n"
        ),
        "mirror_location": (
            "        location = /_wb_mirror {\n"
            "            internal;\n"
            '            if ($wb_mirror = "") {\n                return 204;\n            }\n'
            "            proxy_pass http://wb_mirror$request_uri;\n"
            "            proxy_http_version 1.1;\n"
            '            proxy_set_header Connection "";\n'
            '            proxy_set_header x-model-version "";\n'
            "            proxy_set_header X-Request-Id $request_id;\n"
            "            proxy_set_header x-workbench-mirror 1;\n"
            f"            proxy_connect_timeout {_duration(table.connect_timeout)};\n"
            f"            proxy_read_timeout {_duration(table.read_timeout)};\n"
            "            proxy_next_upstream off;\n"
            "        }\n\n"
        ),
    }


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
