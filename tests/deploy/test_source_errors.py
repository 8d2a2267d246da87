"""Metrics sources fail with a MetricsError saying why — garbage, a hang, nobody there,
a refused query — within their total deadline, against real loopback servers."""

from __future__ import annotations

import time

import pytest

from tests.deploy._nginx import free_port
from tests.deploy._trickle import TrickleServer
from workbench.deploy.rollout.prometheus import PrometheusSource
from workbench.deploy.rollout.scrape import ScrapeSource
from workbench.errors import MetricsError


def test_a_garbage_metrics_page_is_a_metrics_error_naming_the_parse_failure() -> None:
    server = TrickleServer(garbage=b"<html>not metrics</html>")
    try:
        source = ScrapeSource({"green": [server.url]})
        with pytest.raises(MetricsError, match=r"no instance of green .*ValueError"):
            source.window("green", 5.0)
    finally:
        server.close()


def test_a_hanging_metrics_page_costs_no_more_than_the_timeout() -> None:
    server = TrickleServer(every=0.3)
    try:
        source = ScrapeSource({"green": [server.url]}, timeout=1.0)
        began = time.monotonic()
        with pytest.raises(MetricsError, match="within 1 s"):
            source.window("green", 5.0)
        assert time.monotonic() - began < 1.6
    finally:
        server.close()


@pytest.mark.parametrize("fault", ["unreachable", "hanging", "garbage"])
def test_a_failing_prometheus_is_a_metrics_error(fault: str) -> None:
    server = None
    if fault == "unreachable":
        url = f"http://127.0.0.1:{free_port()}"
    else:
        server = (TrickleServer(every=0.3) if fault == "hanging"
                  else TrickleServer(garbage=b"{not json"))
        url = server.url
    try:
        source = PrometheusSource(url, {"green": 'color="green"'}, timeout=1.0)
        began = time.monotonic()
        with pytest.raises(MetricsError, match=f"Prometheus at {url}"):
            source.window("green", 5.0)
        assert time.monotonic() - began < 1.6
    finally:
        if server is not None:
            server.close()
