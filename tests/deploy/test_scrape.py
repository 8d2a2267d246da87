"""ScrapeSource: per-colour windows from the instances' own /metrics."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.deploy._serve import serving_colors
from tests.serving.conftest import ServeProcess, json_infer_body, x_batch
from workbench.deploy.rollout.scrape import ScrapeSource
from workbench.errors import MetricsError

if TYPE_CHECKING:
    from collections.abc import Iterator


def exposition(ok: float, errors: float, fast: float, slow: float, rss: float = 1e8) -> str:
    """An instance's metrics: ``fast`` requests under 10 ms, ``slow`` ones in 250..500 ms."""
    total = fast + slow
    return f"""\
# TYPE workbench_requests_total counter
workbench_requests_total{{model="m",version="1.0.0",outcome="ok"}} {ok}
workbench_requests_total{{model="m",version="1.0.0",outcome="client_error"}} 0
workbench_requests_total{{model="m",version="1.0.0",outcome="server_error"}} {errors}
# TYPE workbench_request_duration_seconds histogram
workbench_request_duration_seconds_bucket{{model="m",version="1.0.0",le="0.01"}} {fast}
workbench_request_duration_seconds_bucket{{model="m",version="1.0.0",le="0.25"}} {fast}
workbench_request_duration_seconds_bucket{{model="m",version="1.0.0",le="0.5"}} {total}
workbench_request_duration_seconds_bucket{{model="m",version="1.0.0",le="+Inf"}} {total}
workbench_request_duration_seconds_count{{model="m",version="1.0.0"}} {total}
workbench_request_duration_seconds_sum{{model="m",version="1.0.0"}} 1.0
# TYPE workbench_process_resident_memory_bytes gauge
workbench_process_resident_memory_bytes{{model="m"}} {rss}
"""


class Fake:
    """Instances whose metrics text and the clock are set by the test."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.texts: dict[str, str] = {}

    def fetch(self, url: str) -> str:
        if url not in self.texts:
            raise MetricsError(f"{url}: connection refused")
        return self.texts[url]


def test_window_is_the_difference_between_scrapes_over_the_window() -> None:
    fake = Fake()
    source = ScrapeSource({"green": ["http://a", "http://b"]}, fetch=fake.fetch,
                          clock=lambda: fake.now)
    fake.texts = {"http://a/metrics": exposition(10, 0, 10, 0),
                  "http://b/metrics": exposition(5, 0, 5, 0, rss=2e8)}
    first = source.window("green", 30)
    assert (first.requests, first.seconds, first.p99_ms) == (0, 0, None)  # no base yet
    assert first.memory_bytes == 3e8
    fake.now += 30
    # a: 100 more requests, 10 of them server errors, 2 slow; b restarted (counters reset)
    fake.texts = {"http://a/metrics": exposition(100, 10, 108, 2),
                  "http://b/metrics": exposition(3, 1, 4, 0, rss=2e8)}
    w = source.window("green", 30)
    assert w.seconds == 30
    assert w.requests == 100 + 4
    assert w.errors == 10 + 1
    assert w.error_rate == pytest.approx(11 / 104)
    assert w.p99_ms is not None and 250 < w.p99_ms <= 500  # 2 of 102 are slow
    fake.now += 30
    w = source.window("green", 30)  # nothing new
    assert (w.requests, w.errors, w.p99_ms) == (0, 0, None)
    w = source.window("green", 60)  # the last minute still holds both
    assert w.requests == 104 and w.seconds == 60


def test_an_instance_that_does_not_answer_is_left_out_and_a_silent_colour_raises() -> None:
    fake = Fake()
    source = ScrapeSource({"blue": ["http://a", "http://gone"], "green": ["http://gone"]},
                          fetch=fake.fetch, clock=lambda: fake.now)
    fake.texts = {"http://a/metrics": exposition(1, 0, 1, 0)}
    source.window("blue", 10)
    fake.now += 10
    fake.texts = {"http://a/metrics": exposition(3, 0, 3, 0)}
    assert source.window("blue", 10).requests == 2
    with pytest.raises(MetricsError, match="green"):
        source.window("green", 10)
    with pytest.raises(MetricsError, match="red"):
        source.window("red", 10)


def test_history_is_bounded() -> None:
    fake = Fake()
    source = ScrapeSource({"blue": ["http://a"]}, keep=60, fetch=fake.fetch,
                          clock=lambda: fake.now)
    fake.texts = {"http://a/metrics": exposition(1, 0, 1, 0)}
    for _ in range(100):
        source.scrape()
        fake.now += 5
    assert len(source.history("blue")["http://a"]) <= 14


# -- against real `workbench serve` instances ------------------------------------------


@pytest.fixture(scope="module")
def instances(demo_repo: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[dict[str, ServeProcess]]:
    logs = tmp_path_factory.mktemp("scrape-logs")
    with serving_colors(demo_repo, logs, {"blue": ["--version", "1.0.0"],
                                           "green": ["--version", "1.1.0", "--fault-error-rate", "0.5",
                                     "--fault-latency-ms", "150"]}) as servers:
        yield servers


def test_windows_of_real_instances_under_real_traffic(instances: dict[str, ServeProcess]) -> None:
    source = ScrapeSource(lambda: {c: [s.url] for c, s in instances.items()})
    assert source.scrape() == {"blue": 1, "green": 1}
    body = json_infer_body(x_batch(2))
    green_codes = []
    with httpx.Client(timeout=30) as client:
        for _ in range(30):
            assert client.post(f"{instances['blue'].url}/v2/models/digits/infer",
                               json=body).status_code == 200
        for _ in range(20):
            green_codes.append(client.post(f"{instances['green'].url}/v2/models/digits/infer",
                                           json=body).status_code)
        bad = client.post(f"{instances['blue'].url}/v2/models/digits/infer", json={"inputs": 1})
        assert bad.status_code == 400  # a client error: counted as a request, not an error
    blue = source.window("blue", 60)
    green = source.window("green", 60)
    assert blue.requests == 31 and blue.errors == 0 and blue.error_rate == 0
    assert blue.p99_ms is not None and blue.p99_ms < 150
    assert blue.memory_bytes is not None and blue.memory_bytes > 50e6
    assert green.requests == 20
    assert green.errors == green_codes.count(500) > 0
    assert green.p99_ms is not None and 150 <= green.p99_ms <= 250  # the injected latency
    # a window that starts after the traffic sees none of it
    source.scrape()
    quiet = source.window("green", 0.001)
    assert quiet.requests == 0 and quiet.p99_ms is None
