"""The image's health check: is this container (lab, serve or router mode) healthy?

``python -m workbench.health`` (the Dockerfile's ``HEALTHCHECK``, cheap to start) and
``workbench health`` run :func:`healthcheck`. Serving containers started by the docker
backend probe their own readiness endpoint with ``--url``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def loopback(host: str) -> str:
    """Where to reach a server listening on ``host`` from the same machine."""
    return _WILDCARDS.get(host, host)



def _pid1_args() -> list[str]:
    try:
        raw = Path("/proc/1/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def _option(args: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _url(host: str, port: str, path: str) -> str:
    host = loopback(host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}{path}"


def _health_target() -> tuple[str, str | None]:
    """This container's mode (``lab``, ``serve``, ``router``...) and the URL to probe.

    Read from PID 1's command line: ``tini -g -- /usr/local/bin/start.sh MODE ARGS...``.
    """
    args = _pid1_args()
    script = next((i for i, a in enumerate(args) if a.endswith("start.sh")), None)
    rest = args[script + 1:] if script is not None else []
    mode = rest[0] if rest else "lab"
    if mode == "serve":
        port = _option(rest, "--port") or os.environ.get("WORKBENCH_SERVE_PORT", "8000")
        return mode, _url(_option(rest, "--host") or "127.0.0.1", port, "/v2/health/ready")
    if mode == "lab":
        host = os.environ.get("WORKBENCH_LISTEN", "127.0.0.1")
        return mode, _url(host, os.environ.get("JUPYTER_PORT", "8888"), "/api")
    return mode, None


def _nginx_runs() -> bool:
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if comm.read_text().strip() == "nginx":
                return True
    return False


def healthcheck(url: str | None = None, timeout: float = 3.0) -> tuple[bool, str]:
    """The image's HEALTHCHECK: ``(healthy, message)``.

    With ``url``: healthy when it answers 2xx. Without: JupyterLab's ``/api`` in
    lab mode, ``/v2/health/ready`` in serve mode, a running nginx in router mode;
    any other command is healthy while it runs.
    """
    mode = "url"
    if url is None:
        mode, url = _health_target()
    if url is None:
        if mode == "router":
            runs = _nginx_runs()
            return runs, "nginx runs" if runs else "nginx is not running"
        return True, f"{mode}: no health endpoint"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    try:
        with direct.open(url, timeout=timeout) as response:
            return 200 <= response.status < 300, f"{url}: HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"{url}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m workbench.health [--url URL] [--timeout S]``: exit 0 when healthy."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m workbench.health", description="exit 0 when this container is healthy"
    )
    parser.add_argument("--url", help="probe this URL instead of the mode's endpoint")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    ok, message = healthcheck(args.url, args.timeout)
    print(("healthy: " if ok else "unhealthy: ") + message)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
