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

    import pytest

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
    # a serving instance's workers are scheduled for throughput (no wake-up preemption)
    assert os.sched_getscheduler(pid) == os.SCHED_BATCH
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


def test_two_workers_their_memory_a_down_version_and_a_version_paddle_cannot_load(
    serve: Callable[..., ServeProcess], repo_copy: Path
) -> None:
    """``--workers 2``: two worker processes; while one is down the version says so per version,
    in its metrics and in the log; a version whose Paddle load fails leaves the active one serving."""
    from workbench import ModelRepository

    repo = ModelRepository(repo_copy)
    signature = repo.manifest("digits", "1.1.0")
    broken = repo_copy.parent / "broken"
    broken.mkdir()
    for name in ("inference.json", "inference.pdiparams"):
        (broken / name).write_bytes((repo_copy / "digits" / "1.1.0" / name).read_bytes())
    (broken / "inference.pdiparams").write_bytes(b"not paddle parameters" * 10)
    repo.publish("digits", "1.4.0", broken, inputs=signature.inputs, outputs=signature.outputs)

    server = serve(["--repo", str(repo_copy), "--model", "digits", "--version", "1.0.0",
                    "--isolation", "process", "--workers", "2", "--device", "cpu"],
                   env={"WORKBENCH_ADMIN_TOKEN": ADMIN_TOKEN})
    body = json_infer_body(x_batch(4))
    with server.client() as http:
        status = http.get("/v2/admin/status", headers=AUTH).json()
        (entry,) = status["loaded"]
        pids = [w["pid"] for w in entry["workers"]]
        assert len(set(pids)) == 2 and all(psutil.pid_exists(pid) for pid in pids), entry
        assert all(w["state"] == "ready" and w["rss_bytes"] > 20 * 2**20 for w in entry["workers"]), entry
        assert entry["memory"]["scope"] == "worker" and entry["memory"]["rss_bytes"] > 40 * 2**20, entry
        text = http.get("/metrics").text
        assert metric_value(text, "workbench_worker_resident_memory_bytes", version="1.0.0") >= sum(
            w["rss_bytes"] for w in entry["workers"]) * 0.5

        refused = http.post("/v2/admin/load", json={"version": "1.4.0"}, headers=AUTH)
        assert refused.status_code == 500 and "1.4.0" in refused.json()["error"], refused.text
        assert http.get("/v2/health/ready").status_code == 200
        answered = http.post("/v2/models/digits/infer", json=body)
        assert answered.status_code == 200 and answered.headers["x-model-version"] == "1.0.0"

        down: dict[str, object] = {}

        def snapshot() -> bool:
            if http.get("/v2/health/ready").status_code != 503:
                return False
            down["version_ready"] = http.get("/v2/models/digits/versions/1.0.0/ready").status_code
            down["metric"] = metric_value(http.get("/metrics").text, "workbench_version_ready",
                                          version="1.0.0")
            return True

        os.kill(pids[0], signal.SIGKILL)
        wait_until(snapshot, 10, what="readiness to drop while a worker is down")
        wait_until(lambda: http.get("/v2/health/ready").status_code == 200, 120,
                   what="the worker to restart")
        assert down == {"version_ready": 503, "metric": 0}, down
        text = http.get("/metrics").text
        assert metric_value(text, "workbench_worker_restarts_total", version="1.0.0") == 1
        assert metric_value(text, "workbench_version_ready", version="1.0.0") == 1
        assert http.post("/v2/models/digits/infer", json=body).status_code == 200
    log = server.log_path.read_text()
    assert "worker_died digits:1.0.0" in log and "worker_restarted digits:1.0.0" in log
    assert "load_failed digits:1.4.0" in log


def test_workers_default_to_one_per_usable_core_in_process_isolation_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workbench.cli.serve import default_workers
    from workbench.runtime import device

    assert default_workers("process", "cpu") == len(os.sched_getaffinity(0))
    assert default_workers("process", "auto") == len(os.sched_getaffinity(0))
    assert default_workers("process", "gpu:1") == 1
    assert default_workers("thread", "cpu") == 1
    monkeypatch.setattr(device, "visible_gpu_count", lambda: 2)
    assert default_workers("process", "auto") == 1  # auto is the GPU here: one worker per GPU
