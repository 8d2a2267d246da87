"""Which upstream answers are retried where, against a real nginx and plain HTTP upstreams.

Stable's 503 (instance unavailable) is retried on a sibling instance, then on the other
colour, and passive health keeps traffic off it for ``fail_timeout``; stable's 500 and
a request pinned to stable are not retried. A candidate's 5xx are answered by stable
without taking the candidate out of rotation.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests._wait import wait_until
from tests.deploy._nginx import ColorServer, free_port, running_router
from workbench.deploy.routing import RoutingTable, Upstream

if TYPE_CHECKING:
    from collections.abc import Iterator

    from workbench.deploy.nginx import NginxRouter

pytestmark = pytest.mark.nginx

INFER = "/v2/models/digits/infer"
BODY = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                               "data": [0.5, 1.5, 2.5, 3.5]}]}).encode()
VERSIONS = {"blue": "1.0.0", "green": "1.1.0"}


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxRouter]:
    with running_router(tmp_path_factory.mktemp("failover-router")) as nginx:
        yield nginx


@pytest.fixture
def servers() -> Iterator[dict[str, ColorServer]]:
    """blue (1.0.0), a second blue instance and green (1.1.0), all answering 200."""
    made = {"blue": ColorServer("blue", "1.0.0"), "blue2": ColorServer("blue", "1.0.0"),
            "green": ColorServer("green", "1.1.0")}
    yield made
    for server in made.values():
        server.close()


def apply(router: NginxRouter, servers: dict[str, ColorServer], *names: str,
          **kw: Any) -> RoutingTable:
    ups = tuple(Upstream(servers[n].color, "127.0.0.1", servers[n].port, servers[n].version)
                for n in names)
    kw.setdefault("fail_timeout", 1)
    table = RoutingTable(deployment="digits", listen_port=free_port(), upstreams=ups, **kw)
    router.apply(table)
    return table


def post(client: httpx.Client, n: int, **headers: str) -> list[httpx.Response]:
    return [client.post(INFER, content=BODY, headers=headers) for _ in range(n)]


def answered(responses: list[httpx.Response]) -> list[tuple[int, str]]:
    """(status, colour that answered) per response, checking the header against the body."""
    out = []
    for r in responses:
        color = r.headers["x-deploy-color"]
        assert r.json()["color"] == color
        assert r.json()["received"] == len(BODY)  # the POST body reached whoever answered
        out.append((r.status_code, color))
    return out


def log_entries(router: NginxRouter) -> list[dict[str, Any]]:
    lines = (router.workdir / "access.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_stables_503_is_answered_by_the_other_colour_and_passive_health_keeps_it_off(
    router: NginxRouter, servers: dict[str, ColorServer]
) -> None:
    # after a promote: green kept warm without traffic, as the rollback target
    table = apply(router, servers, "blue", "green", green_weight=0)
    blue, green = servers["blue"], servers["green"]
    blue.status = 503
    with httpx.Client(base_url=router.url, timeout=10) as client:
        assert answered(post(client, 20)) == [(200, "green")] * 20  # zero failed requests
        # the first tries went to blue and were retried; then blue was left out
        assert blue.statuses and set(blue.statuses) == {503}
        assert len(blue.statuses) <= table.max_fails + 1
        entries = [e for e in log_entries(router) if e["routed"] == "blue" and e["uri"] == INFER]
        assert entries[0]["upstream_status"] == "503, 200" and entries[0]["color"] == "green"
        assert entries[-1]["upstream_status"] == "200"  # straight to green
        # blue recovers: once fail_timeout has passed, traffic is back on it
        blue.status = 200
        recovered = time.monotonic()
        wait_until(lambda: answered(post(client, 1)) == [(200, "blue")], 10, 0.1,
                   what="traffic back on blue")
        assert time.monotonic() - recovered < table.fail_timeout + 3  # nginx counts whole seconds
        assert answered(post(client, 10)) == [(200, "blue")] * 10
    assert set(green.statuses) == {200}


def test_stables_500_goes_to_the_client(router: NginxRouter, servers: dict[str, ColorServer]) -> None:
    apply(router, servers, "blue", "green", green_weight=0)
    servers["blue"].status = 500
    with httpx.Client(base_url=router.url, timeout=10) as client:
        assert answered(post(client, 8)) == [(500, "blue")] * 8  # a model error stays visible
    assert servers["blue"].statuses == [500] * 8  # and does not take blue out
    assert servers["green"].hits == 0


def test_a_request_pinned_to_stable_keeps_its_503(router: NginxRouter,
                                                  servers: dict[str, ColorServer]) -> None:
    apply(router, servers, "blue", "green", green_weight=0)
    servers["blue"].status = 503
    with httpx.Client(base_url=router.url, timeout=10) as client:
        assert answered(post(client, 5, **{"x-deploy-color": "blue"})) == [(503, "blue")] * 5
        assert answered(post(client, 5, **{"x-model-version": "1.0.0"})) == [(503, "blue")] * 5
        assert servers["green"].hits == 0
        # unpinned requests are still answered, by green
        assert answered(post(client, 3)) == [(200, "green")] * 3


def test_a_503_moves_to_a_sibling_instance_before_the_other_colour(
    router: NginxRouter, servers: dict[str, ColorServer]
) -> None:
    apply(router, servers, "blue", "blue2", "green", green_weight=0)
    servers["blue"].status = 503
    with httpx.Client(base_url=router.url, timeout=10) as client:
        assert answered(post(client, 12)) == [(200, "blue")] * 12
    assert servers["blue2"].statuses == [200] * 12
    assert servers["green"].hits == 0
    assert len(servers["blue"].statuses) <= 4  # left out after max_fails


@pytest.mark.parametrize("status", [500, 503])
def test_a_failing_candidate_is_answered_by_stable_and_stays_in_rotation(
    router: NginxRouter, servers: dict[str, ColorServer], status: int
) -> None:
    apply(router, servers, "blue", "green", green_weight=100)  # blue stays the stable colour
    servers["green"].status = status
    with httpx.Client(base_url=router.url, timeout=10) as client:
        assert answered(post(client, 12)) == [(200, "blue")] * 12
    # every request tried green first: its failures do not count against its health,
    # so the canary analysis keeps seeing all of them
    assert servers["green"].statuses == [status] * 12
    entries = [e for e in log_entries(router) if e["routed"] == "green" and e["uri"] == INFER]
    assert entries[-1]["upstream_status"] == f"{status} : 200"
