"""Where a deployment's colours run: one or more engines, each with a number of replicas.

A colour of a deployment may span several Docker engines (``--engine ssh://deploy@gpu1
--engine ssh://deploy@gpu2 --replicas 2``). Each :class:`Engine` says which engine, the
address its host publishes (the one the router connects to, and the one the container
binds with host networking) and how many instances of each colour it runs. A
deployment made without engines has one implicit engine: its backend's default, on
loopback, one replica (as before fleets existed).

The publish address of an ``ssh://`` or ``tcp://`` engine is its host name resolved
here (an IPv4 address first), unless given: ``--engine ssh://deploy@gpu1=10.0.0.5``.
A local engine (``unix://``) publishes on loopback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workbench.deploy.names import check_host
from workbench.errors import DeployValueError, WorkbenchError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from workbench.deploy.backend import Backend, Instance, InstanceSpec

__all__ = ["Engine", "check_fleet", "describe", "is_local", "parse_engine", "publish_address", "start_all"]

log = logging.getLogger(__name__)

#: Most instances of one colour on one engine.
MAX_REPLICAS = 16
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Engine:
    """One engine of a fleet: its URL, the address its instances publish, replicas per colour.

    ``url`` "" is the backend's default engine (``DOCKER_HOST``, the local socket, or
    local processes).
    """

    url: str
    address: str = LOOPBACK
    replicas: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", check_host(self.address, "publish address"))
        r = self.replicas
        if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= MAX_REPLICAS:
            raise DeployValueError(f"replicas must be an integer in 1..{MAX_REPLICAS}, not {r!r}")

    def __str__(self) -> str:
        return self.url or "the default engine"

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "address": self.address, "replicas": self.replicas}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Engine:
        return cls(
            url=str(data.get("url", "")),
            address=str(data.get("address", LOOPBACK)),
            replicas=int(data.get("replicas", 1)),
        )


def describe(docker_host: str | None) -> str:
    """The engine address as the user would write it."""
    return docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def is_local(docker_host: str | None) -> bool:
    """Whether the engine runs on this machine (so its ports and paths are ours)."""
    url = docker_host or os.environ.get("DOCKER_HOST") or "unix://"
    if url.startswith(("unix://", "npipe://", "fd://")):
        return True
    return (urllib.parse.urlsplit(url).hostname or "") in {"localhost", "127.0.0.1", "::1"}


def publish_address(url: str) -> str:
    """The address the host of engine ``url`` is reached at from here.

    Loopback for a local engine (a ``unix://`` socket, ``localhost``); otherwise the
    URL's host name resolved, IPv4 first (DeployValueError when it does not resolve).
    """
    if not url or is_local(url):
        return LOOPBACK
    host = urllib.parse.urlsplit(url).hostname
    if not host:
        raise DeployValueError(f"engine {url!r} names no host; write it as ssh://user@host")
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DeployValueError(
            f"cannot resolve the host of engine {url} ({exc}); give its address as {url}=ADDRESS"
        ) from None
    addresses = sorted({str(info[4][0]) for info in infos}, key=lambda a: (":" in a, a))
    return addresses[0]


def parse_engine(text: str, replicas: int = 1, address: str | None = None) -> Engine:
    """An engine from ``URL[=ADDRESS]`` (``ssh://deploy@gpu1=10.0.0.5``).

    ``address`` applies when the text gives none; else the URL's host is resolved.
    """
    url, sep, given = text.strip().partition("=")
    if not url.startswith(("ssh://", "tcp://", "unix://")):
        raise DeployValueError(
            f"engine {text!r} is not a Docker engine URL (ssh://user@host, tcp://host:port "
            "or unix:///path)"
        )
    if sep and not given:
        raise DeployValueError(f"engine {text!r} has an empty address after '='")
    return Engine(url, given or address or publish_address(url), replicas)


def check_fleet(engines: Iterable[Engine]) -> tuple[Engine, ...]:
    """Return ``engines`` if no engine appears twice."""
    fleet = tuple(engines)
    urls = [e.url for e in fleet]
    if len(set(urls)) != len(urls):
        raise DeployValueError(f"an engine is given twice: {', '.join(urls)}")
    return fleet


def start_all(
    backend: Backend,
    specs: Sequence[InstanceSpec],
    *,
    need: int,
    ready: Callable[[Instance], None] | None = None,
) -> list[Instance]:
    """Start ``specs`` at once (one thread each) and return those that started.

    ``ready(instance)``, when given, runs after each start and raises if the instance
    is not fit (e.g. :func:`~workbench.deploy.verification.wait_healthy`); an
    instance that fails it is stopped. With fewer than ``need`` instances left, every
    one is stopped and the first error is raised; otherwise the failures are logged.
    """
    from concurrent.futures import ThreadPoolExecutor

    def one(spec: InstanceSpec) -> Instance:
        instance = backend.start(spec)
        if ready is not None:
            try:
                ready(instance)
            except BaseException:
                with contextlib.suppress(WorkbenchError):
                    backend.stop(instance)
                raise
        return instance

    started: list[Instance] = []
    errors: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
        for spec, future in [(s, pool.submit(one, s)) for s in specs]:
            try:
                started.append(future.result())
            except Exception as exc:
                errors.append(exc)
                where = spec.engine or "the default engine"
                log.warning("%s/%s on %s: %s", spec.deployment, spec.color, where, exc)
    if errors and len(started) < need:
        for instance in started:
            with contextlib.suppress(WorkbenchError):
                backend.stop(instance)
        raise errors[0]
    return started
