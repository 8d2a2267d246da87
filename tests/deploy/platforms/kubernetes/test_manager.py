"""The deploy API on Kubernetes: DeploymentManager wiring (backend, router, state in the
cluster) driving promote, weights and rollback against the in-memory API emulator.

The candidate's verification talks HTTP to its Service, which only exists in a cluster,
so these tests record the started colours in the state by hand and drive the verbs that
need no HTTP: every flip goes through Deployment._act -> KubernetesRouter -> the API.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.deploy.platforms.kubernetes.conftest import spec
from tests.deploy.platforms.kubernetes.emulator import Broken
from workbench.deploy.manager import DeploymentManager, default_router
from workbench.deploy.platforms.kubernetes.backend import KubernetesBackend
from workbench.deploy.platforms.kubernetes.client import KubeApi
from workbench.deploy.platforms.kubernetes.router import KubernetesRouter
from workbench.deploy.platforms.kubernetes.store import ClusterStateStore
from workbench.deploy.records import InstanceRecord
from workbench.deploy.rollout.phases import Phase, Rollout
from workbench.deploy.state import DeploymentState
from workbench.deploy.tables import routing_table
from workbench.errors import RolloutError, RouterError

if TYPE_CHECKING:
    from tests.deploy.platforms.kubernetes.emulator import Emulator


def _manager(kubeconfig: Path, home: Path) -> DeploymentManager:
    store = ClusterStateStore(KubeApi.connect(config_file=str(kubeconfig), timeout=5.0), home)
    return DeploymentManager(home, repo=home, store=store)


def _verified(manager: DeploymentManager, kubeconfig: Path, **options: str) -> KubernetesBackend:
    """web with blue 1.0.0 stable and green 1.1.0 verified, as create + update leave it."""
    opts = {"kubeconfig": str(kubeconfig), "scale_down_delay": "60", **options}
    backend = manager.backend("kubernetes", opts)
    assert isinstance(backend, KubernetesBackend)
    blue = backend.start(spec("blue"))
    green = backend.start(spec("green", "1.1.0"))
    state = DeploymentState(
        name="web", model="digits", repo="/models", host=backend.stable_host("web"), port=8000,
        backend="kubernetes", backend_options=opts, router=default_router("kubernetes", opts),
        rollout=Rollout(phase=Phase.VERIFIED, stable="blue", since=time.time()),
        instances={"blue": InstanceRecord.from_instance(blue),
                   "green": InstanceRecord.from_instance(green)},
    )
    with manager.store.transaction("web") as txn:
        txn.save(state)
    manager.router("web").apply(routing_table(state))
    return backend


def _selector(emulator: Emulator) -> str:
    return (emulator.obj("services", "web") or {})["spec"]["selector"]["workbench.paddle.dev/color"]


def test_promote_and_rollback_flip_the_service_through_the_deploy_api(
    kubeconfig: Path, tmp_path: Path, emulator: Emulator
) -> None:
    manager = _manager(kubeconfig, tmp_path)
    _verified(manager, kubeconfig)
    assert isinstance(manager.router("web"), KubernetesRouter)
    web = manager.get("web")
    assert web.url == "http://web.ml.svc:8000" and _selector(emulator) == "blue"
    web.promote()
    assert _selector(emulator) == "green" and web.state.phase == "promoted"
    blue = emulator.obj("deployments", "web-blue") or {}
    assert "workbench.paddle.dev/scale-down-at" in blue["metadata"]["annotations"]  # kept for the delay
    web.rollback("bad p99")
    assert _selector(emulator) == "blue" and web.state.phase == "rolled_back"
    assert emulator.obj("deployments", "web-green") is None  # the candidate was stopped
    assert [h.action for h in web.history()][-2:] == ["promote", "rollback"]
    # a second machine reads the same state from the ConfigMap
    other = _manager(kubeconfig, tmp_path / "elsewhere")
    assert other.names() == ["web"] and other.get("web").state.phase == "rolled_back"
    assert other.get("web").status(probe=False).state.stable_version == "1.0.0"


def test_canary_weights_reach_the_httproute(kubeconfig: Path, tmp_path: Path, emulator: Emulator) -> None:
    manager = _manager(kubeconfig, tmp_path)
    _verified(manager, kubeconfig, gateway="public")
    web = manager.get("web")
    for percent in (5, 25, 100):
        web.weight(percent)
        route = emulator.obj("httproutes", "web") or {}
        refs = {r["name"]: r["weight"] for r in route["spec"]["rules"][-1]["backendRefs"]}
        assert refs == {"web-blue": 100 - percent, "web-green": percent}
    assert web.state.phase == "promoted" and _selector(emulator) == "green"


def test_a_refused_flip_is_recorded_and_traffic_stays(kubeconfig: Path, tmp_path: Path,
                                                      emulator: Emulator) -> None:
    manager = _manager(kubeconfig, tmp_path)
    _verified(manager, kubeconfig)
    web = manager.get("web")
    with pytest.raises(RouterError, match="needs a Gateway API HTTPRoute"):
        web.weight(25)
    assert web.state.phase == "verified" and _selector(emulator) == "blue"
    assert web.history()[-1].outcome == "failed"


def test_delete_removes_every_object(kubeconfig: Path, tmp_path: Path, emulator: Emulator) -> None:
    manager = _manager(kubeconfig, tmp_path)
    _verified(manager, kubeconfig)
    manager.delete("web")
    assert manager.names() == []
    left = [k for k in emulator.objects if k[2] not in ("pods", "events")]
    assert left == []


def test_the_backend_factory_knows_kubernetes(kubeconfig: Path) -> None:
    from workbench.deploy.platforms import BACKENDS, get_backend

    assert "kubernetes" in BACKENDS
    backend = get_backend("kubernetes", kubeconfig=str(kubeconfig), namespace="prod", gpus="2")
    assert isinstance(backend, KubernetesBackend) and backend.options.gpus == 2
    assert default_router("kubernetes", {}) == "kubernetes"


def test_state_in_the_cluster_is_picked_by_the_environment(kubeconfig: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("WORKBENCH_STATE", "kubernetes")
    monkeypatch.setenv("WORKBENCH_K8S_NAMESPACE", "team-a")
    store = DeploymentManager(tmp_path, repo=tmp_path).store
    assert isinstance(store, ClusterStateStore) and store.api.namespace == "team-a"
    monkeypatch.setenv("WORKBENCH_STATE", "etcd")
    with pytest.raises(Exception, match="WORKBENCH_STATE must be file or kubernetes, not 'etcd'"):
        DeploymentManager(tmp_path, repo=tmp_path)


def _stable_only(manager: DeploymentManager, kubeconfig: Path, repo: Path, **options: str) -> None:
    """web with blue 1.0.0 of the stub model live, as create leaves it."""
    opts = {"kubeconfig": str(kubeconfig), **options}
    backend = manager.backend("kubernetes", opts)
    assert isinstance(backend, KubernetesBackend)
    blue = backend.start(spec("blue"))
    state = DeploymentState(
        name="web", model="stub", repo=str(repo), host=backend.stable_host("web"), port=8000,
        backend="kubernetes", backend_options=opts, router="kubernetes",
        rollout=Rollout(phase=Phase.STABLE, stable="blue", since=time.time()),
        instances={"blue": InstanceRecord.from_instance(blue)},
    )
    with manager.store.transaction("web") as txn:
        txn.save(state)
    manager.router("web").apply(routing_table(state))


def test_an_update_whose_candidate_never_gets_ready_fails_and_leaves_stable_alone(
    kubeconfig: Path, tmp_path: Path, emulator: Emulator, stub_repo: Path
) -> None:
    manager = _manager(kubeconfig, tmp_path)
    _stable_only(manager, kubeconfig, stub_repo, gateway="public", ready_timeout="5")
    stable = {k: emulator.obj(*k) for k in (("services", "web"), ("httproutes", "web"),
                                            ("deployments", "web-blue"), ("services", "web-blue"))}
    emulator.broken["web-green"] = Broken("ImagePullBackOff", 'Back-off pulling image "nope:1"', "Failed")
    web = manager.get("web")
    with pytest.raises(RolloutError, match=r"^web: could not start 1\.1\.0 on green: web-green did not "
                                           r"become ready: pod web-green-7d9f-x1: ImagePullBackOff .*"
                                           r"blue keeps all traffic$"):
        web.update("1.1.0")
    assert web.state.phase == "failed" and web.state.candidate is None
    assert {k: emulator.obj(*k) for k in stable} == stable  # selector, weights, stable Deployment
    assert emulator.obj("deployments", "web-green") is None
    assert web.history()[-1].outcome == "failed"


def test_an_update_applies_the_candidate_beside_stable(kubeconfig: Path, tmp_path: Path,
                                                       emulator: Emulator, stub_repo: Path) -> None:
    manager = _manager(kubeconfig, tmp_path)
    _stable_only(manager, kubeconfig, stub_repo, replicas="3", preview_replicas="1")
    state = manager.get("web").update("1.1.0", wait=False)
    assert state.phase == "starting"
    assert state.candidate is not None and state.candidate.url == "http://web-green.ml.svc:8000"
    green = emulator.obj("deployments", "web-green") or {}
    assert green["spec"]["replicas"] == 1 and green["status"]["availableReplicas"] == 1
    assert _selector(emulator) == "blue"
