"""Admin calls behind a bearer token, and version switches under concurrent load over HTTP."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from tests.serving.conftest import (
    ADMIN_TOKEN,
    ServeProcess,
    json_infer_body,
    metric_value,
    x_batch,
)

if TYPE_CHECKING:
    import httpx

OUT = "probabilities"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def server(serve: Any, demo_repo: Path) -> ServeProcess:
    return serve(
        ["--repo", str(demo_repo), "--model", "digits", "--alias", "stable", "--load", "1.1.0",
         "--workers", "2", "--max-queue-delay-ms", "1"],
        env={"WORKBENCH_ADMIN_TOKEN": ADMIN_TOKEN},
    )


@pytest.fixture
def client(server: ServeProcess) -> Any:
    with server.client() as client:
        yield client
        # every test leaves the instance as it found it: 1.0.0 active, 1.0.0 + 1.1.0 loaded
        client.post("/v2/admin/use", json={"version": "1.0.0"}, headers=AUTH)
        loaded = {v["version"] for v in client.get("/v2/admin/status", headers=AUTH).json()[
            "loaded"]}
        for extra in loaded - {"1.0.0", "1.1.0"}:
            client.post("/v2/admin/unload", json={"version": extra}, headers=AUTH)


@pytest.fixture(scope="module")
def expected(demo_repo: Path) -> dict[str, np.ndarray]:
    from workbench import ModelRepository, VersionHub

    hub = VersionHub(ModelRepository(demo_repo), "digits", device="cpu")
    try:
        return {v: hub.load(v).predict({"x": x_batch(2)})[OUT]
                for v in ("1.0.0", "1.1.0", "1.2.0")}
    finally:
        hub.close()


def admin(client: httpx.Client, action: str, body: dict[str, Any] | None = None,
          status: int = 200) -> dict[str, Any]:
    response = client.post(f"/v2/admin/{action}", json=body or {}, headers=AUTH)
    assert response.status_code == status, response.text
    doc: dict[str, Any] = response.json()
    return doc


def served_by(client: httpx.Client, **headers: str) -> str:
    response = client.post("/v2/models/digits/infer", json=json_infer_body(x_batch(2)),
                           headers=headers)
    assert response.status_code == 200, response.text
    return response.headers["x-model-version"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-xxxxxxxx"}, {"Authorization": f"Basic {ADMIN_TOKEN}"},
     {"Authorization": "Bearer"}],
    ids=["missing", "wrong", "not-bearer", "empty"],
)
def test_admin_refused_without_the_token(client: httpx.Client, headers: dict[str, str]) -> None:
    for method, path in [("GET", "status"), ("POST", "use"), ("POST", "load"),
                         ("POST", "unload"), ("POST", "rollback"), ("POST", "reload")]:
        response = client.request(method, f"/v2/admin/{path}", json={"version": "1.1.0"},
                                  headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "token" in response.json()["error"]
    assert served_by(client) == "1.0.0"  # nothing was switched


def test_status(client: httpx.Client) -> None:
    status = client.get("/v2/admin/status", headers=AUTH).json()
    assert status["model"] == "digits" and status["active"] == "1.0.0" and status["ready"]
    assert [v["version"] for v in status["loaded"]] == ["1.0.0", "1.1.0"]
    assert status["loaded"][0]["state"] == "ready" and status["loaded"][0]["active"] is True
    assert status["batching"]["enabled"] is True and status["workers"] == 2


def test_load_use_rollback_unload(client: httpx.Client) -> None:
    doc = admin(client, "load", {"version": "1.2.0"})
    assert doc["version"] == "1.2.0" and doc["active"] == "1.0.0"
    assert served_by(client, **{"x-model-version": "1.2.0"}) == "1.2.0"
    assert admin(client, "use", {"version": "1.2.0"})["active"] == "1.2.0"
    assert served_by(client) == "1.2.0"
    doc = admin(client, "rollback")
    assert doc["active"] == "1.0.0" and doc["previous"] == "1.2.0"
    assert served_by(client) == "1.0.0"
    admin(client, "unload", {"version": "1.2.0"})
    gone = client.post("/v2/models/digits/versions/1.2.0/infer", json=json_infer_body(x_batch(1)))
    assert gone.status_code == 404
    assert client.get("/metrics").text.count('workbench_loaded_versions{model="digits"} 2.0') == 1


def test_a_loaded_version_has_its_series_at_zero_until_unloaded(client: httpx.Client) -> None:
    """Prometheus' increase() needs a sample before a version's first request to count it."""
    admin(client, "load", {"version": "1.2.0"})
    text = client.get("/metrics").text
    for outcome in ("ok", "client_error", "server_error"):
        assert metric_value(text, "workbench_requests_total", version="1.2.0",
                            outcome=outcome) == 0
        assert metric_value(text, "workbench_replayed_requests_total", version="1.2.0",
                            outcome=outcome) == 0
    for histogram in ("request_duration_seconds", "queue_duration_seconds",
                      "inference_duration_seconds", "batch_size"):
        assert metric_value(text, f"workbench_{histogram}_count", version="1.2.0") == 0
    assert metric_value(text, "workbench_inflight_requests", version="1.2.0") == 0
    assert served_by(client, **{"x-model-version": "1.2.0"}) == "1.2.0"
    text = client.get("/metrics").text
    assert metric_value(text, "workbench_requests_total", version="1.2.0", outcome="ok") == 1
    admin(client, "unload", {"version": "1.2.0"})
    text = client.get("/metrics").text
    assert 'version="1.2.0"' not in text
    metric_value(text, "workbench_requests_total", version="1.0.0", outcome="ok")  # still loaded


def test_admin_conflicts_and_unknowns(client: httpx.Client) -> None:
    assert "active" in admin(client, "unload", {"version": "1.0.0"}, status=409)["error"]
    admin(client, "use", {"version": "1.2.0"}, status=404)  # not loaded
    admin(client, "load", {"version": "9.9.9"}, status=404)  # not in the repository
    admin(client, "use", {}, status=400)
    bad = client.post("/v2/admin/use", content=b"{nope", headers=AUTH)
    assert bad.status_code == 400


def test_reload_follows_an_alias(client: httpx.Client) -> None:
    doc = admin(client, "reload", {"version": "canary"})
    assert doc["changed"] is True and doc["active"] == "1.1.0"
    assert admin(client, "reload", {"version": "canary"})["changed"] is False
    doc = admin(client, "reload")  # the startup ref: stable
    assert doc["ref"] == "stable" and doc["active"] == "1.0.0"


def test_triton_repository_load_and_unload(server: ServeProcess, client: httpx.Client) -> None:
    """tritonclient's load_model reloads the startup alias and makes it active; unload_model
    frees every version but the active one; both need the admin token."""
    import tritonclient.http as triton

    triton_client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        with pytest.raises(triton.InferenceServerException, match="bearer token"):
            triton_client.load_model("digits")
        admin(client, "use", {"version": "1.1.0"})
        triton_client.load_model("digits", headers=AUTH)
        assert served_by(client) == "1.0.0"  # stable, re-resolved and active again
        triton_client.unload_model("digits", headers=AUTH)
        index = {entry["version"]: entry["state"]
                 for entry in triton_client.get_model_repository_index()}
        assert index == {"1.0.0": "READY", "1.1.0": "UNAVAILABLE", "1.2.0": "UNAVAILABLE"}
        assert triton_client.is_model_ready("digits")
        with pytest.raises(triton.InferenceServerException, match="unknown model"):
            triton_client.load_model("resnet", headers=AUTH)
        response = client.post("/v2/repository/models/digits/load", headers=AUTH,
                               json={"parameters": {"version": "1.1.0"}})
        assert response.status_code == 200 and served_by(client) == "1.1.0"
        response = client.post("/v2/repository/models/digits/unload", headers=AUTH,
                               json={"parameters": {"version": "1.2.0"}})
        assert response.status_code == 404  # not loaded
    finally:
        triton_client.close()
        admin(client, "load", {"version": "1.1.0"})  # as the other tests expect


def test_switching_under_concurrent_load_loses_nothing(
    server: ServeProcess, client: httpx.Client, expected: dict[str, np.ndarray]
) -> None:
    """Clients hammer the model while the active version flips, and a pinned version is
    loaded and unloaded: not one request fails, and every answer matches the version
    its x-model-version header names."""
    stop = threading.Event()
    failures: list[str] = []
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    body = json_infer_body(x_batch(2))

    def hammer(pinned: str | None) -> None:
        headers = {"x-model-version": pinned} if pinned else {}
        with server.client() as http:
            while not stop.is_set():
                response = http.post("/v2/models/digits/infer", json=body, headers=headers)
                if pinned and response.status_code == 404:  # unloaded: expected for pins
                    time.sleep(0.01)
                    continue
                version = response.headers.get("x-model-version", "?")
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                    continue
                data = np.reshape(response.json()["outputs"][0]["data"], (2, 10))
                if not np.allclose(data, expected[version], rtol=1e-5):
                    failures.append(f"answer does not match version {version}")
                with lock:
                    seen[version] += 1

    with ThreadPoolExecutor(6) as pool:
        runs = [pool.submit(hammer, None) for _ in range(5)]
        runs.append(pool.submit(hammer, "1.2.0"))
        try:
            admin(client, "load", {"version": "1.2.0"})
            switches = 0
            deadline = time.monotonic() + 6.0
            while time.monotonic() < deadline:
                target = ("1.1.0", "1.2.0", "1.0.0")[switches % 3]
                admin(client, "use", {"version": target})
                switches += 1
                time.sleep(0.05)
            admin(client, "use", {"version": "1.0.0"})
            admin(client, "unload", {"version": "1.2.0"})  # drains the pinned in-flight ones
            time.sleep(0.3)
        finally:
            stop.set()
            for run in runs:
                run.result()
    assert not failures, failures[:5]
    assert switches >= 10
    assert set(seen) == {"1.0.0", "1.1.0", "1.2.0"}, seen
    assert sum(seen.values()) > 100, seen
    metrics = client.get("/metrics").text
    assert 'outcome="server_error"' not in "\n".join(
        line for line in metrics.splitlines()
        if line.startswith("workbench_requests_total") and not line.endswith(" 0.0")
    )
