"""The reservoir sample of request inputs: Algorithm R, and the admin endpoint."""

from __future__ import annotations

import base64
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.serving.conftest import ADMIN_TOKEN, ServeProcess, json_infer_body, x_batch
from workbench.serving.reservoir import Reservoir

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_reservoir_fills_then_stays_bounded_and_copies_rows() -> None:
    reservoir = Reservoir(4, seed=1)
    batch = np.arange(6, dtype=np.float32).reshape(3, 2)
    reservoir.offer({"x": batch})
    batch[:] = -1  # rows were copied, not viewed
    assert reservoir.sample()["x"].tolist() == [[0, 1], [2, 3], [4, 5]]
    for i in range(100):
        reservoir.offer({"x": np.full((2, 2), i, dtype=np.float32)})
    assert len(reservoir) == 4 and reservoir.seen == 203
    assert reservoir.sample()["x"].shape == (4, 2)
    assert len(Reservoir(0)) == 0 and Reservoir(0).sample() == {}
    with pytest.raises(ValueError):
        Reservoir(-1)


def test_images_are_rows_within_a_byte_bound() -> None:
    reservoir = Reservoir(8, max_bytes=1000, seed=0)
    reservoir.offer_images("image", [b"a" * 300, b"b" * 300])
    reservoir.offer_images("image", [b"c" * 600, b"d" * 100])  # c would pass the bound
    assert reservoir.seen == 4 and len(reservoir) == 3 and reservoir.bytes == 700
    doc = reservoir.to_json("rec")
    (tensor,) = doc["inputs"]
    assert tensor["datatype"] == "BYTES" and tensor["shape"] == [3]
    assert tensor["parameters"] == {"content_type": "base64"}
    assert [base64.b64decode(item) for item in tensor["data"]] == [b"a" * 300, b"b" * 300, b"d" * 100]
    for i in range(200):  # once full, replacements stay within the bound too
        reservoir.offer_images("image", [bytes([i]) * (50 + i * 3)])
    assert reservoir.bytes == sum(len(b) for b in reservoir.sample()["image"]) <= 1000
    with pytest.raises(ValueError):
        Reservoir(4, max_bytes=-1)


def test_reservoir_is_a_uniform_sample() -> None:
    # each of 100 rows should be kept with probability 10/100
    kept: Counter[int] = Counter()
    for seed in range(400):
        reservoir = Reservoir(10, seed=seed)
        for i in range(100):
            reservoir.offer({"x": np.array([[i]])})
        kept.update(int(v) for v in reservoir.sample()["x"].ravel())
    early = sum(kept[i] for i in range(50))
    late = sum(kept[i] for i in range(50, 100))
    assert early + late == 4000
    assert abs(early - late) < 400  # 2000 each expected; sd about 45


def test_inputs_without_a_shared_batch_axis_are_one_row() -> None:
    reservoir = Reservoir(8)
    reservoir.offer({"a": np.zeros((2, 3)), "b": np.zeros((5,))})
    assert reservoir.seen == 1
    assert reservoir.sample()["b"].shape == (5,)


def test_reservoir_of_a_real_instance(serve, demo_repo: Path) -> None:  # type: ignore[no-untyped-def]
    server: ServeProcess = serve(
        ["--repo", str(demo_repo), "--model", "digits", "--version", "1.0.0",
         "--reservoir-size", "16", "--max-batch-size", "16", "--no-access-log"],
        env={"WORKBENCH_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    sent = [x_batch(4, seed) for seed in range(10)]
    with server.client() as client:
        for x in sent:
            assert client.post("/v2/models/digits/infer", json=json_infer_body(x)).status_code == 200
        assert client.post("/v2/models/digits/infer", json={"inputs": 1}).status_code == 400
        assert client.get("/v2/admin/reservoir").status_code == 401
        answer = client.get("/v2/admin/reservoir", headers=AUTH)
    assert answer.status_code == 200
    doc = answer.json()
    assert doc["model"] == "digits" and doc["seen"] == 40 and doc["rows"] == 16
    (tensor,) = doc["inputs"]
    assert tensor["name"] == "x" and tensor["datatype"] == "FP32" and tensor["shape"] == [16, 64]
    rows = np.asarray(tensor["data"], dtype=np.float32).reshape(16, 64)
    everything = np.concatenate(sent)
    assert all((everything == row).all(axis=1).any() for row in rows)  # real request rows
    with server.client() as client:  # the sample is a valid request body as it is
        replayed = client.post("/v2/models/digits/infer", json={"inputs": doc["inputs"]})
    assert replayed.status_code == 200


def test_reservoir_stays_uniform_over_long_streams_of_batched_requests() -> None:
    # once full, rows are passed over in skips (Algorithm L): a long stream of 4-row
    # requests must still leave every tenth of the stream about equally represented
    deciles: Counter[int] = Counter()
    for seed in range(200):
        reservoir = Reservoir(20, seed=seed)
        for start in range(0, 4000, 4):
            reservoir.offer({"x": np.arange(start, start + 4).reshape(4, 1)})
        assert reservoir.seen == 4000 and len(reservoir) == 20
        rows = reservoir.sample()["x"].ravel()
        assert len(set(rows.tolist())) == 20  # no row kept twice
        deciles.update(int(v) // 400 for v in rows)
    assert sum(deciles.values()) == 4000
    assert all(330 <= deciles[d] <= 470 for d in range(10)), deciles  # 400 each; sd about 19
