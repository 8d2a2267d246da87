"""``%paddle serve``: run ``workbench serve`` beside the kernel, on loopback, and keep a handle.

The serving instance is a child process (the same command an SSH user or a
serving container runs), so a crash or a GIL-heavy load never takes the kernel
down. Its output goes to a log file under the workbench home.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from workbench_ext.errors import SessionError
from workbench_ext.served import ServedModel, free_port

if TYPE_CHECKING:
    from workbench_ext.state import Session

log = logging.getLogger(__name__)


def start(
    session: Session,
    model: str,
    version: str,
    *,
    port: int | None = None,
    device: str = "cpu",
    workers: int = 1,
    timeout: float = 120.0,
    extra: list[str] | None = None,
) -> ServedModel:
    """Start ``workbench serve`` for ``model`` ``version`` and wait until it is ready."""
    from workbench.deploy import ServingClient

    host = "127.0.0.1"
    port = port or free_port(host)
    logs = session.home / "serve"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{model}-{port}.log"
    command = [
        sys.executable,
        "-m",
        "workbench",
        "serve",
        "--repo",
        str(session.repo.root),
        "--model",
        model,
        "--version",
        version,
        "--host",
        host,
        "--port",
        str(port),
        "--device",
        device,
        "--workers",
        str(workers),
        *(extra or []),
    ]
    env = {**os.environ}
    env.setdefault("GLOG_minloglevel", "3")
    with log_path.open("ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    served = ServedModel(model, version, host, port, process, log_path)
    deadline = time.monotonic() + timeout
    with ServingClient(served.url, timeout=2.0) as client:
        while True:
            if not served.running:
                raise SessionError(
                    f"workbench serve exited with {process.returncode}; last lines of its log:\n"
                    + served.logs(15)
                )
            if client.ready().ok:
                break
            if time.monotonic() > deadline:
                served.stop()
                raise SessionError(f"{model} {version} was not ready on {served.url} within {timeout:g}s")
            time.sleep(0.2)
    session.servers[port] = served
    return served


def stop(session: Session, which: str) -> list[ServedModel]:
    """Stop served models by port (or ``all``)."""
    if which == "all":
        ports = list(session.servers)
    else:
        try:
            ports = [int(which)]
        except ValueError:
            raise SessionError(f"stop what? give a port or 'all', not {which!r}") from None
        if ports[0] not in session.servers:
            known = ", ".join(str(p) for p in session.servers) or "none"
            raise SessionError(f"nothing served on port {ports[0]} from this kernel (ports: {known})")
    stopped = []
    for port in ports:
        served = session.servers.pop(port)
        served.stop()
        stopped.append(served)
    return stopped
