"""Every HTTP caller of the deploy layer goes through its one seam and gives up at its total
deadline, connect to last byte — not at a per-read timeout a trickling server never trips.

A real loopback server answers one byte per second (headers included, ~40 bytes): a
per-read timeout of a few seconds would wait ~40 s for the whole answer; each caller here
must fail by its deadline (1.5 s) plus a margin for a busy host.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.deploy._trickle import TrickleServer
from workbench.deploy.client import ServingClient
from workbench.deploy.http import DeadlineError, request_within
from workbench.deploy.nginx import NginxRouter
from workbench.deploy.rollout.hooks import deliver
from workbench.deploy.rollout.prometheus import PrometheusSource
from workbench.deploy.rollout.replay import fetch_reservoir
from workbench.deploy.rollout.scrape import ScrapeSource
from workbench.deploy.routing import RoutingTable, Upstream
from workbench.errors import MetricsError, RouterError, ServingError

DEADLINE = 1.5
MARGIN = 1.5  # scheduling on a loaded host; a per-read timeout would take ~40 s


@pytest.fixture
def trickle() -> Iterator[TrickleServer]:
    server = TrickleServer(every=1.0)
    yield server
    server.close()


def _within(call: Callable[[], object], deadline: float = DEADLINE) -> tuple[float, object]:
    began = time.monotonic()
    result = call()
    return time.monotonic() - began, result


def _raises(exc: type[Exception], call: Callable[[], object], match: str) -> float:
    began = time.monotonic()
    with pytest.raises(exc, match=match):
        call()
    return time.monotonic() - began


def test_the_seam_itself_cuts_the_answer_at_its_deadline(trickle: TrickleServer) -> None:
    took = _raises(DeadlineError, lambda: request_within("GET", trickle.url + "/x", DEADLINE),
                   "within 1.5 s")
    assert DEADLINE - 0.1 <= took < DEADLINE + MARGIN
    assert isinstance(DeadlineError("x"), TimeoutError)


def test_the_serving_client_times_out_at_its_total_timeout(trickle: TrickleServer) -> None:
    client = ServingClient(trickle.url, timeout=DEADLINE)
    took = _raises(ServingError, client.server_metadata, "timed out")
    assert DEADLINE - 0.1 <= took < DEADLINE + MARGIN
    took, health = _within(lambda: client.ready(timeout=DEADLINE))
    assert not health and "timed out" in health.error  # type: ignore[attr-defined]
    assert took < DEADLINE + MARGIN


def test_the_reservoir_fetch_of_replay_gives_up_at_its_deadline(trickle: TrickleServer) -> None:
    took = _raises(ServingError, lambda: fetch_reservoir(trickle.url, "token", timeout=DEADLINE),
                   "cannot read the reservoir")
    assert took < DEADLINE + MARGIN


def test_a_metrics_scrape_gives_up_at_its_deadline(trickle: TrickleServer) -> None:
    source = ScrapeSource({"blue": [trickle.url]}, timeout=DEADLINE)
    took, read = _within(source.scrape)
    assert read == {"blue": 0}
    assert "DeadlineError" in source.errors["blue"]
    assert took < DEADLINE + MARGIN


def test_a_prometheus_query_gives_up_at_its_deadline(trickle: TrickleServer) -> None:
    source = PrometheusSource(trickle.url, {"blue": 'color="blue"'}, timeout=DEADLINE)
    took = _raises(MetricsError, lambda: source.query("up"), "DeadlineError")
    assert took < DEADLINE + MARGIN


def test_a_hook_delivery_gives_up_at_its_deadline(trickle: TrickleServer) -> None:
    took, (ok, what) = _within(lambda: deliver(trickle.url + "/hook", "{}", DEADLINE))  # type: ignore[misc]
    assert not ok and what.startswith("DeadlineError")
    assert took < DEADLINE + MARGIN


def test_the_router_waiting_for_nginx_gives_up_at_its_ready_timeout(tmp_path: Path) -> None:
    # twice a second: faster than the router's one-second probe, which a per-read timeout
    # would never trip — each probe must end at its own total second, the wait at ready_timeout
    server = TrickleServer(every=0.5)
    try:
        port = int(server.url.rsplit(":", 1)[1])
        router = NginxRouter(tmp_path, ready_timeout=DEADLINE)
        table = RoutingTable(deployment="web", listen_port=port,
                             upstreams=(Upstream("blue", "127.0.0.1", port + 1, "1.0.0"),))
        took = _raises(RouterError, lambda: router._wait_for(table), "within 1.5 s")
        assert took < DEADLINE + 1.0 + MARGIN  # the last probe may start just before the deadline
    finally:
        server.close()
