"""A pipeline version served as one model: images in, lines out, over real HTTP.

The real PP-OCRv5 det/rec and PP-OCRv4 det/rec exports, with RapidOCR's v2 orientation
classifier, are published with two pipeline versions (``ocr`` 5.0.0 and 4.0.0); one
``workbench serve --model ocr`` loads both. A rendered page sent as a PNG (JSON base64,
and tritonclient's binary ``BYTES``) must come back as exactly the lines the same
OcrChain reads in this process from the same stage versions; switching the active
pipeline over the admin API switches every stage at once; bad input and a pipeline
whose stage changed or vanished get one clear sentence with a 4xx.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.codecs import _ocr
from tests.serving import _pipeline
from tests.serving.conftest import ADMIN_TOKEN, ServeProcess

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def repo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stages and pipelines of tests/serving/_pipeline.py, plus two pipelines meant to
    fail: ``ocr:7.0.0`` whose rec stage's manifest is then rewritten, and ``ocr:8.0.0``
    whose rec stage is then deleted."""
    _ocr.require_fonts()
    root = tmp_path_factory.mktemp("pipeline-repo") / "repo"
    repo = _pipeline.publish_pipelines(root, extra=[("rec-changed", "5.0.0", "v5_rec"),
                                                    ("rec-gone", "5.0.0", "v5_rec")])
    repo.publish_pipeline("ocr", "7.0.0", {"det": "ocr-det:5.0.0", "rec": "rec-changed:5.0.0"})
    repo.publish_pipeline("ocr", "8.0.0", {"det": "ocr-det:5.0.0", "rec": "rec-gone:5.0.0"})
    manifest = repo.path("rec-changed", "5.0.0") / "workbench.json"
    data = json.loads(manifest.read_text())
    data["notes"] = "re-published with other settings"
    manifest.write_text(json.dumps(data))
    repo.delete("rec-gone", "5.0.0")
    return root


@pytest.fixture(scope="module")
def server(serve: Any, repo_root: Path) -> ServeProcess:
    process: ServeProcess = serve(
        ["--repo", str(repo_root), "--model", "ocr", "--version", "5.0.0", "--load", "4.0.0",
         "--workers", "1", "--max-batch-size", "4"],
        env={"WORKBENCH_ADMIN_TOKEN": ADMIN_TOKEN}, wait_ready=False,
    )
    # six stage versions, each in its own worker process that imports Paddle and warms up
    process.wait_ready(timeout=600)
    return process


@pytest.fixture(scope="module")
def pages() -> tuple[list[bytes], list[list[str]]]:
    return _pipeline.pages(3)


def b64_body(images: list[bytes], **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(images)],
                        "parameters": {"content_type": "base64"},
                        "data": [base64.b64encode(i).decode() for i in images]}], **extra}


def outputs(doc: dict[str, Any]) -> dict[str, Any]:
    return {out["name"]: out["data"] for out in doc["outputs"]}


def expected(repo_root: Path, ref: str, images: list[bytes]) -> dict[str, Any]:
    """What the in-process OcrChain reads, flattened like the served answer."""
    from workbench import ModelRepository

    lines = _pipeline.in_process(ModelRepository(repo_root), ref)(images)
    flat = [(index, line) for index, found in enumerate(lines) for line in found]
    return {
        "text": [line.text for _, line in flat],
        "score": [line.score for _, line in flat],
        "boxes": [np.asarray(line.box, np.float32) for _, line in flat],
        "box_score": [line.box_score for _, line in flat],
        "image_index": [index for index, _ in flat],
    }


def assert_same_lines(served: dict[str, Any], want: dict[str, Any]) -> None:
    assert served["text"] == want["text"]
    assert served["image_index"] == want["image_index"]
    boxes = np.asarray(served["boxes"], np.float32).reshape(-1, 4, 2)
    assert np.array_equal(boxes, np.asarray(want["boxes"], np.float32).reshape(-1, 4, 2))
    assert np.allclose(served["score"], np.float32(want["score"]), rtol=0, atol=1e-6)
    assert np.allclose(served["box_score"], np.float32(want["box_score"]), rtol=0, atol=1e-6)


