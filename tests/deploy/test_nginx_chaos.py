"""Retry to stable and mirroring, with real nginx and real ``workbench serve`` instances.

Blue serves 1.0.0; green serves 1.1.0 with every inference request failing on purpose
(``--fault-error-rate 1``), as a broken canary would.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx
import pytest

from tests._wait import wait_until
from tests.deploy._nginx import free_port, require_nginx
from tests.deploy._serve import serving_colors
from tests.serving.conftest import ServeProcess, json_infer_body, metric_value, x_batch
from workbench.deploy.nginx import NginxRouter
from workbench.deploy.routing import RoutingTable, Upstream

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.nginx
INFER = "/v2/models/digits/infer"


@pytest.fixture(scope="module")
def stack(demo_repo: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[dict[str, ServeProcess], NginxRouter]]:
    """Blue and green instances, and an nginx router in front of them (stopped afterwards)."""
    require_nginx()
    logs = tmp_path_factory.mktemp("chaos-logs")
    colors = {"blue": ["--version", "1.0.0"],
               "green": ["--version", "1.1.0", "--fault-error-rate", "1"]}
    with serving_colors(demo_repo, logs, colors) as servers:
        nginx = NginxRouter(logs / "router")
        try:
            yield servers, nginx
        finally:
            nginx.stop()


def table(instances: dict[str, ServeProcess], port: int, **kw: object) -> RoutingTable:
    ups = (Upstream("blue", "127.0.0.1", instances["blue"].port, "1.0.0"),
           Upstream("green", "127.0.0.1", instances["green"].port, "1.1.0"))
    return RoutingTable(deployment="digits", listen_port=port, upstreams=ups, **kw)  # type: ignore[arg-type]


def green_errors(instances: dict[str, ServeProcess]) -> float:
    text = httpx.get(f"{instances['green'].url}/metrics").text
    try:
        return metric_value(text, "workbench_requests_total", version="1.1.0",
                            outcome="server_error")
    except AssertionError:
        return 0.0


def access_log(router: NginxRouter) -> list[dict[str, object]]:
    path = router.workdir / "access.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_failing_canary_never_reaches_clients(
        stack: tuple[dict[str, ServeProcess], NginxRouter]) -> None:
    instances, router = stack
    router.apply(table(instances, free_port(), green_weight=20))
    before = green_errors(instances)
    body = json_infer_body(x_batch(1))
    with httpx.Client(base_url=router.url, timeout=30) as client:
        answers = [client.post(INFER, json=body) for _ in range(60)]
    assert [r.status_code for r in answers] == [200] * 60  # zero client failures
    assert {r.headers["x-model-version"] for r in answers} == {"1.0.0"}
    assert {r.headers["x-deploy-color"] for r in answers} == {"blue"}
    # ... while green answered 500 to its share, and its own metrics say so
    failed = green_errors(instances) - before
    assert 3 <= failed <= 30  # 12 expected at 20%
    retried = [e for e in access_log(router) if e["routed"] == "green" and e["uri"] == INFER]
    assert retried and all(str(e["upstream_status"]).startswith("500") for e in retried)
    assert all(e["color"] == "blue" and e["status"] == 200 for e in retried)


def test_a_mirror_phase_sees_the_candidates_errors_at_zero_exposure(
        stack: tuple[dict[str, ServeProcess], NginxRouter]) -> None:
    instances, router = stack
    router.apply(table(instances, free_port(), green_weight=0, mirror_percent=100))
    before = green_errors(instances)
    body = json_infer_body(x_batch(2))
    with httpx.Client(base_url=router.url, timeout=30) as client:
        answers = [client.post(INFER, json=body) for _ in range(20)]
        pinned = client.post(INFER, json=body, headers={"x-model-version": "1.0.0"})
    assert [r.status_code for r in answers] == [200] * 20
    assert {r.headers["x-model-version"] for r in answers} == {"1.0.0"}
    assert pinned.status_code == 200
    # every copy reached green (a version pin is not passed on) and failed there
    wait_until(lambda: green_errors(instances) - before >= 21, 20, 0.2,
               what="the mirrored requests in green's metrics")
    assert not [e for e in access_log(router) if e["color"] == "green" and e["uri"] == INFER
                and e["routed"] == "blue"]


def test_the_stable_colours_own_errors_are_not_moved_to_the_candidate(
        stack: tuple[dict[str, ServeProcess], NginxRouter]) -> None:
    instances, router = stack
    # green is the stable colour here and fails; blue (the candidate) gets no share
    router.apply(table(instances, free_port(), green_weight=100, stable="green"))
    body = json_infer_body(x_batch(1))
    with httpx.Client(base_url=router.url, timeout=30) as client:
        answers = [client.post(INFER, json=body) for _ in range(5)]
    assert [r.status_code for r in answers] == [500] * 5
    assert {r.headers["x-deploy-color"] for r in answers} == {"green"}
