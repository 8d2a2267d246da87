"""bench/k8s_smoke.sh --dry-run-only against the live 1.20 cluster.

Only step 1 (the server-side dry run of the export) can run here: the cluster has no pod
network, kube-proxy or cluster DNS, which steps 2-3 need. The script must say what the
server did and name the group versions of the export that the server does not serve
(discovery), and exit non-zero exactly when the dry run failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tests.k8s_live._cluster import cli_export

if TYPE_CHECKING:
    from tests.k8s_live._cluster import Cluster

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "k8s_smoke.sh"


def test_dry_run_only_reports_what_the_server_did(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--kubeconfig", str(cluster.kubeconfig), "--context", "workbench",
         "--namespace", namespace, "--image", "paddle-workbench:test", "--dry-run-only"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "WORKBENCH": f"{sys.executable} -m workbench"})
    out = proc.stdout
    status, version = cluster.request("GET", "/version")
    assert status == 200
    assert f"server:   {version['gitVersion']} (workbench)" in out, out + proc.stderr

    # what the script's export holds, against discovery
    export = cli_export(tmp_path / "export", "k8s", "service", namespace)
    written = {line.split(":", 1)[1].strip() for path in export.glob("*.yaml")
               for line in path.read_text().splitlines() if line.startswith("apiVersion:")}
    unserved = sorted(written - cluster.served_group_versions() - {"kustomize.config.k8s.io/v1beta1"})
    if unserved:
        assert proc.returncode == 1, out + proc.stderr
        assert "dry run (server): FAILED" in out
        assert f"not served by the server: {' '.join(unserved)}" in out
    else:
        assert proc.returncode == 0, out + proc.stderr
        assert "dry run (server): ok" in out
