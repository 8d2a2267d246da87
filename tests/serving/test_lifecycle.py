"""The compute-bound model over HTTP, SIGTERM drain, startup failures and the CLI surface."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests._wait import wait_until
from tests.serving.conftest import ServeProcess, binary_infer_body, metric_value

OUT = "logits"  # the demo resnet's output tensor


def images(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, 3, 224, 224), dtype=np.float32)


@pytest.fixture(scope="module")
def expected(demo_repo: Path) -> np.ndarray:
    from workbench import ModelRepository, VersionHub

    hub = VersionHub(ModelRepository(demo_repo), "resnet", device="cpu")
    try:
        return hub.load("1.0.0").predict({"image": images(2)})[OUT]
    finally:
        hub.close()


@pytest.fixture(scope="module")
def resnet(serve: Any, demo_repo: Path) -> ServeProcess:
    return serve(["--repo", str(demo_repo), "--model", "resnet", "--workers", "2",
                  "--max-batch-size", "4"])


def test_large_binary_tensor_with_tritonclient(resnet: ServeProcess, expected: np.ndarray
                                               ) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(resnet.url.removeprefix("http://"),
                                          network_timeout=120.0)
    try:
        meta = client.get_model_metadata("resnet")
        assert meta["inputs"] == [{"name": "image", "datatype": "FP32",
                                   "shape": [-1, 3, 224, 224]}]
        tensor = triton.InferInput("image", [2, 3, 224, 224], "FP32")
        tensor.set_data_from_numpy(images(2), binary_data=True)
        result = client.infer("resnet", [tensor])
        assert result.as_numpy(OUT).shape == (2, 1000)
        np.testing.assert_allclose(result.as_numpy(OUT), expected, rtol=1e-4, atol=1e-5)
    finally:
        client.close()


def test_large_json_tensor_matches_binary(resnet: ServeProcess, expected: np.ndarray) -> None:
    x = images(2)
    body = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [2, 3, 224, 224],
                        "data": x.ravel().tolist()}]}
    with resnet.client() as client:
        response = client.post("/v2/models/resnet/infer", json=body)
    assert response.status_code == 200, response.text
    out = np.reshape(response.json()["outputs"][0]["data"], (2, 1000))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_other_requests_are_answered_while_a_queue_of_heavy_ones_computes(
    resnet: ServeProcess,
) -> None:
    """Inference runs off the event loop: health checks are answered between predictor
    runs, long before a queue of heavy requests has drained."""
    body, headers = binary_infer_body({"image": images(4)})

    def heavy() -> float:
        with resnet.client() as client:
            response = client.post("/v2/models/resnet/infer", content=body, headers=headers)
            assert response.status_code == 200
            return time.monotonic()

    with ThreadPoolExecutor(6) as pool, resnet.client() as client:
        runs = [pool.submit(heavy) for _ in range(6)]
        time.sleep(0.2)
        answered = []
        while not all(run.done() for run in runs):
            assert client.get("/v2/health/live").status_code == 200
            answered.append(time.monotonic())
        last_heavy = max(run.result() for run in runs)
    assert len([t for t in answered if t < last_heavy]) >= 2, (answered, last_heavy)


def test_sigterm_drains_in_flight_requests_and_exits_0(serve: Any, demo_repo: Path) -> None:
    server = serve(["--repo", str(demo_repo), "--model", "resnet", "--workers", "1",
                    "--no-batching"])
    body, headers = binary_infer_body({"image": images(4)})

    def slow_request() -> tuple[int, str]:
        with server.client() as client:
            response = client.post("/v2/models/resnet/infer", content=body, headers=headers)
            return response.status_code, response.headers.get("x-model-version", "")

    def all_inside_some_in_flight() -> bool:
        # Paddle holds the GIL while it runs, so this is answered between runs; SIGTERM
        # once every request is inside the app (served or in flight) and some still run.
        text = httpx.get(f"{server.url}/metrics", timeout=30).text
        inflight = metric_value(text, "workbench_inflight_requests", version="1.0.0")
        served = metric_value(text, "workbench_requests_total", version="1.0.0", outcome="ok")
        return inflight >= 1 and inflight + served == 4

    with ThreadPoolExecutor(4) as pool:
        runs = [pool.submit(slow_request) for _ in range(4)]
        wait_until(all_inside_some_in_flight, 60, 0.01, what="requests in flight",
                   ignore=(AssertionError,))
        server.signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.TransportError):  # no longer accepting
            httpx.get(f"{server.url}/v2/health/live", timeout=2)
        results = [run.result(timeout=120) for run in runs]
    assert results == [(200, "1.0.0")] * 4
    assert server.wait(60) == 0
    log = server.log()
    assert "Shutting down" in log and "resnet:1.0.0 unloaded" in log


def test_startup_failure_in_background_load_exits_nonzero(
    serve: Any, demo_repo: Path, tmp_path: Path
) -> None:
    root = tmp_path / "repo"
    shutil.copytree(demo_repo / "digits" / "1.0.0", root / "digits" / "1.0.0")
    params = root / "digits" / "1.0.0" / "inference.pdiparams"
    params.write_bytes(params.read_bytes()[:-8] + b"tampered")
    server = serve(["--repo", str(root), "--model", "digits"], wait_ready=False)
    code = server.wait(120)
    assert code == 5, server.log()  # IntegrityError's exit code
    assert "inference.pdiparams" in server.log()


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_unknown_version_fails_before_binding(demo_repo: Path) -> None:
    result = _cli("serve", "--repo", str(demo_repo), "--model", "digits", "--version", "9.9.9")
    assert result.returncode == 4, result.stderr
    assert "9.9.9" in result.stderr


def test_busy_port_fails_at_once_with_one_sentence(demo_repo: Path) -> None:
    """Nothing is loaded and nothing claims to be serving when the port is taken."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = _cli("serve", "--repo", str(demo_repo), "--model", "digits",
                      "--port", str(port), "--log-level", "debug")
        seconds = time.monotonic() - started
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"port {port} on 127.0.0.1 is already in use; choose another with --port" in output
    assert "Traceback" not in output
    for claim in (r"\bready\b", "serving digits", r"\bloaded\b"):
        assert not re.search(claim, output), output
    assert seconds < 60, seconds  # no model was loaded


