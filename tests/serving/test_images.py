"""Image in, text out: a real ``workbench serve`` answering encoded images through codecs.

The PP-OCRv5 mobile recogniser and detector are published from their PaddleX exports
(the manifest records the codec from inference.yml); clients send PNGs as OIP ``BYTES``
tensors: JSON base64 (MLServer/KServe), the binary extension by hand (KServe's plain
REST style) and ``tritonclient.http``. All must get what the codec computes in-process.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.codecs import _ocr
from tests.serving.conftest import ADMIN_TOKEN, ServeProcess, binary_infer_body, json_infer_body

pytestmark = pytest.mark.slow

LINES = _ocr.LINES[:4]


@pytest.fixture(scope="module")
def ocr_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The PP-OCRv5 exports published as is: rec 5.0.0, det 5.0.0 (oneDNN off: its PIR
    program fails under oneDNN on the CPU build); the manifests carry the codecs."""
    _ocr.require_exports()
    _ocr.require_fonts()
    from workbench import ModelRepository
    from workbench.model.runtime_settings import RuntimeSettings
    from workbench.runtime.paddle import PaddleProbe

    root = tmp_path_factory.mktemp("ocr-repo")
    repo = ModelRepository(root)
    rec = repo.publish("rec", "5.0.0", _ocr.V5_REC, probe=PaddleProbe())
    det = repo.publish("det", "5.0.0", _ocr.V5_DET, probe=PaddleProbe(), runtime=RuntimeSettings.parse("onednn=off"))
    assert rec.codec is not None and det.codec is not None
    return root


@pytest.fixture(scope="module")
def rec_server(serve: Any, ocr_repo: Path) -> ServeProcess:
    return serve(["--repo", str(ocr_repo), "--model", "rec", "--workers", "1",
                  "--max-batch-size", "8"], env={"WORKBENCH_ADMIN_TOKEN": ADMIN_TOKEN})


@pytest.fixture(scope="module")
def det_server(serve: Any, ocr_repo: Path) -> ServeProcess:
    return serve(["--repo", str(ocr_repo), "--model", "det", "--workers", "1", "--max-batch-size", "2"],
                 env={"WORKBENCH_ADMIN_TOKEN": ADMIN_TOKEN})


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    return [_ocr.png(_ocr.render_line(text)) for text in LINES]


@pytest.fixture(scope="module")
def expected_texts(lines: list[bytes]) -> list[str]:
    """What the codec reads in-process from the same PNGs through the same weights."""
    from workbench.codecs import Codec

    codec = Codec.from_export(_ocr.V5_REC)
    return [r.text for r in codec.run(lines, _ocr.run_fn(_ocr.V5_REC), 8)]


def b64_body(images: list[bytes], **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(images)],
                        "parameters": {"content_type": "base64"},
                        "data": [base64.b64encode(i).decode() for i in images]}], **extra}


def binary_body(images: list[bytes], **extra: Any) -> tuple[bytes, dict[str, str]]:
    """KServe's plain REST client style: a JSON header and length-prefixed BYTES."""
    blob = b"".join(len(i).to_bytes(4, "little") + i for i in images)
    header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(images)],
                                     "parameters": {"binary_data_size": len(blob)}}], **extra}).encode()
    return header + blob, {"Inference-Header-Content-Length": str(len(header)),
                           "Content-Type": "application/octet-stream"}


def outputs(doc: dict[str, Any]) -> dict[str, Any]:
    return {out["name"]: out for out in doc["outputs"]}


def test_json_base64_images_are_read_as_text(rec_server: ServeProcess, lines: list[bytes],
                                             expected_texts: list[str]) -> None:
    with rec_server.client() as client:
        answer = client.post("/v2/models/rec/infer", json=b64_body(lines))
    assert answer.status_code == 200, answer.text
    out = outputs(answer.json())
    assert out["text"]["datatype"] == "BYTES" and out["text"]["shape"] == [len(lines)]
    assert out["text"]["data"] == expected_texts
    assert [t.strip() for t in out["text"]["data"]] == LINES  # ground truth too
    assert all(0.5 < s <= 1.0 for s in out["score"]["data"])
    assert answer.headers["x-model-version"] == "5.0.0"