def test_pages_are_read_as_the_in_process_chain_reads_them(
    server: ServeProcess, repo_root: Path, pages: tuple[list[bytes], list[list[str]]]
) -> None:
    images, truths = pages
    with server.client() as client:
        answer = client.post("/v2/models/ocr/infer", json=b64_body(images))
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-model-version"] == "5.0.0"
    served = outputs(answer.json())
    assert_same_lines(served, expected(repo_root, "ocr:5.0.0", images))
    for index, truth in enumerate(truths):  # and they are the rendered lines
        found = [t for t, i in zip(served["text"], served["image_index"], strict=True) if i == index]
        assert _pipeline.page_cer(truth, found) <= 0.05, (truth, found)


def test_tritonclient_binary_bytes_get_the_same_lines(
    server: ServeProcess, pages: tuple[list[bytes], list[list[str]]]
) -> None:
    import tritonclient.http as triton

    images = pages[0][:2]
    with server.client() as client:
        want = outputs(client.post("/v2/models/ocr/infer", json=b64_body(images)).json())
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        tensor = triton.InferInput("image", [len(images)], "BYTES")
        tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
        result = client.infer("ocr", [tensor], outputs=[
            triton.InferRequestedOutput("text", binary_data=True),
            triton.InferRequestedOutput("boxes", binary_data=True),
        ])
    finally:
        client.close()
    assert [t.decode() for t in result.as_numpy("text")] == want["text"]
    assert np.array_equal(result.as_numpy("boxes"), np.asarray(want["boxes"], np.float32).reshape(-1, 4, 2))
    assert result.as_numpy("score") is None  # only what was asked for


def test_metadata_describes_the_pipeline_and_its_stages(server: ServeProcess) -> None:
    with server.client() as client:
        doc = client.get("/v2/models/ocr").json()
    assert doc["platform"] == "workbench_pipeline"
    assert sorted(doc["versions"]) == ["4.0.0", "5.0.0"]
    pipeline = doc["parameters"]["pipeline"]
    assert [(s["role"], s["model"], s["version"]) for s in pipeline["stages"]] == [
        ("det", "ocr-det", "5.0.0"), ("cls", "ocr-cls", "2.0.0"), ("rec", "ocr-rec", "5.0.0")]
    assert [o["name"] for o in pipeline["outputs"]] == ["text", "score", "boxes", "box_score", "image_index"]


def test_the_v4_pipeline_is_switched_in_and_rolled_back_as_one(
    server: ServeProcess, repo_root: Path, pages: tuple[list[bytes], list[list[str]]]
) -> None:
    images = pages[0][:1]
    with server.client() as client:
        pinned = client.post("/v2/models/ocr/versions/4.0.0/infer", json=b64_body(images))
        assert pinned.status_code == 200, pinned.text
        used = client.post("/v2/admin/use", json={"version": "4.0.0"}, headers=AUTH)
        assert used.status_code == 200, used.text
        active = client.post("/v2/models/ocr/infer", json=b64_body(images))
        assert active.headers["x-model-version"] == "4.0.0"
        back = client.post("/v2/admin/rollback", headers=AUTH)
        assert back.status_code == 200 and back.json()["version"] == "5.0.0"
        again = client.post("/v2/models/ocr/infer", json=b64_body(images))
        deep = client.get("/v2/health/deep", params={"version": "4.0.0"})
    want = expected(repo_root, "ocr:4.0.0", images)
    assert_same_lines(outputs(pinned.json()), want)
    assert_same_lines(outputs(active.json()), want)
    assert again.headers["x-model-version"] == "5.0.0"
    assert deep.status_code == 200 and set(deep.json()["outputs"]) == {"det", "cls", "rec"}


@pytest.mark.parametrize(("body", "status", "words"), [
    (b64_body([b"not a png at all"]), 400, "image 0: 16 bytes starting"),
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [0.0, 1.0]}]}, 400,
     "is an OCR pipeline: send encoded images as one BYTES input"),
    (b64_body([b"x"], outputs=[{"name": "labels"}]), 400, "unknown output 'labels'"),
])
def test_bad_requests_get_one_sentence(server: ServeProcess, body: dict[str, Any], status: int,
                                       words: str) -> None:
    with server.client() as client:
        answer = client.post("/v2/models/ocr/infer", json=body)
        ready = client.get("/v2/health/ready")
    assert answer.status_code == status
    assert words in answer.json()["error"]
    assert ready.status_code == 200


