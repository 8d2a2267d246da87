"""KubernetesRouter: selector flips, HTTPRoute weights and the scale-down delay, against
the in-memory API emulator (no API server runs on these machines)."""

from __future__ import annotations

import time

import pytest

from tests.deploy.platforms.kubernetes.conftest import spec
from tests.deploy.platforms.kubernetes.emulator import Broken, Emulator
from workbench.deploy.platforms.kubernetes.router import PARKED, SCALE_DOWN_AT, KubernetesRouter
from workbench.deploy.routing import RoutingTable, Upstream
from workbench.errors import RouterError


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def table(green: int, stable: str = "blue", colors: tuple[str, ...] = ("blue", "green")) -> RoutingTable:
    ups = tuple(Upstream(color=c, host=f"web-{c}.ml.svc", port=8000, version="1") for c in colors)  # type: ignore[arg-type]
    return RoutingTable(deployment="web", listen_port=8000, listen_host="web.ml.svc",
                        upstreams=ups, green_weight=green, stable=stable)  # type: ignore[arg-type]


def selector(emulator: Emulator) -> str:
    return (emulator.obj("services", "web") or {})["spec"]["selector"]["workbench.paddle.dev/color"]


def weights(emulator: Emulator) -> dict[str, int]:
    route = emulator.obj("httproutes", "web") or {}
    return {r["name"]: r["weight"] for r in route["spec"]["rules"][-1]["backendRefs"]}


def replicas(emulator: Emulator, color: str) -> int:
    return int((emulator.obj("deployments", f"web-{color}") or {})["spec"]["replicas"])


def annotations(emulator: Emulator, color: str) -> dict[str, str]:
    return (emulator.obj("deployments", f"web-{color}") or {})["metadata"].get("annotations", {})


def both_colors(backend) -> KubernetesRouter:
    """Blue live behind the stable Service, green started beside it with no traffic."""
    router = KubernetesRouter("web", backend)
    backend.start(spec("blue"))
    router.apply(table(0, colors=("blue",)))
    backend.start(spec("green", "1.1.0"))
    return router


def test_blue_green_apply_wait_flip_keep_then_scale_down(make_backend, emulator: Emulator) -> None:
    backend = make_backend(replicas=3, preview_replicas=1, scale_down_delay=60)
    clock = Clock()
    router = KubernetesRouter("web", backend, clock=clock)
    backend.start(spec("blue"))
    router.apply(table(0, colors=("blue",)))
    assert selector(emulator) == "blue" and router.running
    # update: the candidate is applied and waited for; verified, it is routed at 0%
    backend.start(spec("green", "1.1.0"))
    assert replicas(emulator, "green") == 1
    emulator.calls.clear()
    router.apply(table(0))
    assert selector(emulator) == "blue"
    assert [w for w in emulator.writes() if "services/web" in w or "deployments" in w] == []
    # promote: green scaled to full and waited for, then the selector flips
    emulator.calls.clear()
    emulator.ready_after = 2
    router.apply(table(100))
    writes = emulator.writes()
    assert writes[:3] == ["PATCH deployments/web-green", "PATCH horizontalpodautoscalers/web-green",
                          "PATCH services/web"]
    hpa = emulator.obj("horizontalpodautoscalers", "web-green") or {}
    assert hpa["spec"]["minReplicas"] == 3  # the HPA rendered for the preview no longer shrinks it
    scale_up = next(c for c in emulator.calls if c.method == "PATCH" and c.path.endswith("web-green"))
    assert scale_up.body["spec"]["replicas"] == 3
    assert scale_up.content_type == "application/merge-patch+json"
    flip = next(c for c in emulator.calls if c.method == "PATCH" and c.path.endswith("services/web"))
    watches_between = [c for c in emulator.calls[emulator.calls.index(scale_up):emulator.calls.index(flip)]
                       if c.method == "WATCH" and c.query.get("fieldSelector") == "metadata.name=web-green"]
    assert watches_between  # it watched green until it was ready, before the flip
    assert selector(emulator) == "green" and replicas(emulator, "green") == 3
    # blue keeps its replicas for the delay
    assert annotations(emulator, "blue")[SCALE_DOWN_AT] == f"{clock.now + 60:.3f}"
    clock.now += 30
    assert router.reap() == [] and replicas(emulator, "blue") == 3
    # a rollback within the delay flips at once: no scaling, no waiting
    emulator.calls.clear()
    router.apply(table(0, colors=("blue", "green")))
    assert selector(emulator) == "blue"
    assert [c.body for c in emulator.calls if c.method == "PATCH" and "web-blue" in c.path] == [
        {"metadata": {"annotations": {SCALE_DOWN_AT: None, PARKED: None}}, "spec": {"replicas": 3}}]
    assert not [c for c in emulator.calls if c.method == "GET" and c.path.endswith("deployments/web-blue")
                and emulator.calls.index(c) > 3]
    assert SCALE_DOWN_AT not in annotations(emulator, "blue")
    assert SCALE_DOWN_AT in annotations(emulator, "green")  # green now lost its traffic


