"""A sample of each segment's request rows, beside the pooled one: what lets a canary judge
agreement per tenant (workbench.serving.reservoir.SegmentedReservoir)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.serving.conftest import ADMIN_TOKEN, ServeProcess, json_infer_body, x_batch
from workbench.serving.reservoir import SegmentedReservoir
from workbench.serving.segments import SegmentBook, SegmentKey

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TENANT = SegmentKey.parse("header:x-tenant")


def segmented(size: int = 8, limit: int = 2) -> SegmentedReservoir:
    book = SegmentBook(limit)
    return SegmentedReservoir(size, keys=(TENANT,), label=lambda _key, value: book.label(value),
                              limit=limit, max_bytes=18_000)


def test_a_rare_segment_keeps_a_sample_of_its_own() -> None:
    reservoir = segmented(size=8)
    for i in range(990):  # tenant a: 99% of the rows
        reservoir.offer({"x": np.array([[i]])}, {TENANT: "a"})
    for i in range(10):  # tenant b: 1%
        reservoir.offer({"x": np.array([[1000 + i]])}, {TENANT: "b"})
    pooled = reservoir.pooled.sample()["x"].ravel()
    assert len(pooled) == 8 and sum(v >= 1000 for v in pooled) <= 2  # b barely in the pool
    b = reservoir.to_json("m", "header:x-tenant", "b")
    assert (b["rows"], b["seen"], b["segment"]) == (8, 10, "b")
    assert all(v >= 1000 for v in b["inputs"][0]["data"])  # only b's rows
    assert reservoir.listing() == {"header:x-tenant": {"a": {"seen": 990, "rows": 8},
                                                      "b": {"seen": 10, "rows": 8}}}


def test_segments_are_bounded_as_the_metrics_bound_them() -> None:
    reservoir = segmented(limit=2)
    for tenant in ("a", "b", "c", "d", None):
        reservoir.offer({"x": np.zeros((1, 4))}, {TENANT: tenant})
    assert set(reservoir.listing()["header:x-tenant"]) == {"a", "b", "other", "none"}
    assert reservoir.to_json("m", "header:x-tenant", "other")["seen"] == 2  # c and d
    assert reservoir.to_json("m", "header:x-tenant", "zzz")["rows"] == 0  # never seen: empty
    with pytest.raises(ValueError, match="no sample per segment of header:x-other"):
        reservoir.to_json("m", "header:x-other", "a")


def test_every_segment_s_images_stay_within_its_share_of_the_byte_bound() -> None:
    reservoir = segmented(size=50, limit=2)  # 18,000 bytes: 4,500 per segment of 4
    for i in range(200):
        reservoir.offer_images("image", [bytes([i % 250]) * 500], {TENANT: "ab"[i % 2]})
    for segment in ("a", "b"):
        kept = reservoir._segments[(TENANT, segment)]
        assert kept.bytes <= 4500 and len(kept) == 9


def test_segment_samples_of_a_real_instance(serve, demo_repo: Path) -> None:  # type: ignore[no-untyped-def]
    server: ServeProcess = serve(
        ["--repo", str(demo_repo), "--model", "digits", "--version", "1.0.0",
         "--reservoir-size", "16", "--max-batch-size", "16", "--no-access-log",
         "--segment-by", "header:x-tenant", "--max-segments", "4"],
        env={"WORKBENCH_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    sent = {"a": [x_batch(4, seed) for seed in range(8)], "b": [x_batch(2, 100 + seed)
                                                              for seed in range(3)]}
    with server.client() as client:
        for tenant, batches in sent.items():
            for x in batches:
                answer = client.post("/v2/models/digits/infer", json=json_infer_body(x),
                                     headers={"x-tenant": tenant})
                assert answer.status_code == 200
        # a replay is kept in no sample
        client.post("/v2/models/digits/infer", json=json_infer_body(x_batch(4, 7)),
                    headers={"x-tenant": "b", "x-workbench-replay": "1"})
        pooled = client.get("/v2/admin/reservoir", headers=AUTH).json()
        b = client.get("/v2/admin/reservoir", headers=AUTH,
                       params={"segment_by": "header:x-tenant", "segment": "b"})
        wrong = client.get("/v2/admin/reservoir", headers=AUTH,
                           params={"segment_by": "header:x-region", "segment": "eu"})
        half = client.get("/v2/admin/reservoir", headers=AUTH,
                          params={"segment_by": "header:x-tenant"})
        refused = client.get("/v2/admin/reservoir",
                             params={"segment_by": "header:x-tenant", "segment": "b"})
    assert pooled["seen"] == 38 and pooled["rows"] == 16
    assert pooled["segments"] == {"header:x-tenant": {"a": {"seen": 32, "rows": 16},
                                                      "b": {"seen": 6, "rows": 6}}}
    assert b.status_code == 200
    doc = b.json()
    assert (doc["rows"], doc["seen"], doc["segment_by"], doc["segment"]) == (
        6, 6, "header:x-tenant", "b")
    rows = np.asarray(doc["inputs"][0]["data"], dtype=np.float32).reshape(6, 64)
    assert (rows == np.concatenate(sent["b"])).all(axis=1).all()  # b's rows, in order
    assert wrong.status_code == 400 and "--segment-by" in wrong.json()["error"]
    assert half.status_code == 400 and refused.status_code == 401
