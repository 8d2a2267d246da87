"""The backend's own serving pods on the live cluster, under load through the workbench router.

Nothing here is a stand-in: the Deployments are the ones the backend renders, their pods
run ``workbench serve`` of the demo ``digits`` model (1.0.0 and 1.1.0) from the image
the Docker tests build, the kubelet starts them on the private dockerd and decides
Ready through their HTTP probes, and the workbench's nginx on this machine routes to
them. The cluster has no pod network, so the deployment uses the backend's
``host_network`` option (each colour binds its own port on the node's address,
10.255.255.1 here) and ``models_path`` (the model repository read-only from a directory
of the node, this machine).

One test walks a deployment through create (blue) -> update (green, verified) ->
switch -> a serving pod deleted -> rollback with clients sending inferences all the
while, and asserts that none of their requests failed. It prints the time each step
took and what answered meanwhile.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests._components import require
from tests._wait import wait_until
from tests.deploy._load import Load
from tests.k8s_live.test_backend_live import account_kubeconfig

if TYPE_CHECKING:
    from tests.k8s_live._cluster import Cluster

pytest.importorskip("kubernetes")

NAME = "web"
NODE_IP = os.environ.get("WORKBENCH_TEST_K8S_NODE_IP", "10.255.255.1")


@pytest.fixture(scope="module")
def image() -> str:
    value = os.environ.get("WORKBENCH_TEST_IMAGE", "")
    require("the test image", bool(value), "WORKBENCH_TEST_IMAGE is not set (source /tmp/workbench-docker.env)")
    return value


@pytest.fixture(scope="module")
def node_repo(demo_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo ``digits`` model on the node, readable by the pods' user (uid 1000)."""
    target = tmp_path_factory.mktemp("node") / "repo"
    shutil.copytree(demo_repo / "digits", target / "digits")
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def free_pair(host: str) -> int:
    """A port ``p`` with ``p`` and ``p + 1`` free on ``host`` and on every address."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port >= 65535:
            continue
        try:
            for where in (host, "0.0.0.0"):
                for p in (port, port + 1):
                    with socket.socket() as probe:
                        probe.bind((where, p))
        except OSError:
            continue
        return port
    raise AssertionError(f"no two free ports in a row on {host}")


def pod_names(cluster: Cluster, namespace: str, color: str) -> list[str]:
    pods = cluster.get("pods", "-n", namespace, "-l", f"workbench.paddle.dev/color={color}")["items"]
    return [p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")]


def available(cluster: Cluster, namespace: str, color: str) -> int:
    deployment = cluster.get("deployment", f"{NAME}-{color}", "-n", namespace)
    return int(deployment.get("status", {}).get("availableReplicas") or 0)


@pytest.mark.timeout(1200)
def test_blue_green_of_a_real_model_under_load_on_the_live_cluster(
        cluster: Cluster, namespace: str, image: str, node_repo: Path, tmp_path: Path) -> None:
    require("nginx", shutil.which("nginx") is not None, "apt-get install nginx")
    require("the node address", _reachable(NODE_IP), f"{NODE_IP} is not an address of this machine")
    from workbench.deploy.manager import DeploymentManager

    config = account_kubeconfig(cluster, namespace, tmp_path / "operator.kubeconfig")
    port = free_pair(NODE_IP)
    options = {"kubeconfig": str(config), "namespace": namespace, "image": image,
               "image_pull_policy": "Never", "host_network": "true", "models_path": str(node_repo),
               "port": str(port), "cpu_request": "100m", "memory_request": "512Mi",
               "graceful_timeout": "10", "ready_timeout": "300", "scale_down_delay": "600"}
    home = Path(tempfile.mkdtemp(prefix="wbk8s-"))  # short: the router's unix socket path
    manager = DeploymentManager(home, repo=node_repo)
    steps: dict[str, float] = {}
    started = time.monotonic()
    web = manager.create(NAME, "digits", "1.0.0", backend="kubernetes", backend_options=options,
                         timeout=300)
    steps["create (blue Ready through its probes)"] = time.monotonic() - started
    try:
        state = web.state
        assert state.router == "process"  # host network: the workbench's nginx routes
        blue = state.instances["blue"]
        assert (blue.host, blue.port) == (NODE_IP, port)
        deployment = cluster.get("deployment", f"{NAME}-blue", "-n", namespace)
        pod = deployment["spec"]["template"]["spec"]
        assert pod["hostNetwork"] and pod["volumes"][0]["hostPath"]["path"] == str(node_repo)
        assert pod["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert available(cluster, namespace, "blue") == 1

        with Load(web.url, threads=3, rate=15, max_seconds=900) as load:
            wait_until(lambda: len(load.since(0)) >= 20, 60, 0.05, what="load through the router")
            assert {c for _, _, c in load.since(0)} == {"blue"}

            mark = time.monotonic()
            state = web.update("1.1.0", timeout=300)  # green: rendered, scheduled, Ready, verified
            steps["update (green Ready and verified)"] = time.monotonic() - mark
            green = state.instances["green"]
            assert (green.host, green.port) == (NODE_IP, port + 1)
            assert state.rollout.stable == "blue"

            mark = time.monotonic()
            web.switch("live test")
            steps["switch"] = time.monotonic() - mark
            switched = time.monotonic()
            wait_until(lambda: {c for _, _, c in load.since(switched)[-10:]} == {"green"}
                       and len(load.since(switched)) >= 10, 60, 0.1, what="traffic on green")

            # a serving pod deleted mid-traffic: the ReplicaSet makes a new one; meanwhile
            # the router retries on blue, kept warm for the rollback
            (victim,) = pod_names(cluster, namespace, "green")
            deleted = time.monotonic()
            cluster.kubectl("delete", "pod", victim, "-n", namespace, "--wait=false")
            wait_until(lambda: any(p != victim for p in pod_names(cluster, namespace, "green"))
                       and available(cluster, namespace, "green") == 1
                       and victim not in pod_names(cluster, namespace, "green"), 300, 0.5,
                       what="the replacement green pod Ready")
            steps["pod deleted -> replacement Ready"] = time.monotonic() - deleted
            recovered = time.monotonic()
            wait_until(lambda: {c for _, _, c in load.since(recovered)[-10:]} == {"green"}
                       and len(load.since(recovered)) >= 10, 120, 0.2,
                       what="traffic back on green's new pod")
            during = Counter(c for t, _, c in load.since(deleted) if t < recovered)

            mark = time.monotonic()
            web.rollback("live test")
            steps["rollback"] = time.monotonic() - mark
            rolled = time.monotonic()
            wait_until(lambda: {c for _, _, c in load.since(rolled)[-10:]} == {"blue"}
                       and len(load.since(rolled)) >= 10, 60, 0.1, what="traffic back on blue")

        assert not load.errors, load.errors[:5]  # zero failed client requests
        statuses = Counter(s for _, s, _ in load.answers)
        assert statuses == {200: len(load.answers)}
        assert during["blue"] > 0, during  # the router retried on blue while green had no pod
        # the rollback deleted green's objects; the cluster's garbage collector takes its pod
        # (at once on a quiet node, seconds later on a busy one)
        wait_until(lambda: cluster.kubectl("get", "deployment", f"{NAME}-green", "-n", namespace,
                                           check=False).returncode != 0
                   or pod_names(cluster, namespace, "green") == [], 60, 0.5, what="green's pod gone")
        figures = "; ".join(f"{k} {v:.1f}s" for k, v in steps.items())
        print(f"\nlive serving pods: {len(load.answers)} requests, 0 failed; {figures}; "
              f"while the green pod was replaced: {dict(during)}")
    finally:
        manager.delete(NAME)
        shutil.rmtree(home, ignore_errors=True)


def _reachable(address: str) -> bool:
    try:
        with socket.socket() as sock:
            sock.bind((address, 0))
    except OSError:
        return False
    return True