@pytest.mark.parametrize(("version", "status", "words"), [
    ("7.0.0", 422, "the manifest of its rec stage rec-changed:5.0.0 has changed since the pipeline "
                   "was published"),
    ("8.0.0", 422, "its rec stage rec-gone:5.0.0 is gone"),
])
def test_a_pipeline_whose_stage_changed_or_vanished_is_refused(
    server: ServeProcess, version: str, status: int, words: str
) -> None:
    with server.client() as client:
        answer = client.post("/v2/admin/load", json={"version": version}, headers=AUTH)
        infer = client.post("/v2/models/ocr/infer", json=b64_body([b"x"]))
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]
    assert "\n" not in answer.json()["error"]
    assert infer.headers["x-model-version"] == "5.0.0"  # the active pipeline is untouched


def stage_stats(client: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """The stage versions' entries of ``GET /v2/models/stats``, by (model, version)."""
    doc = client.get("/v2/models/stats").json()
    return {(s["name"], s["version"]): s for s in doc["model_stats"] if s["name"] != "ocr"}


def test_concurrent_requests_overlap_in_shared_stages_and_merge_their_pages(
    server: ServeProcess, repo_root: Path, pages: tuple[list[bytes], list[list[str]]]
) -> None:
    """Six requests at once with one inference thread: a request holds no thread while a
    stage computes, so the pages that reach the detector while it runs another request's
    page wait in its queue and go through in merged batches (the old chain held the one
    thread from decode to recognition: six requests, six detector runs); the classifier
    both pipelines name is one stage version with one set of counts."""
    from concurrent.futures import ThreadPoolExecutor

    page = pages[0][0]
    with server.client() as client:
        before = stage_stats(client)
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(
                lambda _: client.post("/v2/models/ocr/versions/5.0.0/infer", json=b64_body([page])),
                range(6)))
        after = stage_stats(client)
    want = expected(repo_root, "ocr:5.0.0", [page])
    for answer in answers:
        assert answer.status_code == 200, answer.text
        served = outputs(answer.json())
        assert served["text"] == want["text"]
        boxes = np.asarray(served["boxes"], np.float32).reshape(-1, 4, 2)
        assert np.array_equal(boxes, np.asarray(want["boxes"], np.float32).reshape(-1, 4, 2))
        assert np.allclose(served["score"], np.float32(want["score"]), rtol=0, atol=1e-5)
    assert sorted(after) == [("ocr-cls", "2.0.0"), ("ocr-det", "4.0.0"), ("ocr-det", "5.0.0"),
                             ("ocr-rec", "4.0.0"), ("ocr-rec", "5.0.0")]

    def grew(key: tuple[str, str], field: str) -> int:
        def value(doc: dict[str, Any]) -> int:
            return int(doc["inference_stats"]["success"]["count"] if field == "calls" else doc[field])
        return value(after[key]) - (value(before[key]) if key in before else 0)

    det = ("ocr-det", "5.0.0")
    assert grew(det, "calls") == 6  # one page per request
    assert grew(det, "inference_count") == 6
    assert grew(det, "execution_count") < 6  # some pages went through together
    merged = [b["batch_size"] for b in after[det]["batch_stats"] if b["batch_size"] > 1]
    assert merged and max(merged) <= 4  # never past max_batch_size


def test_a_request_alone_calls_its_stages_without_queueing(
    server: ServeProcess, pages: tuple[list[bytes], list[list[str]]]
) -> None:
    """With no other request in a chain, the stages are called straight from the request's
    inference thread (no hop through the stages' queues): each stage counts one call and
    one execution and no time queued."""
    with server.client() as client:
        before = stage_stats(client)
        answer = client.post("/v2/models/ocr/versions/4.0.0/infer", json=b64_body(pages[0][:1]))
        after = stage_stats(client)
    assert answer.status_code == 200, answer.text
    for key in [("ocr-det", "4.0.0"), ("ocr-cls", "2.0.0"), ("ocr-rec", "4.0.0")]:
        old = before.get(key, {"execution_count": 0, "inference_stats": {
            "success": {"count": 0}, "queue": {"count": 0, "ns": 0}}})
        new = after[key]
        assert new["inference_stats"]["success"]["count"] - old["inference_stats"]["success"]["count"] == 1
        assert new["execution_count"] - old["execution_count"] == 1
        assert new["inference_stats"]["queue"]["ns"] == old["inference_stats"]["queue"]["ns"], key