def test_after_the_delay_the_old_colour_is_scaled_to_zero_and_rollback_scales_it_back(
    make_backend, emulator: Emulator
) -> None:
    backend = make_backend(replicas=2, scale_down_delay=10)
    clock = Clock()
    router = KubernetesRouter("web", backend, clock=clock)
    backend.start(spec("blue"))
    router.apply(table(0, colors=("blue",)))
    backend.start(spec("green", "1.1.0"))
    router.apply(table(100))
    clock.now += 11
    assert router.next_scale_down() == pytest.approx(clock.now - 1, abs=0.01)
    assert router.reap() == ["web-blue"]
    assert replicas(emulator, "blue") == 0 and annotations(emulator, "blue")[PARKED] == "true"
    assert backend.is_running(backend.find("web")[0])  # parked, not gone
    emulator.calls.clear()
    router.apply(table(0))  # rollback
    writes = emulator.writes()
    assert writes.index("PATCH deployments/web-blue") < writes.index("PATCH services/web")
    assert selector(emulator) == "blue" and replicas(emulator, "blue") == 2


def test_canary_weights_go_through_the_httproute(make_backend, emulator: Emulator) -> None:
    backend = make_backend(gateway="public", scale_down_delay=0)
    router = KubernetesRouter("web", backend)
    backend.start(spec("blue"))
    router.apply(table(0, colors=("blue",)))
    route = emulator.obj("httproutes", "web") or {}
    assert route["spec"]["parentRefs"][0]["name"] == "public"
    assert weights(emulator) == {"web-blue": 100}
    backend.start(spec("green", "1.1.0"))
    seen = []
    for step in (5, 25, 50):
        router.apply(table(step))
        seen.append(weights(emulator))
        assert selector(emulator) == "blue"  # the Service stays on stable during the canary
    assert seen == [{"web-blue": 95, "web-green": 5}, {"web-blue": 75, "web-green": 25},
                    {"web-blue": 50, "web-green": 50}]
    router.apply(table(100))
    assert weights(emulator) == {"web-blue": 0, "web-green": 100} and selector(emulator) == "green"
    assert replicas(emulator, "blue") == 0  # no delay: parked at once
    router.stop()
    assert emulator.obj("httproutes", "web") is None and emulator.obj("services", "web") is None


def test_a_split_without_a_gateway_is_refused_and_nothing_changes(make_backend, emulator: Emulator) -> None:
    router = both_colors(make_backend())
    emulator.calls.clear()
    with pytest.raises(RouterError, match=r"^web: a traffic split \(blue 75%, green 25%\) needs a Gateway "
                                          r"API HTTPRoute; give the deployment a gateway"):
        router.apply(table(25))
    assert emulator.writes() == []


def test_a_colour_that_cannot_scale_up_never_gets_traffic(make_backend, emulator: Emulator) -> None:
    router = both_colors(make_backend(replicas=3, gateway="public"))
    service, route = emulator.obj("services", "web"), emulator.obj("httproutes", "web")
    blue = emulator.obj("deployments", "web-blue")
    emulator.broken["web-green"] = Broken()
    with pytest.raises(RouterError, match=r"web-green did not become ready: pod web-green-7d9f-x1: "
                                          r"CrashLoopBackOff .*; traffic unchanged$"):
        router.apply(table(100))
    assert emulator.obj("services", "web") == service
    assert emulator.obj("httproutes", "web") == route
    assert emulator.obj("deployments", "web-blue") == blue


def test_api_errors_on_the_flip_are_one_sentence(make_backend, emulator: Emulator) -> None:
    router = both_colors(make_backend())
    emulator.fail("PATCH", "/services/web$", 403, 'services "web" is forbidden')
    with pytest.raises(RouterError, match=r"^the Kubernetes API refused to patch Service ml/web: "
                                          r"forbidden \(services \"web\" is forbidden\)"):
        router.apply(table(100))
    assert selector(emulator) == "blue"


def test_a_mirror_share_becomes_a_request_mirror_filter(make_backend, emulator: Emulator) -> None:
    router = both_colors(make_backend(gateway="public"))
    router.apply(table(0).with_mirror(20))
    rule = (emulator.obj("httproutes", "web") or {})["spec"]["rules"][-1]
    assert rule["filters"] == [{"type": "RequestMirror", "requestMirror": {
        "backendRef": {"name": "web-green", "port": 8000}, "percent": 20}}]
    assert weights(emulator) == {"web-blue": 100, "web-green": 0}
    router.apply(table(5))  # the first weight ends the mirror
    assert "filters" not in (emulator.obj("httproutes", "web") or {})["spec"]["rules"][-1]
    with pytest.raises(RouterError, match="^web: mirroring needs a Gateway API HTTPRoute"):
        both_colors(make_backend()).apply(table(0).with_mirror(20))


def test_a_detached_reaper_scales_the_old_colour_down_after_the_delay(
    make_backend, emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("WORKBENCH_K8S_REAPER", "on")
    backend = make_backend(replicas=2, scale_down_delay=1.5)
    router = KubernetesRouter("web", backend, workdir=tmp_path)
    backend.start(spec("blue"))
    router.apply(table(0, colors=("blue",)))
    backend.start(spec("green", "1.1.0"))
    started = time.monotonic()
    router.apply(table(100))  # promote; nothing else happens afterwards
    assert replicas(emulator, "blue") == 2
    deadline = time.monotonic() + 30
    while replicas(emulator, "blue") != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert replicas(emulator, "blue") == 0 and annotations(emulator, "blue")[PARKED] == "true"
    assert time.monotonic() - started >= 1.4  # not before its delay
    assert replicas(emulator, "green") == 2
    assert "scaled down web-blue" in (tmp_path / "reaper.log").read_text()
