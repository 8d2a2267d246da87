"""A ``workbench serve`` process started from the notebook: its handle, as the session keeps it."""

from __future__ import annotations

import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
        from workbench.deploy import ServingClient

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
