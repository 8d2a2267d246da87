"""The Open Inference Protocol over HTTP against a real ``workbench serve`` (digits model)."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from tests.serving.conftest import (
    ServeProcess,
    binary_infer_body,
    json_infer_body,
    metric_value,
    x_batch,
)

if TYPE_CHECKING:
    import httpx

OUT = "probabilities"  # the demo digits model's output tensor


@pytest.fixture(scope="module")
def server(serve: Any, demo_repo: Path) -> ServeProcess:
    """digits 1.0.0 active, 1.1.0 loaded too; batching on; a 1 MiB body limit; no admin token."""
    return serve([
        "--repo", str(demo_repo), "--model", "digits", "--version", "1.0.0", "--load", "canary",
        "--workers", "2", "--max-batch-size", "8", "--max-queue-delay-ms", "1",
        "--max-body-mb", "1",
    ])


@pytest.fixture(scope="module")
def client(server: ServeProcess) -> Any:
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def expected(demo_repo: Path) -> dict[str, np.ndarray]:
    """The digits outputs for x_batch(4) computed in-process, per version."""
    from workbench import ModelRepository, VersionHub

    hub = VersionHub(ModelRepository(demo_repo), "digits", device="cpu")
    try:
        return {
            v: hub.load(v).predict({"x": x_batch(4)})[OUT] for v in ("1.0.0", "1.1.0")
        }
    finally:
        hub.close()


# -- health and metadata ------------------------------------------------------------------


def test_server_live_ready_and_metadata(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2").json()
    assert meta["name"] == "paddle-workbench"
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(meta["extensions"])
    slash = client.get("/v2/", follow_redirects=False)
    assert slash.status_code == 200 and slash.json() == meta


def test_model_metadata_and_readiness(client: httpx.Client) -> None:
    meta = client.get("/v2/models/digits")
    assert meta.status_code == 200
    assert meta.headers["x-model-version"] == "1.0.0"
    doc = meta.json()
    assert doc["name"] == "digits"
    assert doc["versions"] == ["1.0.0", "1.1.0"]
    assert doc["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]
    assert doc["outputs"] == [{"name": OUT, "datatype": "FP32", "shape": [-1, 10]}]
    assert client.get("/v2/models/digits/ready").json()["ready"] is True


def test_version_metadata_and_readiness(client: httpx.Client) -> None:
    doc = client.get("/v2/models/digits/versions/1.1.0").json()
    assert doc["versions"] == ["1.1.0"]
    assert client.get("/v2/models/digits/versions/1.1.0/ready").status_code == 200
    not_loaded = client.get("/v2/models/digits/versions/1.2.0/ready")
    assert not_loaded.status_code == 503 and not_loaded.json()["ready"] is False
    missing = client.get("/v2/models/digits/versions/1.2.0")
    assert missing.status_code == 404 and "not loaded" in missing.json()["error"]
    assert client.get("/v2/models/nope").status_code == 404
    assert client.get("/v2/models/nope/ready").status_code == 404


def test_repository_index_and_config(client: httpx.Client) -> None:
    index = client.post("/v2/repository/index").json()
    states = {entry["version"]: entry["state"] for entry in index}
    assert states == {"1.0.0": "READY", "1.1.0": "READY", "1.2.0": "UNAVAILABLE"}
    config = client.get("/v2/models/digits/config").json()
    assert config["max_batch_size"] == 8
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [64]}]


def test_deep_health_runs_themetric_value(client: httpx.Client) -> None:
    deep = client.get("/v2/health/deep")
    assert deep.status_code == 200
    doc = deep.json()
    assert doc["ok"] is True and doc["model"] == "digits" and doc["version"] == "1.0.0"
    assert doc["seconds"] > 0
    pinned = client.get("/v2/health/deep", params={"version": "1.1.0"}).json()
    assert pinned["ok"] is True and pinned["version"] == "1.1.0"


# -- inference ----------------------------------------------------------------------------


def test_json_inference(client: httpx.Client, expected: dict[str, np.ndarray]) -> None:
    response = client.post("/v2/models/digits/infer",
                           json={"id": "r-1", **json_infer_body(x_batch(4))})
    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] == "1.0.0"
    doc = response.json()
    assert doc["model_name"] == "digits" and doc["model_version"] == "1.0.0" and doc["id"] == "r-1"
    (out,) = doc["outputs"]
    assert out["name"] == OUT and out["datatype"] == "FP32" and out["shape"] == [4, 10]
    np.testing.assert_allclose(np.reshape(out["data"], (4, 10)), expected["1.0.0"], rtol=1e-5)


def test_binary_inference(client: httpx.Client, expected: dict[str, np.ndarray]) -> None:
    body, headers = binary_infer_body(
        {"x": x_batch(4)}, outputs=[{"name": OUT, "parameters": {"binary_data": True}}]
    )
    response = client.post("/v2/models/digits/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:length])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 4 * 10 * 4
    probs = np.frombuffer(response.content[length:], dtype="<f4").reshape(4, 10)
    np.testing.assert_allclose(probs, expected["1.0.0"], rtol=1e-5)


def test_tritonclient_works_unchanged(server: ServeProcess,
                                      expected: dict[str, np.ndarray]) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("digits")
        assert client.is_model_ready("digits", "1.1.0")
        assert not client.is_model_ready("digits", "1.2.0")
        meta = client.get_model_metadata("digits", "1.1.0")
        assert meta["inputs"][0]["datatype"] == "FP32"
        tensor = triton.InferInput("x", [4, 64], "FP32")
        tensor.set_data_from_numpy(x_batch(4), binary_data=True)
        result = client.infer("digits", [tensor])  # binary in, binary out
        np.testing.assert_allclose(result.as_numpy(OUT), expected["1.0.0"], rtol=1e-5)
        assert result.get_response()["model_version"] == "1.0.0"
        result = client.infer(
            "digits", [tensor], model_version="1.1.0", request_compression_algorithm="gzip",
            outputs=[triton.InferRequestedOutput(OUT, binary_data=False)],
        )
        np.testing.assert_allclose(result.as_numpy(OUT), expected["1.1.0"], rtol=1e-5)
        tensor.set_data_from_numpy(x_batch(4), binary_data=False)  # JSON tensor
        result = client.infer("digits", [tensor], headers={"x-model-version": "1.1.0"})
        assert result.get_response()["model_version"] == "1.1.0"
        with pytest.raises(triton.InferenceServerException, match="not loaded"):
            client.infer("digits", [tensor], model_version="9.9.9")
    finally:
        client.close()


def test_nan_and_infinity_are_accepted_as_triton_does(client: httpx.Client) -> None:
    """perf_analyzer's random FP32 data holds NaN and infinity; Triton accepts them."""
    x = x_batch(2)
    x[0, 0], x[1, 1] = np.nan, np.inf
    body, headers = binary_infer_body({"x": x})
    assert client.post("/v2/models/digits/infer", content=body,
                       headers=headers).status_code == 200
    raw = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [NaN, ' + \
        b", ".join([b"Infinity"] + [b"0.5"] * 62) + b"]}]}"
    assert _infer(client, raw).status_code == 200


def test_a_response_without_a_request_id_carries_one(client: httpx.Client) -> None:
    ids = set()
    for _ in range(2):
        doc = client.post("/v2/models/digits/infer", json=json_infer_body(x_batch(1))).json()
        assert isinstance(doc["id"], str) and doc["id"]
        ids.add(doc["id"])
    assert len(ids) == 2


def test_statistics_extension_with_tritonclient(server: ServeProcess,
                                                client: httpx.Client) -> None:
    import tritonclient.http as triton

    for version in ("1.0.0", "1.1.0", "1.0.0"):
        client.post(f"/v2/models/digits/versions/{version}/infer",
                    json=json_infer_body(x_batch(3)))
    triton_client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        stats = triton_client.get_inference_statistics("digits")
        by_version = {entry["version"]: entry for entry in stats["model_stats"]}
        assert set(by_version) == {"1.0.0", "1.1.0"}
        entry = by_version["1.0.0"]
        assert entry["name"] == "digits"
        assert entry["inference_count"] >= 6 and entry["execution_count"] >= 2
        assert entry["last_inference"] > 0
        inference = entry["inference_stats"]
        for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
            assert inference[key]["count"] >= 2, key
            assert inference[key]["ns"] > 0, key
        assert {"fail", "cache_hit", "cache_miss"} <= set(inference)
        assert inference["success"]["ns"] >= inference["compute_infer"]["ns"]
        assert entry["batch_stats"] and entry["batch_stats"][0]["compute_infer"]["count"] >= 1
        one = triton_client.get_inference_statistics("digits", "1.1.0")["model_stats"]
        assert [e["version"] for e in one] == ["1.1.0"]
        assert one[0]["inference_stats"]["success"]["count"] >= 1
        every = triton_client.get_inference_statistics()["model_stats"]
        assert {e["version"] for e in every} == {"1.0.0", "1.1.0"}
        with pytest.raises(triton.InferenceServerException, match="unknown model"):
            triton_client.get_inference_statistics("resnet")
    finally:
        triton_client.close()


def test_pinning_by_url_header_and_alias(client: httpx.Client,
                                         expected: dict[str, np.ndarray]) -> None:
    body = json_infer_body(x_batch(4))

    def answer(path: str, headers: dict[str, str] | None = None) -> tuple[str, np.ndarray]:
        response = client.post(path, json=body, headers=headers)
        assert response.status_code == 200, response.text
        data = np.reshape(response.json()["outputs"][0]["data"], (4, 10))
        return response.headers["x-model-version"], data

    version, data = answer("/v2/models/digits/versions/1.1.0/infer")
    assert version == "1.1.0"
    np.testing.assert_allclose(data, expected["1.1.0"], rtol=1e-5)
    version, data = answer("/v2/models/digits/infer", {"x-model-version": "1.1.0"})
    assert version == "1.1.0"
    np.testing.assert_allclose(data, expected["1.1.0"], rtol=1e-5)
    assert answer("/v2/models/digits/infer", {"x-model-version": "canary"})[0] == "1.1.0"
    assert answer("/v2/models/digits/infer", {"x-model-version": "stable"})[0] == "1.0.0"
    assert answer("/v2/models/digits/infer")[0] == "1.0.0"


def test_concurrent_requests_are_batched_and_answered_correctly(
    server: ServeProcess, expected: dict[str, np.ndarray]
) -> None:
    rows = [x_batch(4)[i : i + 1] for i in range(4)]

    def one(i: int) -> np.ndarray:
        with server.client() as client:
            out = []
            for _ in range(10):
                response = client.post("/v2/models/digits/infer", json=json_infer_body(rows[i]))
                assert response.status_code == 200, response.text
                out.append(response.json()["outputs"][0]["data"])
            return np.asarray(out)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, [i % 4 for i in range(8)]))
    for i, result in enumerate(results):
        for row in result:  # every answer is this row's own, whatever batch carried it
            np.testing.assert_allclose(row, expected["1.0.0"][i % 4], rtol=1e-5)


