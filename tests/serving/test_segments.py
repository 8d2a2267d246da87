"""Traffic segments: the bounded book of values, reading a request's segment, the
per-segment metrics, and faults limited to one segment (unit tests, then a real serve)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.serving.conftest import ServeProcess, json_infer_body, metric_value, x_batch
from workbench.deploy.traffic import parse_metrics
from workbench.serving.faults import FaultConfig
from workbench.serving.metrics import ServingMetrics
from workbench.serving.segments import (
    MAX_VALUE_LENGTH,
    MISSING,
    OTHER,
    SegmentBook,
    SegmentKey,
    segment_values,
)

TENANT = SegmentKey("header", "x-tenant")
PARAM = SegmentKey("param", "tenant")


@pytest.mark.parametrize(("text", "key"), [
    ("header:x-tenant", TENANT),
    ("X-Tenant", TENANT),
    ("header: X-Tenant ", TENANT),
    ("param:tenant", PARAM),
    ("param:Tenant", SegmentKey("param", "Tenant")),  # parameters keep their case
])
def test_a_segment_key_reads_header_or_param(text: str, key: SegmentKey) -> None:
    assert SegmentKey.parse(text) == key
    assert str(key) in ("header:x-tenant", "param:tenant", "param:Tenant")


@pytest.mark.parametrize("text", ["cookie:x", "header:", "param:a b", "query:tenant", ""])
def test_a_bad_segment_key_is_one_sentence(text: str) -> None:
    with pytest.raises(ValueError, match="segment|name"):
        SegmentKey.parse(text)


def test_the_book_keeps_the_first_values_and_pools_the_rest_as_other() -> None:
    book = SegmentBook(limit=3)
    assert [book.label(v) for v in ("a", "b", "a", "c", "d", "e", "b")] == [
        "a", "b", "a", "c", OTHER, OTHER, "b"]
    assert book.known == {"a", "b", "c"}
    # a thousand more tenants: still three values of their own, plus other and none
    labels = {book.label(f"t{i}") for i in range(1000)} | {book.label(None), book.label("")}
    assert labels == {OTHER, MISSING}
    assert len(book.known) == 3


def test_the_book_pools_long_values_and_the_reserved_words() -> None:
    book = SegmentBook(limit=10)
    assert book.label("x" * (MAX_VALUE_LENGTH + 1)) == OTHER
    assert book.label(OTHER) == OTHER and book.label(MISSING) == OTHER
    assert book.known == frozenset()  # none of them took a place
    with pytest.raises(ValueError, match="at least 1"):
        SegmentBook(limit=0)


def test_segment_values_come_from_headers_and_parameters() -> None:
    headers = [(b"content-type", b"application/json"), (b"x-tenant", b" b ")]
    found = segment_values((TENANT, PARAM), headers, {"tenant": 7})
    assert found == {TENANT: "b", PARAM: "7"}
    assert segment_values((TENANT, PARAM), [], None) == {TENANT: None, PARAM: None}
    assert segment_values((PARAM,), [], {"tenant": {"nested": 1}}) == {PARAM: OTHER}
    assert segment_values((PARAM,), [], {"tenant": True}) == {PARAM: "true"}


def test_metrics_count_each_segment_apart_within_the_bound() -> None:
    metrics = ServingMetrics("digits")
    metrics.loaded("1.0.0")
    metrics.segment_by((TENANT,), limit=2)
    for tenant, status in (("a", 200), ("a", 500), ("b", 200), ("c", 200), ("d", 500), (None, 200)):
        metrics.request("1.0.0", status, 0.003)
        metrics.segment_request("1.0.0", status, 0.003, {TENANT: tenant})
    metrics.segment_request("9.9.9", 200, 0.003, {TENANT: "a"})  # not loaded: not counted
    text = metrics.render()[0].decode()
    samples = parse_metrics(text)
    counts: dict[tuple[str, str], float] = {}
    for labels, value in samples["workbench_segment_requests_total"]:
        assert labels["segment_by"] == "header:x-tenant" and labels["version"] == "1.0.0"
        key = (labels["segment"], labels["outcome"])
        counts[key] = counts.get(key, 0.0) + value
    assert {k: v for k, v in counts.items() if v} == {
        ("a", "ok"): 1, ("a", "server_error"): 1, ("b", "ok"): 1,
        (OTHER, "ok"): 1, (OTHER, "server_error"): 1, (MISSING, "ok"): 1,
    }
    assert metric_value(text, "workbench_segment_request_duration_seconds_count",
                        segment="a") == 2
    metrics.unloaded("1.0.0")
    assert "workbench_segment_requests_total{" not in metrics.render()[0].decode()


def test_without_segment_by_there_are_no_segment_series() -> None:
    metrics = ServingMetrics("digits")
    metrics.loaded("1.0.0")
    metrics.request("1.0.0", 200, 0.003)
    assert "workbench_segment" not in metrics.render()[0].decode()


def test_faults_limited_to_a_segment_touch_its_requests_only() -> None:
    faults = FaultConfig(1.0, 0.0, segment="x-tenant=b")
    assert faults.applies_to("1.0.0", {TENANT: "b"})
    assert not faults.applies_to("1.0.0", {TENANT: "a"})
    assert not faults.applies_to("1.0.0", None)
    assert faults.serve_args() == ("--fault-error-rate", "1", "--fault-segment", "x-tenant=b")
    by_param = FaultConfig(1.0, 0.0, versions=("1.1.0",), segment="param:tenant=b")
    assert by_param.applies_to("1.1.0", {PARAM: "b"})
    assert not by_param.applies_to("1.0.0", {PARAM: "b"})
    assert "segment param:tenant=b" in str(by_param)
    with pytest.raises(ValueError, match="NAME=VALUE"):
        FaultConfig(1.0, 0.0, segment="x-tenant")


@pytest.fixture(scope="module")
def segmented(serve, demo_repo: Path) -> ServeProcess:  # type: ignore[no-untyped-def]
    # tenant b's requests always fail; two tenant values counted apart, the rest pooled
    return serve([
        "--repo", str(demo_repo), "--model", "digits", "--version", "1.0.0", "--workers", "1",
        "--segment-by", "header:x-tenant", "--segment-by", "param:tenant", "--max-segments", "2",
        "--fault-error-rate", "1", "--fault-segment", "x-tenant=b", "--no-access-log",
    ])


def test_a_real_serve_counts_segments_and_fails_one_segment_only(segmented: ServeProcess) -> None:
    body = json_infer_body(x_batch(1))
    sent = {"a": 0, "b": 0, "c": 0, "d": 0}
    with segmented.client() as client:
        for round_ in range(5):
            for tenant in sent:
                answer = client.post("/v2/models/digits/infer", json=body,
                                     headers={"x-tenant": tenant})
                assert answer.status_code == (500 if tenant == "b" else 200), answer.text
                sent[tenant] += 1
            with_param = client.post("/v2/models/digits/infer",
                                     json={**body, "parameters": {"tenant": f"p{round_}"}})
            assert with_param.status_code == 200
        text = client.get("/metrics").text

    def count(segment: str, outcome: str, key: str = "header:x-tenant") -> float:
        return metric_value(text, "workbench_segment_requests_total", segment_by=key,
                            segment=segment, outcome=outcome)
    assert count("a", "ok") == 5 and count("a", "server_error") == 0
    assert count("b", "server_error") == 5 and count("b", "ok") == 0
    assert count(OTHER, "ok") == 10  # c and d: past the bound of two
    assert count(MISSING, "ok") == 5  # the requests without the header
    assert count("p0", "ok", "param:tenant") == 1 and count("p1", "ok", "param:tenant") == 1
    assert count(OTHER, "ok", "param:tenant") == 3
    assert count(MISSING, "ok", "param:tenant") == 15  # and tenant b's five failures:
    assert count(MISSING, "server_error", "param:tenant") == 5
    assert metric_value(text, "workbench_requests_total", outcome="server_error") == 5
