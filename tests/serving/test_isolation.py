"""``workbench serve --isolation process``: real worker processes behind real HTTP."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING

import httpx
import psutil

from tests._wait import wait_until
from tests.serving.conftest import ADMIN_TOKEN, json_infer_body, metric_value, x_batch

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.serving.conftest import ServeProcess

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _workers(server: ServeProcess, version: str = "1.0.0") -> list[int]:
    with server.client() as client:
        status = client.get("/v2/admin/status", headers=AUTH).json()
    entry = next(v for v in status["loaded"] if v["version"] == version)
    assert entry["isolation"] == "process"
    return [w["pid"] for w in entry["workers"]]


def test_kill_9_of_a_worker_fails_only_in_flight_requests_and_recovers(
    serve: Callable[..., ServeProcess], demo_repo: Path
) -> None:
    server = serve(["--repo", str(demo_repo), "--model", "digits", "--version", "1.0.0",
                    "--isolation", "process", "--workers", "1", "--device", "cpu"],
                   env={"WORKBENCH_ADMIN_TOKEN": ADMIN_TOKEN})
    assert server.proc is not None
    maps = psutil.Process(server.proc.pid).memory_maps()
    assert not [m.path for m in maps if "paddle" in m.path.lower()], "the front must not load Paddle"
    pid = _workers(server)[0]
    body = json_infer_body(x_batch(4))
    codes: Counter[int] = Counter()
    errors: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with server.client() as http:
            while not stop.is_set():
                try:
                    response = http.post("/v2/models/digits/infer", json=body)
                except httpx.TransportError as exc:
                    errors.append(f"transport: {exc}")
                    continue
                codes[response.status_code] += 1
                if response.status_code != 200:
                    errors.append(response.json().get("error", ""))
                    time.sleep(0.05)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: httpx.get(f"{server.url}/v2/health/ready").status_code == 503, 10,
               what="readiness to drop while the worker is down")
    wait_until(lambda: httpx.get(f"{server.url}/v2/health/ready").status_code == 200, 120,
               what="the worker to restart")
    time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert set(codes) <= {200, 503}, codes
    assert codes[200] > 0
    assert all("digits:1.0.0" in text for text in errors), errors
    assert not psutil.pid_exists(pid)
    assert _workers(server)[0] != pid
    with server.client() as http:
        text = http.get("/metrics").text
        assert http.post("/v2/models/digits/infer", json=body).status_code == 200
    assert metric_value(text, "workbench_worker_restarts_total", version="1.0.0") == 1
    assert metric_value(text, "workbench_version_ready", version="1.0.0") == 1
    assert metric_value(text, "workbench_worker_resident_memory_bytes", version="1.0.0") > 20 * 2**20