# -- bad input never crashes the instance -------------------------------------------------


def _infer(client: httpx.Client, doc: Any = None, *, path: str = "/v2/models/digits/infer",
           content: bytes | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    if content is None:
        content = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return client.post(path, content=content, headers=headers)


BAD_INPUTS = [
    ("malformed JSON", b'{"inputs": [', 400, "not valid JSON"),
    ("not an object", b"[]", 400, "JSON object"),
    ("empty body", b"", 400, "not valid JSON"),
    ("no inputs", {"inputs": []}, 400, "non-empty 'inputs'"),
    ("wrong input name",
     {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64], "data": [0] * 64}]},
     400, "unknown input 'pixels'"),
    ("wrong datatype",
     {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1, 64], "data": [0] * 64}]},
     400, "datatype INT64"),
    ("unknown datatype",
     {"inputs": [{"name": "x", "datatype": "FLOAT", "shape": [1, 64], "data": [0] * 64}]},
     400, "unsupported datatype"),
    ("wrong rank",
     {"inputs": [{"name": "x", "datatype": "FP32", "shape": [64], "data": [0] * 64}]},
     400, "rank 1"),
    ("wrong shape",
     {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 63], "data": [0] * 63}]},
     400, "dimension 1 is 63"),
    ("data does not fill the shape",
     {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 64], "data": [0] * 64}]},
     400, "needs 128 values"),
    ("strings for floats",
     {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": ["a"]}]},
     400, "strings are not valid FP32"),
    ("batch over max_batch_size", json_infer_body(x_batch(9)), 400, "max_batch_size"),
    ("unknown output",
     {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [0] * 64}],
      "outputs": [{"name": "logits"}]}, 400, "unknown output 'logits'"),
]


