"""Fault injection (chaos testing) on a real ``workbench serve``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.serving.conftest import ServeProcess, json_infer_body, metric_value, x_batch
from workbench.serving.faults import FaultConfig


@pytest.fixture(scope="module")
def faulty(serve, demo_repo: Path) -> ServeProcess:  # type: ignore[no-untyped-def]
    # 1.1.0 always fails and is slowed down; 1.0.0 (active) is left alone
    return serve([
        "--repo", str(demo_repo), "--model", "digits", "--version", "1.0.0", "--load", "1.1.0",
        "--workers", "1", "--fault-error-rate", "1.0", "--fault-latency-ms", "200",
        "--fault-version", "1.1.0", "--no-access-log",
    ])


def test_faults_hit_only_the_chosen_version_and_count_as_server_errors(faulty: ServeProcess) -> None:
    body = json_infer_body(x_batch(2))
    with faulty.client() as client:
        for _ in range(5):
            ok = client.post("/v2/models/digits/infer", json=body)
            assert ok.status_code == 200, ok.text
            assert ok.headers["x-model-version"] == "1.0.0"
        started = time.monotonic()
        bad = client.post("/v2/models/digits/versions/1.1.0/infer", json=body)
        slow = time.monotonic() - started
        assert bad.status_code == 500
        assert "injected fault" in bad.json()["error"]
        assert bad.headers["x-model-version"] == "1.1.0"
        assert slow >= 0.2
        for _ in range(3):
            assert client.post("/v2/models/digits/versions/1.1.0/infer", json=body).status_code == 500
        assert client.get("/v2/health/ready").status_code == 200
        text = client.get("/metrics").text
    assert metric_value(text, "workbench_requests_total", version="1.1.0",
                        outcome="server_error") == 4
    assert metric_value(text, "workbench_requests_total", version="1.0.0", outcome="ok") == 5
    assert metric_value(text, "workbench_request_duration_seconds_bucket", version="1.1.0",
                        le="0.1") == 0  # the added latency is in the measured duration
    assert "fault injection on" in faulty.log()


def test_a_share_of_requests_fail(serve, demo_repo: Path) -> None:  # type: ignore[no-untyped-def]
    server = serve(["--repo", str(demo_repo), "--model", "digits", "--version", "1.0.0",
                    "--fault-error-rate", "0.5", "--no-access-log"])
    body = json_infer_body(x_batch(1))
    with server.client() as client:
        codes = [client.post("/v2/models/digits/infer", json=body).status_code for _ in range(80)]
    assert set(codes) == {200, 500}
    assert 15 <= codes.count(500) <= 65  # 40 expected; binomial tails far beyond this


def test_fault_options_are_checked() -> None:
    with pytest.raises(ValueError, match="error rate"):
        FaultConfig(error_rate=1.5)
    with pytest.raises(ValueError, match="latency"):
        FaultConfig(latency_ms=-1)
    assert not FaultConfig().active
    assert FaultConfig(0.1, versions=("1.2.0",)).applies_to("1.2.0")
    assert not FaultConfig(0.1, versions=("1.2.0",)).applies_to("1.1.0")

