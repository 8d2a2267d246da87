"""Run a serving instance under uvicorn, with a graceful SIGTERM.

The listening socket is bound first (:func:`bind`), before anything loads: a busy port
fails at once with one sentence. uvicorn then serves on it (loopback by default) and
answers liveness at once; the startup versions load and warm in the background, and
readiness turns green when they are in. Connections are guarded by
:class:`~workbench.serving.connections.ConnectionLimits` (timeouts, sizes, count).
On SIGTERM (or Ctrl+C) uvicorn stops accepting, lets in-flight requests finish
(up to ``graceful_timeout`` seconds), then the app's shutdown closes the batchers and
drains and unloads every version; the process exits 0. If a startup version cannot
be loaded, the server stops and :func:`run` raises that error.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import logging
import signal
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from workbench._paddle import import_inference
from workbench.errors import MissingDependencyError, ServingError
from workbench.serving.connections import ConnectionLimits

if TYPE_CHECKING:
    from workbench.runtime.hub import VersionHub
    from workbench.serving.service import ServingSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerOptions:
    """Where and how uvicorn listens."""

    host: str = "127.0.0.1"
    port: int = 8000
    graceful_timeout: float = 30.0
    log_level: str = "info"
    backlog: int = 2048
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in 0..65535, not {self.port}")
        if self.graceful_timeout < 0:
            raise ValueError("graceful_timeout must be >= 0")


def fastest_loop() -> tuple[str, str]:
    """uvloop and httptools where installed, else asyncio and h11."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return loop, http


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port``; a busy or unusable address is one sentence."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServingError(
                f"port {port} on {host} is already in use; choose another with --port"
            ) from exc
        raise ServingError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    except (OverflowError, socket.gaierror) as exc:
        sock.close()
        raise ServingError(f"cannot listen on {host}:{port}: {exc}") from exc
    return sock


def run(
    hub: VersionHub,
    settings: ServingSettings,
    options: ServerOptions,
    sock: socket.socket | None = None,
) -> None:
    """Serve ``hub`` until SIGTERM/SIGINT; raise the startup error if loading failed.

    ``sock``: the socket from :func:`bind` (bound here when not given), so nothing is
    loaded, and nothing logged as serving, unless the address is ours.
    """
    import uvicorn

    from workbench.serving.app import create_app
    from workbench.serving.connections import guarded_protocol

    if sock is None:
        sock = bind(options.host, options.port)
    if hub.isolation != "process":  # in process isolation Paddle lives in the workers only
        with contextlib.suppress(MissingDependencyError):
            # Paddle imported once uvicorn runs would take over SIGTERM (see _paddle);
            # imported first, uvicorn's handler is the one that drains.
            import_inference()
    app = create_app(hub, settings=settings)
    service = app.state.service
    loop, http = fastest_loop()
    limits = options.limits
    http_protocol: type[object] | str = http
    if http == "httptools":
        http_protocol = guarded_protocol(limits)
    else:  # pragma: no cover - uvicorn[standard] brings httptools
        logger.warning("httptools is not installed: header and body read timeouts are off")
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        loop=loop,
        http=http_protocol,  # type: ignore[arg-type]
        ws="none",
        lifespan="on",
        timeout_keep_alive=limits.keep_alive_timeout,  # type: ignore[arg-type]
        h11_max_incomplete_event_size=limits.max_header_bytes,
        access_log=False,  # ours (workbench.serving.access) names the version
        log_config=None,
        log_level=options.log_level,
        timeout_graceful_shutdown=options.graceful_timeout,  # type: ignore[arg-type]
        backlog=options.backlog,
        server_header=False,
        proxy_headers=False,  # nothing here reads the client address; saves a layer per request
    )
    server = uvicorn.Server(config)

    def fatal(exc: BaseException) -> None:
        server.should_exit = True

    service.on_fatal = fatal
    # uvicorn re-raises the signal it caught once it has shut down; with the default
    # handlers that would kill the process (exit -15) after a clean drain. Handlers
    # that do nothing make a drained SIGTERM exit 0, as orchestrators expect.
    previous = {sig: signal.signal(sig, _after_shutdown) for sig in (signal.SIGTERM,)}
    try:
        logger.info("serving %s on http://%s:%d (%s, %s)", hub.model, options.host,
                    sock.getsockname()[1], loop, http)
        server.run(sockets=[sock])
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if service.startup_error is not None:
        raise service.startup_error
    logger.info("%s: stopped", hub.model)


def _after_shutdown(signum: int, frame: object) -> None:
    logger.debug("signal %d after shutdown ignored", signum)
