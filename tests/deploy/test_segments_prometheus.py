"""Per-segment windows from a real Prometheus scraping a real ``workbench serve --segment-by``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpx
import pytest

from tests._wait import wait_until
from tests.deploy._prometheus import SCRAPE_INTERVAL, PrometheusServer, require_prometheus, selector
from tests.deploy._serve import serving_colors
from tests.serving.conftest import json_infer_body, x_batch
from workbench.deploy.rollout.prometheus import PrometheusSource
from workbench.deploy.rollout.traffic_rules import ErrorRateRule
from workbench.deploy.rollout.verdicts import Observation

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.prometheus
INFER = "/v2/models/digits/infer"


def test_segment_windows_from_a_real_prometheus(demo_repo: Path, tmp_path: Path) -> None:
    require_prometheus()
    colors = {"green": ["--version", "1.1.0", "--segment-by", "header:x-tenant",
                        "--fault-error-rate", "1", "--fault-segment", "x-tenant=b"]}
    body = json_infer_body(x_batch(1))
    with serving_colors(demo_repo, tmp_path, colors) as servers:
        prometheus = PrometheusServer(tmp_path / "prom", {c: [s.url] for c, s in servers.items()})
        try:
            source = PrometheusSource(prometheus.url, {"green": selector("web", "green")},
                                      segments=True)
            url = servers["green"].url + INFER
            with httpx.Client(timeout=30) as client:
                for tenant in ("a", "b"):  # a segment's series appear with its first request
                    client.post(url, json=body, headers={"x-tenant": tenant})
                wait_until(lambda: source.query(
                    'count(workbench_segment_requests_total{deployment="web"})') is not None,
                    30, 0.2, what="the segment series in Prometheus")
                time.sleep(3 * SCRAPE_INTERVAL)
                for _ in range(20):
                    assert client.post(url, json=body, headers={"x-tenant": "a"}).status_code == 200
                for _ in range(10):
                    assert client.post(url, json=body, headers={"x-tenant": "b"}).status_code == 500
            scraped = prometheus.scrapes_done()
            wait_until(lambda: prometheus.scrapes_done() >= scraped + 3, 30, 0.2,
                       what="three more scrapes")
            green = source.window("green", 60)
            without = PrometheusSource(prometheus.url, {"green": selector("web", "green")})
            plain = without.window("green", 60)
        finally:
            prometheus.stop()
    segments = (green.segments or {})["header:x-tenant"]
    # increase() extrapolates a little past the first and last samples
    assert 18 <= segments["a"].requests <= 26 and segments["a"].errors == 0
    assert 9 <= segments["b"].requests <= 14
    assert segments["b"].errors == pytest.approx(segments["b"].requests, rel=0.05)
    assert segments["a"].p99_ms is not None
    assert plain.segments is None  # not asked for: no extra queries
    result = ErrorRateRule(max_rate=0.4, min_requests=5, segment_by="x-tenant").judge(
        Observation(interval=30.0, candidate=green, alpha=0.01))
    assert result.verdict == "fail" and "in segment x-tenant=b" in result.message
