"""The whole deploy flow on the Kubernetes backend: create, update (verified over real
HTTP), promote, rollback, a failing candidate, delete.

The cluster is the in-memory API emulator; its test kubelet (``kubelet.py``) runs the
stub ``workbench serve`` as a real process per ready colour on the colour Service's
NodePort, and the backend reaches colours through ``node_address=127.0.0.1`` as it would
reach the NodePorts of a real cluster from outside. No API server runs here.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import pytest

from tests.deploy.conftest import MODES
from tests.deploy.platforms.kubernetes.kubelet import StubKubelet
from workbench.deploy.manager import DeploymentManager
from workbench.deploy.platforms.kubernetes.client import KubeApi
from workbench.deploy.platforms.kubernetes.store import ClusterStateStore
from workbench.errors import RolloutError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.deploy.platforms.kubernetes.emulator import Emulator


@pytest.fixture
def kubelet(emulator: Emulator, stub_command: list[str], stub_repo: Path) -> Iterator[StubKubelet]:
    kube = StubKubelet(stub_command, str(stub_repo), {**os.environ, "WB_STUB_MODES": json.dumps(MODES)})
    emulator.kubelet = kube
    yield kube
    emulator.kubelet = None
    kube.close()


def _selector(emulator: Emulator) -> str:
    return (emulator.obj("services", "web") or {})["spec"]["selector"]["workbench.paddle.dev/color"]


def test_create_update_promote_rollback_on_the_emulated_cluster(
    kubeconfig: Path, emulator: Emulator, kubelet: StubKubelet, stub_repo: Path, home: Path
) -> None:
    store = ClusterStateStore(KubeApi.connect(config_file=str(kubeconfig), timeout=5.0), home)
    manager = DeploymentManager(home, repo=stub_repo, store=store)
    options = {"kubeconfig": str(kubeconfig), "node_address": "127.0.0.1", "replicas": "2",
               "preview_replicas": "1", "scale_down_delay": "30", "image": "registry.example/wb:1"}
    web = manager.create("web", "stub", "1.0.0", backend="kubernetes", backend_options=options,
                         timeout=30)
    state = web.state
    assert state.router == "kubernetes" and state.url == "http://web.ml.svc:8000"
    assert state.stable is not None and state.stable.host == "127.0.0.1"
    assert _selector(emulator) == "blue" and set(kubelet.running) == {"web-blue"}

    state = web.update("1.1.0", timeout=30)  # ready, deep health, agreement: real HTTP
    assert state.phase == "verified" and state.agreement is not None
    assert (emulator.obj("deployments", "web-green") or {})["spec"]["replicas"] == 1
    assert _selector(emulator) == "blue"

    web.promote()
    assert _selector(emulator) == "green"
    assert (emulator.obj("deployments", "web-green") or {})["spec"]["replicas"] == 2
    assert "workbench.paddle.dev/scale-down-at" in (emulator.obj("deployments", "web-blue") or {})["metadata"]["annotations"]

    web.rollback("smoke")
    assert _selector(emulator) == "blue" and set(kubelet.running) == {"web-blue"}
    assert web.state.phase == "rolled_back"

    with pytest.raises(RolloutError, match="1.2.0 failed verification"):
        web.update("1.2.0", timeout=30)  # answers, but disagrees with 1.0.0
    assert web.state.phase == "failed" and _selector(emulator) == "blue"
    assert emulator.obj("deployments", "web-green") is None

    web.delete()
    assert manager.names() == [] and kubelet.running == {}
    assert [k for k in emulator.objects if k[2] not in ("pods", "events")] == []


def test_the_canary_controller_steps_the_httproute_weights(
    kubeconfig: Path, emulator: Emulator, kubelet: StubKubelet, stub_repo: Path, home: Path
) -> None:
    """The canary controller (scraping the stubs' /metrics over HTTP) moves the candidate
    through its steps with the same Deployment.weight calls it makes on nginx; here each
    lands as a patch of the HTTPRoute's weights."""
    from workbench.deploy import canary
    from workbench.deploy.rollout.analysis import AnalysisSpec, ErrorRateRule

    store = ClusterStateStore(KubeApi.connect(config_file=str(kubeconfig), timeout=5.0), home)
    manager = DeploymentManager(home, repo=stub_repo, store=store)
    options = {"kubeconfig": str(kubeconfig), "node_address": "127.0.0.1", "gateway": "public",
               "scale_down_delay": "0"}
    web = manager.create("web", "stub", "1.0.0", backend="kubernetes", backend_options=options,
                         timeout=30)
    web.update("1.1.0", timeout=30, min_agreement=0.0)
    emulator.calls.clear()
    spec = AnalysisSpec(steps=(5, 50, 100), interval=0.5, max_inconclusive=50, synthetic=40.0,
                        rules=(ErrorRateRule(min_requests=3),))
    status = canary.run(web, spec)
    assert status.done and web.state.phase == "promoted"
    assert [r.verdict for r in status.last] == ["pass"]  # judged on the stubs' scraped metrics
    steps = []
    for call in emulator.calls:
        if call.method == "PATCH" and call.path.endswith("/httproutes/web"):
            refs = call.body["spec"]["rules"][-1]["backendRefs"]
            steps.append({r["name"]: r["weight"] for r in refs}["web-green"])
    assert steps == [5, 50, 100]
    assert _selector(emulator) == "green"
    assert (emulator.obj("deployments", "web-blue") or {})["spec"]["replicas"] == 0  # no delay
    web.delete()
