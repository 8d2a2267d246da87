"""Run a serving instance under uvicorn, with a graceful SIGTERM.

uvicorn binds (loopback by default) and answers liveness at once; the startup
versions load and warm in the background, and readiness turns green when they are
in. On SIGTERM (or Ctrl+C) uvicorn stops accepting, lets in-flight requests finish
(up to ``graceful_timeout`` seconds), then the app's shutdown closes the batchers and
drains and unloads every version; the process exits 0. If a startup version cannot
be loaded, the server stops and :func:`run` raises that error.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

from workbench._paddle import import_inference
from workbench.errors import MissingDependencyError

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


def run(hub: VersionHub, settings: ServingSettings, options: ServerOptions) -> None:
    """Serve ``hub`` until SIGTERM/SIGINT; raise the startup error if loading failed."""
    import uvicorn

    from workbench.serving.app import create_app

    with contextlib.suppress(MissingDependencyError):
        # Paddle imported once uvicorn runs would take over SIGTERM (see _paddle);
        # imported first, uvicorn's handler is the one that drains.
        import_inference()
    app = create_app(hub, settings=settings)
    service = app.state.service
    loop, http = fastest_loop()
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        loop=loop,
        http=http,
        lifespan="on",
        access_log=False,  # ours (workbench.serving.access) names the version
        log_config=None,
        log_level=options.log_level,
        timeout_graceful_shutdown=options.graceful_timeout,  # type: ignore[arg-type]
        backlog=options.backlog,
        server_header=False,
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
                    options.port, loop, http)
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if service.startup_error is not None:
        raise service.startup_error
    logger.info("%s: stopped", hub.model)


def _after_shutdown(signum: int, frame: object) -> None:
    logger.debug("signal %d after shutdown ignored", signum)