@pytest.mark.parametrize(("case", "doc", "status", "message"), BAD_INPUTS,
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_a_4xx_with_a_message(client: httpx.Client, case: str, doc: Any,
                                           status: int, message: str) -> None:
    response = _infer(client, doc)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"]


def test_unknown_model_and_version(client: httpx.Client) -> None:
    body = json_infer_body(x_batch(1))
    response = _infer(client, body, path="/v2/models/mnist/infer")
    assert response.status_code == 404 and "unknown model 'mnist'" in response.json()["error"]
    response = _infer(client, body, path="/v2/models/digits/versions/7.0.0/infer")
    assert response.status_code == 404 and "not loaded" in response.json()["error"]
    response = _infer(client, body, headers={"x-model-version": "1.2.0"})
    assert response.status_code == 404 and "1.2.0 is not loaded" in response.json()["error"]
    response = _infer(client, body, headers={"x-model-version": "no-such-alias"})
    assert response.status_code == 404
    response = _infer(client, body, path="/v2/models/digits/versions/1.0.0/infer",
                      headers={"x-model-version": "1.1.0"})
    assert response.status_code == 400 and "header" in response.json()["error"]


def test_binary_framing_errors(client: httpx.Client) -> None:
    body, headers = binary_infer_body({"x": x_batch(2)})
    short = _infer(client, content=body[:-4], headers=headers)
    assert short.status_code == 400 and "remain in the body" in short.json()["error"]
    bad_length = _infer(client, content=body,
                        headers={**headers, "Inference-Header-Content-Length": "999999"})
    assert bad_length.status_code == 400
    assert "Inference-Header-Content-Length" in bad_length.json()["error"]


def test_oversized_body_is_413(client: httpx.Client) -> None:
    big = json_infer_body(x_batch(3000))  # ~2.4 MB of JSON, over the 1 MiB limit
    response = _infer(client, big)
    assert response.status_code == 413 and "limit" in response.json()["error"]

    def chunks() -> Any:  # no Content-Length: the limit applies while streaming
        for _ in range(40):
            yield b" " * 50_000

    streamed = client.post("/v2/models/digits/infer", content=chunks())
    assert streamed.status_code == 413
    bomb = gzip.compress(b" " * 5_000_000)  # small on the wire, too big inflated
    inflated = _infer(client, content=bomb, headers={"Content-Encoding": "gzip"})
    assert inflated.status_code == 413


def test_wrong_method_and_path_are_json_errors(client: httpx.Client) -> None:
    response = client.get("/v2/models/digits/infer")
    assert response.status_code == 405 and "not allowed" in response.json()["error"]
    assert response.headers["allow"] == "POST"
    response = client.delete("/v2/health/live")
    assert response.status_code == 405 and "GET" in response.headers["allow"]
    response = client.get("/v2/nothing")
    assert response.status_code == 404 and "no such endpoint" in response.json()["error"]


def test_admin_is_off_without_a_token(client: httpx.Client) -> None:
    response = client.get("/v2/admin/status", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 404 and "off" in response.json()["error"]
    assert client.post("/v2/admin/use", json={"version": "1.1.0"}).status_code == 404


def test_still_serving_after_all_the_bad_input(client: httpx.Client,
                                               expected: dict[str, np.ndarray]) -> None:
    response = client.post("/v2/models/digits/infer", json=json_infer_body(x_batch(4)))
    assert response.status_code == 200
    np.testing.assert_allclose(
        np.reshape(response.json()["outputs"][0]["data"], (4, 10)), expected["1.0.0"], rtol=1e-5
    )
    assert client.get("/v2/health/ready").status_code == 200


# -- metrics and logs ---------------------------------------------------------------------


def test_metrics_are_labelled_by_version(client: httpx.Client) -> None:
    for version in ("1.0.0", "1.1.0"):
        client.post(f"/v2/models/digits/versions/{version}/infer",
                    json=json_infer_body(x_batch(2)))
    client.post("/v2/models/digits/versions/1.1.0/infer", content=b"{")
    text = client.get("/metrics").text
    assert metric_value(text, "workbench_requests_total", version="1.0.0", outcome="ok") >= 1
    assert metric_value(text, "workbench_requests_total", version="1.1.0", outcome="ok") >= 1
    assert metric_value(text, "workbench_requests_total", outcome="client_error") >= 1
    assert metric_value(text, "workbench_request_duration_seconds_count", version="1.1.0") >= 1
    assert metric_value(text, "workbench_queue_duration_seconds_count", version="1.0.0") >= 1
    assert metric_value(text, "workbench_batch_size_count", version="1.0.0") >= 1
    assert metric_value(text, "workbench_inflight_requests", version="1.0.0") == 0
    assert metric_value(text, "workbench_loaded_versions", model="digits") == 2
    assert metric_value(text, "workbench_active_version_info", version="1.0.0") == 1
    assert metric_value(text, "workbench_process_resident_memory_bytes", model="digits") > 10e6


def test_metrics_carry_no_noise(client: httpx.Client) -> None:
    """No *_created samples, no always-zero series for requests that reached no version,
    one resident-memory gauge, and latency buckets between 10 and 25 ms."""
    client.post("/v2/models/digits/infer", content=b"{")  # reaches no version
    client.post("/v2/models/digits/infer", json=json_infer_body(x_batch(1)))
    text = client.get("/metrics").text
    assert "_created" not in text
    unresolved = [line for line in text.splitlines()
                  if 'version=""' in line and not line.startswith("#")]
    assert unresolved
    for line in unresolved:
        name = line.split("{")[0]
        assert name.startswith(("workbench_requests_total", "workbench_request_duration")), line
        if name == "workbench_requests_total":
            assert float(line.rsplit(" ", 1)[1]) > 0, line
    assert not re.search(r"^process_resident_memory_bytes", text, re.MULTILINE)
    assert metric_value(text, "workbench_process_resident_memory_bytes", model="digits") > 0
    for le in ("0.015", "0.02"):
        metric_value(text, "workbench_request_duration_seconds_bucket", version="1.0.0", le=le)


def test_logs_name_the_version_that_served(server: ServeProcess, client: httpx.Client) -> None:
    client.post("/v2/models/digits/versions/1.1.0/infer", json=json_infer_body(x_batch(1)))
    log = server.log()
    assert re.search(r"POST /v2/models/digits/versions/1.1.0/infer 200 version=1\.1\.0", log)
    assert re.search(r"POST /v2/models/digits/infer 200 version=1\.0\.0", log)


# -- a version whose Paddle program fails on valid-looking input ---------------------------


@pytest.fixture(scope="module")
def broken_server(serve: Any, demo_repo: Path, tmp_path_factory: pytest.TempPathFactory
                  ) -> ServeProcess:
    """digits 1.0.0 whose manifest (wrongly) declares a dynamic feature dimension, and an
    output of 11 classes: Paddle fails on 63 features; the deep health check fails."""
    root = tmp_path_factory.mktemp("broken-repo")
    shutil.copytree(demo_repo / "digits" / "1.0.0", root / "digits" / "1.0.0")
    manifest_path = root / "digits" / "1.0.0" / "workbench.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["inputs"][0]["shape"] = [-1, -1]
    manifest["outputs"][0]["shape"] = [-1, 11]
    manifest_path.write_text(json.dumps(manifest))
    return serve(["--repo", str(root), "--model", "digits", "--workers", "1"])


def test_paddle_failure_is_a_500_and_the_instance_keeps_serving(broken_server: ServeProcess
                                                               ) -> None:
    with broken_server.client() as client:
        bad = _infer(client, json_infer_body(x_batch(1)[:, :63]))
        assert bad.status_code == 500, bad.text
        assert "Paddle" in bad.json()["error"]
        assert bad.headers["x-model-version"] == "1.0.0"
        good = _infer(client, json_infer_body(x_batch(2)))
        assert good.status_code == 200
        assert client.get("/v2/health/live").status_code == 200
        metrics = client.get("/metrics").text
        assert metric_value(metrics, "workbench_requests_total", outcome="server_error") == 1


def test_deep_health_reports_a_signature_mismatch(broken_server: ServeProcess) -> None:
    with broken_server.client() as client:
        deep = client.get("/v2/health/deep")
        assert deep.status_code == 503
        doc = deep.json()
        assert doc["ok"] is False and "shape [400, 10], expected [400, 11]" in doc["error"]
        assert client.get("/v2/health/ready").status_code == 200  # shallow readiness holds