def test_binary_images_get_the_same_answer(rec_server: ServeProcess, lines: list[bytes],
                                           expected_texts: list[str]) -> None:
    body, headers = binary_body(lines, outputs=[{"name": "text"}])
    with rec_server.client() as client:
        answer = client.post("/v2/models/rec/infer", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    out = outputs(answer.json())
    assert list(out) == ["text"] and out["text"]["data"] == expected_texts


def test_tritonclient_sends_bytes_tensors(rec_server: ServeProcess, lines: list[bytes],
                                          expected_texts: list[str]) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(rec_server.url.removeprefix("http://"))
    try:
        tensor = triton.InferInput("image", [len(lines)], "BYTES")
        tensor.set_data_from_numpy(np.array(lines, dtype=np.object_), binary_data=True)
        result = client.infer("rec", [tensor], outputs=[
            triton.InferRequestedOutput("text", binary_data=True),
            triton.InferRequestedOutput("score", binary_data=False),
        ])
        texts = [t.decode("utf-8") for t in result.as_numpy("text")]
        assert texts == expected_texts
        assert result.as_numpy("score").shape == (len(lines),)
    finally:
        client.close()


def test_malformed_images_are_refused_and_the_instance_keeps_serving(
    rec_server: ServeProcess, lines: list[bytes]
) -> None:
    with rec_server.client() as client:
        bad = client.post("/v2/models/rec/infer", json=b64_body([lines[0], b"GIF89a not an image"]))
        assert bad.status_code == 400
        assert "image 1" in bad.json()["error"] and "not an image" in bad.json()["error"]
        not_b64 = b64_body(lines[:1])
        not_b64["inputs"][0]["data"] = ["%%% not base64"]
        bad = client.post("/v2/models/rec/infer", json=not_b64)
        assert bad.status_code == 400 and "not valid base64" in bad.json()["error"]
        bad = client.post("/v2/models/rec/infer", json=b64_body(lines[:1], outputs=[{"name": "boxes"}]))
        assert bad.status_code == 400 and "unknown output 'boxes'" in bad.json()["error"]
        good = client.post("/v2/models/rec/infer", json=b64_body(lines[:1]))
        assert good.status_code == 200
        assert outputs(good.json())["text"]["data"][0].strip() == LINES[0]


def test_model_metadata_describes_the_image_call(rec_server: ServeProcess) -> None:
    with rec_server.client() as client:
        meta = client.get("/v2/models/rec").json()
    assert meta["inputs"][0]["datatype"] == "FP32"  # the raw signature stays what it is
    codec = meta["parameters"]["codec"]
    assert codec["task"] == "text-recognition"
    assert codec["inputs"][0]["datatype"] == "BYTES"
    assert [o["name"] for o in codec["outputs"]] == ["text", "score"]


def test_raw_tensors_still_work_beside_images(rec_server: ServeProcess) -> None:
    x = np.random.default_rng(0).random((2, 3, 48, 320), dtype=np.float32)
    with rec_server.client() as client:
        answer = client.post("/v2/models/rec/infer", json=json_infer_body(x))
        assert answer.status_code == 200, answer.text
        (out,) = answer.json()["outputs"]
        assert out["datatype"] == "FP32" and out["shape"] == [2, 40, 18385]
        body, headers = binary_infer_body({"x": x})
        assert client.post("/v2/models/rec/infer", content=body, headers=headers).status_code == 200


def test_detection_answers_boxes_per_image(det_server: ServeProcess) -> None:
    from workbench.codecs import Codec

    page, truth = _ocr.render_page(_ocr.LINES[:3])
    other, _ = _ocr.render_page(_ocr.LINES[3:5], width=520)
    images = [_ocr.png(page), _ocr.png(other)]
    with det_server.client() as client:
        answer = client.post("/v2/models/det/infer", json=b64_body(images))
    assert answer.status_code == 200, answer.text
    out = outputs(answer.json())
    index = np.array(out["image_index"]["data"])
    boxes = np.array(out["boxes"]["data"], dtype=np.float32).reshape(out["boxes"]["shape"])
    assert out["boxes"]["shape"][1:] == [4, 2] and list(np.bincount(index)) == [3, 2]
    expected = Codec.from_export(_ocr.V5_DET).run(images, _ocr.run_fn(_ocr.V5_DET, mkldnn=False))
    np.testing.assert_allclose(boxes[index == 0], expected[0].boxes, atol=1.0)
    np.testing.assert_allclose(boxes[index == 1], expected[1].boxes, atol=1.0)
    for (_, (x0, y0, x1, y1)), box in zip(truth, sorted(boxes[index == 0], key=lambda b: b[0][1]), strict=True):
        assert box[0][0] <= x0 + 4 and box[2][0] >= x1 - 4 and box[0][1] <= y0 + 4 and box[2][1] >= y1 - 4


def test_a_version_without_codec_says_so(serve: Any, demo_repo: Path) -> None:
    server = serve(["--repo", str(demo_repo), "--model", "digits", "--workers", "1"])
    with server.client() as client:
        answer = client.post("/v2/models/digits/infer", json=b64_body([b"\x89PNG"]))
    assert answer.status_code == 400
    assert "has no codec" in answer.json()["error"]
    assert "parameters" not in httpx.get(f"{server.url}/v2/models/digits").json()
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def reservoir(server: ServeProcess) -> dict[str, Any]:
    answer = httpx.get(f"{server.url}/v2/admin/reservoir", timeout=30.0,
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert answer.status_code == 200, answer.text
    doc: dict[str, Any] = answer.json()
    return doc


def kept_images(doc: dict[str, Any]) -> list[bytes]:
    (tensor,) = doc["inputs"]
    assert tensor["datatype"] == "BYTES" and tensor["parameters"] == {"content_type": "base64"}
    assert tensor["shape"] == [doc["rows"]]
    return [base64.b64decode(item) for item in tensor["data"]]


def test_image_requests_are_kept_for_replay(rec_server: ServeProcess, expected_texts: list[str]) -> None:
    """The reservoir keeps each answered image as sent; replays and undecodable images are
    not kept; the reservoir's body, posted back, is read as the originals were."""
    sent = [_ocr.png(_ocr.render_line(text, "DejaVuSerif.ttf")) for text in LINES]
    before = reservoir(rec_server)["seen"]
    with rec_server.client() as client:
        assert client.post("/v2/models/rec/infer", json=b64_body(sent[:3])).status_code == 200
        body, headers = binary_body(sent[3:])
        assert client.post("/v2/models/rec/infer", content=body, headers=headers).status_code == 200
        replayed = client.post("/v2/models/rec/infer", json=b64_body([_ocr.png(_ocr.render_line("replay"))]),
                               headers={"x-workbench-replay": "1"})
        assert replayed.status_code == 200
        assert client.post("/v2/models/rec/infer", json=b64_body([b"not an image"])).status_code == 400
        doc = reservoir(rec_server)
        assert doc["seen"] == before + len(sent)
        kept = kept_images(doc)
        assert set(sent) <= set(kept)
        read = []
        for part in parts(doc, 8):  # --max-batch-size 8
            answer = client.post("/v2/models/rec/infer", json=part, headers={"x-workbench-replay": "1"})
            assert answer.status_code == 200, answer.text
            read += outputs(answer.json())["text"]["data"]
    texts = dict(zip(kept, read, strict=True))
    assert [texts[image].strip() for image in sent] == LINES


def parts(doc: dict[str, Any], rows: int) -> list[dict[str, Any]]:
    """The reservoir's body as requests of at most ``rows`` images."""
    (tensor,) = doc["inputs"]
    data = tensor["data"]
    return [{"inputs": [{**tensor, "shape": [len(data[i:i + rows])], "data": data[i:i + rows]}]}
            for i in range(0, len(data), rows)]


def test_detection_images_are_kept_for_replay(det_server: ServeProcess) -> None:
    page = _ocr.png(_ocr.render_page(_ocr.LINES[5:7])[0])
    with det_server.client() as client:
        first = client.post("/v2/models/det/infer", json=b64_body([page]))
        assert first.status_code == 200
        doc = reservoir(det_server)
        assert page in kept_images(doc)
        row = kept_images(doc).index(page)
        (part,) = parts({"inputs": doc["inputs"]}, 1)[row : row + 1]
        replayed = client.post("/v2/models/det/infer", json=part, headers={"x-workbench-replay": "1"})
    assert replayed.status_code == 200, replayed.text
    assert outputs(replayed.json())["boxes"]["data"] == outputs(first.json())["boxes"]["data"]
