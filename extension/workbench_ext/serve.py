"""``%paddle serve``: run ``workbench serve`` beside the kernel, on loopback, and keep a handle.

The serving instance is a child process (the same command an SSH user or a
serving container runs), so a crash or a GIL-heavy load never takes the kernel
down. Its output goes to a log file under the workbench home.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench_ext.state import SessionError

if TYPE_CHECKING:
    from workbench_ext.state import Session

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class ServedModel:
    """A ``workbench serve`` process started from the notebook."""

    model: str
    version: str
    host: str
    port: int
    process: subprocess.Popen[bytes] = field(repr=False)
    log_path: Path = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def client(self, timeout: float = 30.0) -> Any:
        """A ServingClient for this instance (Open Inference Protocol over HTTP)."""
        from workbench.deploy.client import ServingClient

        return ServingClient(self.url, timeout=timeout)

    def logs(self, tail: int = 50) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-tail:])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (drain in-flight requests), then kill after ``timeout``."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def _repr_html_(self) -> str:
        state = "running" if self.running else f"exited ({self.process.returncode})"
        return (
            f"<p>serving <b>{self.model}</b> {self.version} at <a href='{self.url}/v2' target='_blank'>"
            f"<code>{self.url}</code></a> (pid {self.pid}, {state})</p>"
        )

    def __str__(self) -> str:
        state = "running" if self.running else f"exited ({self.process.returncode})"
        return f"serving {self.model} {self.version} at {self.url} (pid {self.pid}, {state})"


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
    from workbench.deploy.client import ServingClient

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
