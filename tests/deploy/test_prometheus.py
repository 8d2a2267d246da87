"""PrometheusSource: PromQL templates against a real Prometheus scraping real instances."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpx
import pytest

from tests._wait import wait_until
from tests.deploy._prometheus import (
    SCRAPE_INTERVAL,
    PrometheusServer,
    require_prometheus,
    selector,
)
from tests.deploy._serve import serving_colors
from tests.serving.conftest import ServeProcess, json_infer_body, x_batch
from workbench.deploy.rollout.prometheus import PrometheusSource, PromQLTemplates, instance_selector
from workbench.errors import MetricsError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

INFER = "/v2/models/digits/infer"


def test_templates_render_selector_and_window() -> None:
    templates = PromQLTemplates()
    assert templates.render("errors", 'color="green"', 30) == (
        'sum(increase(workbench_requests_total{color="green",outcome="server_error"}[30s]))'
    )
    assert "[1500ms]" in templates.render("p99", 'color="green"', 1.5)
    custom = PromQLTemplates.from_dict({"memory": "sum(container_memory_rss{$selector})"})
    assert custom.render("memory", 'pod="x"', 60) == 'sum(container_memory_rss{pod="x"})'
    assert custom.requests == templates.requests
    with pytest.raises(ValueError, match="unknown PromQL"):
        PromQLTemplates.from_dict({"latency": "x{$selector}"})
    with pytest.raises(ValueError, match=r"\$selector"):
        PromQLTemplates(memory="sum(process_resident_memory_bytes)")
    assert instance_selector(["http://127.0.0.1:9001", "http://[::1]:9002/"]) == (
        'instance=~"127\\\\.0\\\\.0\\\\.1:9001|\\\\[::1\\\\]:9002"'
    )
    with pytest.raises(ValueError, match="http"):
        PrometheusSource("prometheus:9090", {})


@pytest.fixture(scope="module")
def stack(demo_repo: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[dict[str, ServeProcess], PrometheusServer]]:
    require_prometheus()
    logs = tmp_path_factory.mktemp("prometheus")
    colors = {"blue": ["--version", "1.0.0"],
               "green": ["--version", "1.1.0", "--fault-error-rate", "0.5",
                         "--fault-latency-ms", "150"]}
    with serving_colors(demo_repo, logs, colors) as servers:
        prometheus = PrometheusServer(logs / "prom", {c: [s.url] for c, s in servers.items()})
        try:
            yield servers, prometheus
        finally:
            prometheus.stop()


@pytest.mark.prometheus
def test_windows_from_a_real_prometheus(
        stack: tuple[dict[str, ServeProcess], PrometheusServer]) -> None:
    servers, prometheus = stack
    source = PrometheusSource(prometheus.url, {c: selector("web", c) for c in servers})
    body = json_infer_body(x_batch(2))
    with httpx.Client(timeout=30) as client:
        for server in servers.values():  # the series exist from here on
            client.post(server.url + INFER, json=body)
        wait_until(lambda: source.query(
            'count(workbench_requests_total{deployment="web"})') is not None, 30, 0.2,
            what="the instances' series in Prometheus")
        time.sleep(3 * SCRAPE_INTERVAL)
        for _ in range(30):
            assert client.post(servers["blue"].url + INFER, json=body).status_code == 200
        codes = [client.post(servers["green"].url + INFER, json=body).status_code
                 for _ in range(20)]
    failed = codes.count(500)
    scraped = prometheus.scrapes_done()
    wait_until(lambda: prometheus.scrapes_done() >= scraped + 6, 30, 0.2,
               what="three more scrapes of both instances")
    blue = source.window("blue", 60)
    green = source.window("green", 60)
    # increase() extrapolates a little past the first and last samples
    assert 28 <= blue.requests <= 40 and blue.errors == 0
    assert blue.p99_ms is not None and blue.p99_ms < 150
    assert blue.memory_bytes is not None and blue.memory_bytes > 50e6
    assert 18 <= green.requests <= 28
    assert failed > 0 and failed * 0.8 <= green.errors <= failed * 1.4 + 1
    # 150 ms late: histogram_quantile interpolates in the (0.1, 0.25] bucket, or in the
    # next one, (0.25, 0.5], when a request on a busy machine took longer still
    assert green.p99_ms is not None and 150 <= green.p99_ms <= 500
    quiet = source.window("green", 0.5)  # after the traffic: nothing
    assert quiet.requests == 0 and quiet.p99_ms is None


@pytest.mark.prometheus
def test_prometheus_errors_are_metrics_errors(
        stack: tuple[dict[str, ServeProcess], PrometheusServer]) -> None:
    _, prometheus = stack
    source = PrometheusSource(prometheus.url, {"green": selector("web", "green")},
                              templates=PromQLTemplates(requests="sum(rate(x{$selector}[)"))
    with pytest.raises(MetricsError, match="refused"):
        source.window("green", 30)
    with pytest.raises(MetricsError, match="no Prometheus selector for blue"):
        source.window("blue", 30)
    with pytest.raises(MetricsError, match="Prometheus at"):
        PrometheusSource("http://127.0.0.1:1", {"blue": "a=\"b\""}, timeout=1).window("blue", 5)
