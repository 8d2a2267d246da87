"""Real ``workbench serve`` processes on free loopback ports, for the HTTP integration tests."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests._wait import wait_until

ADMIN_TOKEN = "test-admin-token-0123456789"
START_TIMEOUT = 180.0  # paddle import + load + warm-up on a busy 2-core machine


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServeProcess:
    """One ``workbench serve`` subprocess; its output goes to a log file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-m", "workbench", "serve", *args, "--port", str(self.port)]
        self.log_path = log_path
        inherited = {k: v for k, v in os.environ.items() if k != "WORKBENCH_ADMIN_TOKEN"}
        self.env = {**inherited, "GLOG_minloglevel": "3", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait_ready: bool = True) -> ServeProcess:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                start_new_session=True,
            )
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"workbench serve exited with {self.proc.returncode}:\n{self.log()}"
                )
            return httpx.get(f"{self.url}/v2/health/ready", timeout=2.0).status_code == 200

        wait_until(ready, timeout, 0.25, what=f"readiness of {self.url}",
                   ignore=(httpx.TransportError,))

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60.0, **kwargs)


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServeProcess]]:
    """Factory: ``serve(args, env=None, start=True)``; every process is stopped afterwards."""
    started: list[ServeProcess] = []
    logs = tmp_path_factory.mktemp("serve-logs")

    def factory(args: list[str], *, env: dict[str, str] | None = None,
                start: bool = True, wait_ready: bool = True) -> ServeProcess:
        process = ServeProcess(args, logs / f"serve-{len(started)}.log", env)
        started.append(process)
        if start:
            process.start(wait_ready=wait_ready)
        return process

    yield factory
    for process in started:
        process.stop()


def x_batch(rows: int, seed: int = 0) -> np.ndarray:
    """Digit-like inputs: 64 features in [0, 1]."""
    return np.random.default_rng(seed).random((rows, 64), dtype=np.float32)


def json_infer_body(x: np.ndarray, name: str = "x", datatype: str = "FP32") -> dict[str, Any]:
    return {"inputs": [{"name": name, "datatype": datatype, "shape": list(x.shape),
                        "data": x.ravel().tolist()}]}


def binary_infer_body(arrays: dict[str, np.ndarray], **extra: Any) -> tuple[bytes, dict[str, str]]:
    inputs = []
    blobs = []
    for name, array in arrays.items():
        blob = array.tobytes()
        inputs.append({"name": name, "datatype": {"float32": "FP32", "int64": "INT64"}[
            array.dtype.name], "shape": list(array.shape),
            "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    header = json.dumps({"inputs": inputs, **extra}).encode()
    return header + b"".join(blobs), {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of the first sample of ``name`` whose labels include ``labels``."""
    for line in text.splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name}{labels} in the metrics")
