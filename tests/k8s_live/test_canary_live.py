"""A canary on the live cluster, driven by the same controller as on Docker, through the
workbench's nginx router running in the cluster.

The deployment runs with ``router=nginx``: the router is a Deployment of the image's
nginx reading its configuration from the ConfigMap ``web-router``, on the host network
(the cluster has no pod network) on its own port, routing to the colours' ports at the
node address. The canary controller steps the weights 5 -> 25 -> 100; at each step the
test reads the weight from the ConfigMap and counts which colour answered the clients'
requests through the router pod's port. Before that, ``deploy status`` reports blue
unready while the API server's Deployment status has one of its two replicas unavailable.
Then a degraded version (1.2.0, whose answers
disagree with the labelled digits) is rolled back by the controller. No client request
may fail in either.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests._components import require
from tests._wait import wait_until
from tests.deploy._load import Load
from tests.deploy.test_replay import labelled  # noqa: F401 - the labelled-set fixture
from tests.k8s_live.test_backend_live import account_kubeconfig
from tests.k8s_live.test_serving_live import (  # noqa: F401 - fixtures
    NAME,
    NODE_IP,
    _reachable,
    free_pair,
    image,
    node_repo,
)

if TYPE_CHECKING:
    from tests.k8s_live._cluster import Cluster

pytest.importorskip("kubernetes")

STEPS = (5, 25, 100)
INTERVAL = 15.0  # seconds between the controller's steps
SETTLE = 4.0  # seconds after a step before its share is counted (the router's reload)
#: Every colour counts requests per tenant (workbench serve --segment-by), from blue on.
COUNTING = ("--segment-by", "header:x-tenant")


def router_weight(cluster: Cluster, namespace: str) -> int:
    """The green weight in the table of the ConfigMap the router pod mounts."""
    data = cluster.get("configmap", f"{NAME}-router", "-n", namespace)["data"]
    return int(json.loads(data["table.json"])["green_weight"])


def serve_args(cluster: Cluster, namespace: str, color: str) -> list[str]:
    """The ``workbench serve`` arguments of ``color``'s pods, as the cluster has them."""
    deployment = cluster.get("deployment", f"{NAME}-{color}", "-n", namespace)
    return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])


def share(answers: list[tuple[float, int, str]], start: float, end: float, color: str) -> tuple[float, int]:
    """The share of the answers in [start, end) that ``color`` gave, and how many there were."""
    window = [c for t, _, c in answers if start <= t < end]
    return (Counter(window)[color] / len(window) if window else 0.0), len(window)


