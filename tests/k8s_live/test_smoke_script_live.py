"""bench/k8s_smoke.sh against the live 1.20 cluster: every step.

Step 1 (the server-side dry run of the export) writes the export for the server's
release (its ``/version``), so the server takes every object. Steps 2-3 run with
``--host-network``: the cluster has no pod network, kube-proxy or cluster DNS, so the
serving pods bind ports on the node's address, the model repository is a directory of
the node, and the workbench runs here with its nginx router in front; the script's load
loop must see zero failed requests across the promote and the rollback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.k8s_live.test_serving_live import NODE_IP, free_pair, node_repo  # noqa: F401 (fixture)

if TYPE_CHECKING:
    from tests.k8s_live._cluster import Cluster

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "k8s_smoke.sh"


def smoke(cluster: Cluster, namespace: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), "--kubeconfig", str(cluster.kubeconfig), "--context", "workbench",
         "--namespace", namespace, *args],
        capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, "WORKBENCH": f"{sys.executable} -m workbench", "PYTHON": sys.executable})


def test_dry_run_only_fits_the_export_to_the_server(cluster: Cluster, namespace: str) -> None:
    proc = smoke(cluster, namespace, "--image", "paddle-workbench:test", "--dry-run-only")
    out = proc.stdout
    status, version = cluster.request("GET", "/version")
    assert status == 200
    assert f"server:   {version['gitVersion']} (workbench)" in out, out + proc.stderr
    assert proc.returncode == 0, out + proc.stderr
    assert "dry run (server): ok (" in out
    assert "not served by the server" not in out


@pytest.mark.timeout(900)
def test_switch_and_rollback_on_the_host_network_with_no_failed_request(
        cluster: Cluster, namespace: str, node_repo: Path) -> None:  # noqa: F811
    image = os.environ.get("WORKBENCH_TEST_IMAGE", "")
    if not image:
        pytest.skip("WORKBENCH_TEST_IMAGE is not set (source /tmp/workbench-docker.env)")
    proc = smoke(cluster, namespace, "--image", image, "--host-network", "--models-path", str(node_repo),
                 "--port", str(free_pair(NODE_IP)), "--cpu-request", "100m", "--requests", "300", timeout=800)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    assert "dry run (server): ok (" in out
    for verb, new in (("promote", "1.1.0"), ("rollback", "1.0.0")):
        line = next(x for x in out.splitlines() if x.startswith(verb))
        match = re.search(r"(\d+) ok\s+(\d+) failed .*first " + re.escape(new) + r" answer after ([0-9.]+) s", line)
        assert match, line
        assert int(match.group(1)) >= 300 and int(match.group(2)) == 0, line
    assert cluster.get("deployments", "-n", namespace)["items"] == [] or all(
        d["metadata"].get("deletionTimestamp") for d in cluster.get("deployments", "-n", namespace)["items"])