def test_version_and_alias_are_exclusive(demo_repo: Path) -> None:
    result = _cli("serve", "--repo", str(demo_repo), "--model", "digits", "--version", "1.0.0",
                  "--alias", "stable")
    assert result.returncode != 0
    assert "not both" in result.stderr


def test_serve_help_lists_the_options() -> None:
    from typer.testing import CliRunner

    from workbench.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--repo", "--model", "--version", "--alias", "--load", "--device", "--host",
                   "--port", "--workers", "--max-batch-size", "--max-queue-delay-ms",
                   "--no-batching", "--admin-token-file", "--max-queue", "--max-connections",
                   "--header-timeout", "--body-timeout", "--keep-alive-timeout",
                   "--reject-nonfinite"):
        assert option in result.output


def test_admin_token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.cli.serve import read_admin_token
    from workbench.errors import WorkbenchError

    monkeypatch.delenv("WORKBENCH_ADMIN_TOKEN", raising=False)
    assert read_admin_token(None) is None
    monkeypatch.setenv("WORKBENCH_ADMIN_TOKEN", "from-the-environment")
    assert read_admin_token(None) == "from-the-environment"
    token = tmp_path / "token"
    token.write_text("from-a-file-123\n")
    assert read_admin_token(token) == "from-a-file-123"
    token.write_text("")
    with pytest.raises(WorkbenchError, match="empty"):
        read_admin_token(token)
    with pytest.raises(WorkbenchError, match="cannot read"):
        read_admin_token(tmp_path / "missing")