@pytest.mark.timeout(1500)
def test_canary_through_the_in_cluster_router_on_the_live_cluster(
        cluster: Cluster, namespace: str, image: str, node_repo: Path,  # noqa: F811
        labelled: Path, tmp_path: Path) -> None:  # noqa: F811
    require("the node address", _reachable(NODE_IP), f"{NODE_IP} is not an address of this machine")
    from workbench.deploy import canary
    from workbench.deploy.manager import DeploymentManager
    from workbench.deploy.rollout.analysis import AgreementRule, AnalysisSpec, ErrorRateRule
    from workbench.deploy.rollout.phases import Phase
    from workbench.serving.faults import FaultConfig

    config = account_kubeconfig(cluster, namespace, tmp_path / "operator.kubeconfig")
    port = free_pair(NODE_IP)
    router_port = free_pair(NODE_IP)
    while router_port in (port, port + 1):
        router_port = free_pair(NODE_IP)
    options = {"kubeconfig": str(config), "namespace": namespace, "image": image,
               "image_pull_policy": "Never", "host_network": "true", "models_path": str(node_repo),
               "port": str(port), "router": "nginx", "router_port": str(router_port),
               "node_address": NODE_IP, "cpu_request": "100m", "memory_request": "512Mi",
               "graceful_timeout": "10", "ready_timeout": "300", "scale_down_delay": "600"}
    rules = (ErrorRateRule(min_requests=5), AgreementRule(min_rows=32))
    plan = AnalysisSpec(steps=STEPS, interval=INTERVAL, max_inconclusive=8, rules=rules,
                        labelled=str(labelled))
    home = Path(tempfile.mkdtemp(prefix="wbk8s-"))
    manager = DeploymentManager(home, repo=node_repo)
    web = manager.create(NAME, "digits", "1.0.0", backend="kubernetes", backend_options=options,
                         timeout=300, serve_args=COUNTING)
    try:
        state = web.state
        assert state.router == "kubernetes" and (state.host, state.port) == (NODE_IP, router_port)
        router = cluster.get("deployment", f"{NAME}-router", "-n", namespace)
        pod = router["spec"]["template"]["spec"]
        assert pod["hostNetwork"] and pod["volumes"][0]["configMap"]["name"] == f"{NAME}-router"
        assert router["status"]["availableReplicas"] == 1
        assert router_weight(cluster, namespace) == 0

        # `deploy status` readiness is the Deployment's status as the API server has it: a
        # second blue replica cannot be placed (the node's port is taken by the first)
        (blue,) = web.status().instances
        assert (blue.running, blue.ready, blue.error) == (True, True, "")
        cluster.kubectl("scale", "deployment", f"{NAME}-blue", "-n", namespace, "--replicas=2")
        wait_until(lambda: cluster.get("deployment", f"{NAME}-blue", "-n", namespace)["status"]
                   .get("unavailableReplicas") == 1, 60, 0.5, what="blue's second replica unavailable")
        (blue,) = web.status().instances
        assert blue.running and not blue.ready, blue
        assert blue.error.startswith("1 of 2 replicas available"), blue.error
        assert "Unschedulable" in blue.error and "ports" in blue.error, blue.error
        assert not web.status().healthy
        cluster.kubectl("scale", "deployment", f"{NAME}-blue", "-n", namespace, "--replicas=1")
        wait_until(lambda: web.status().instances[0].ready, 60, 0.5, what="blue ready again")

        seen: list[tuple[float, int, int]] = []  # (when, controller's weight, ConfigMap's weight)

        def on_tick(status: Any, action: Any) -> None:
            if action.weight:
                seen.append((time.monotonic(), action.weight, router_weight(cluster, namespace)))

        with Load(web.url, threads=3, rate=5, max_seconds=1200) as load:
            wait_until(lambda: len(load.since(0)) >= 20, 60, 0.05, what="load through the router pod")
            assert {c for _, _, c in load.since(0)} == {"blue"}

            # a good version: promoted through 5 -> 25 -> 100
            web.update("1.1.0", timeout=300)
            assert web.phase is Phase.VERIFIED
            # both colours' pods count per segment (the candidate inherits it)
            assert all(serve_args(cluster, namespace, c)[-2:] == list(COUNTING) for c in ("blue", "green"))
            status = canary.run(web, plan, on_tick=on_tick)
            promoted = time.monotonic()
            assert status.stage is Phase.PROMOTED, status.message
            wait_until(lambda: len(load.since(promoted + SETTLE)) >= 20, 60, 0.1, what="load after promotion")
            end = time.monotonic()

            # a degraded version: rolled back by the agreement rule at the first step
            # with a chaos fault (5 ms, harmless here): on the candidate's pods only
            web.update("1.2.0", timeout=300, checks=("ready",), faults=FaultConfig(0.0, 5.0))
            candidate, stable = serve_args(cluster, namespace, "blue"), serve_args(cluster, namespace, "green")
            assert "--fault-latency-ms" in candidate and "--segment-by" in candidate, candidate
            assert "--fault-latency-ms" not in stable, stable
            bad = canary.run(web, plan)
            rolled = time.monotonic()
            wait_until(lambda: len(load.since(rolled + SETTLE)) >= 20, 60, 0.1, what="load after rollback")

        assert [w for _, w, _ in seen] == list(STEPS)
        assert [c for _, _, c in seen] == list(STEPS)  # each weight was in the router's ConfigMap
        bounds = [t for t, _, _ in seen] + [end]
        shares = [share(load.answers, bounds[i] + SETTLE, bounds[i + 1], "green") for i in range(len(STEPS))]
        (low, n5), (mid, n25), (full, n100) = shares
        # how long after the controller wrote 100 % the router pod still sent to blue: the
        # kubelet's refresh of the ConfigMap volume (prompted by the pods' annotation) and
        # the reload; at the kubelet's own sync it could take a minute or more
        lag = max((t for t, _, c in load.answers if c == "blue" and bounds[2] <= t < end), default=bounds[2])
        lag -= bounds[2]
        print(f"\nlive canary through the router pod: {len(load.answers)} requests, {len(load.errors)} failed; "
              f"weights {[w for _, w, _ in seen]} (ConfigMap {[c for _, _, c in seen]}); green's share "
              + ", ".join(f"{w}%: {s:.1%} of {n}" for w, (s, n) in zip(STEPS, shares, strict=True))
              + f"; 100 % took effect within {lag:.1f}s; 1.2.0 rolled back: {bad.message}")
        assert n5 >= 60 and 0 < low <= 0.15, shares
        assert n25 >= 60 and 0.12 <= mid <= 0.40, shares
        assert n100 >= 20 and full == 1.0, shares
        assert lag < SETTLE, lag

        assert bad.stage is Phase.ROLLED_BACK and "agreement" in bad.message, bad.message
        assert web.phase is Phase.ROLLED_BACK and web.state.candidate is None
        after, n_after = share(load.answers, rolled + SETTLE, time.monotonic() + 1, "green")
        assert n_after >= 20 and after == 1.0  # green (1.1.0) kept everything
        assert router_weight(cluster, namespace) == 100

        assert not load.errors, load.errors[:5]  # zero failed client requests
    finally:
        manager.delete(NAME)
        shutil.rmtree(home, ignore_errors=True)
