"""``workbench deploy create --backend kubernetes`` as a real process, on the API emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from tests.deploy.platforms.kubernetes.emulator import Emulator


def test_create_that_cannot_reach_its_service_leaves_nothing_behind(
    kubeconfig: Path, emulator: Emulator, stub_repo: Path, tmp_path: Path
) -> None:
    """The colour gets ready in the (emulated) cluster, but its Service's in-cluster
    address does not resolve here: one sentence, exit code, and every object is gone."""
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "deploy", "create", "web", "--model", "stub",
         "--version", "1.0.0", "--backend", "kubernetes", "--kubeconfig", str(kubeconfig),
         "--namespace", "ml", "--image", "registry.example/wb:1", "--replicas", "2",
         "--timeout", "1"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "WORKBENCH_HOME": str(tmp_path), "WORKBENCH_REPO": str(stub_repo),
             "COLUMNS": "200"},
    )
    assert proc.returncode != 0
    assert "blue was not ready within 1s" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    applied = [c.body for c in emulator.calls
               if c.method == "PATCH" and c.path.endswith("/deployments/web-blue")]
    assert applied and applied[0]["spec"]["replicas"] == 2
    assert applied[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/wb:1"
    left = sorted(f"{k[2]}/{k[3]}" for k in emulator.objects if k[2] not in ("pods", "events"))
    assert left == []
    assert not any(tmp_path.glob("deployments/*/state.json"))


def test_other_shells_reach_the_state_in_the_cluster(
    kubeconfig: Path, emulator: Emulator, stub_repo: Path, tmp_path: Path
) -> None:
    """A deployment whose state is a ConfigMap: `status`, `history` and `rollback` from a
    fresh process that only has WORKBENCH_STATE=kubernetes and a kubeconfig."""
    from tests.deploy.platforms.kubernetes.test_manager import _manager, _verified

    manager = _manager(kubeconfig, tmp_path / "first-machine")
    _verified(manager, kubeconfig)
    manager.get("web").promote()
    env = {**os.environ, "WORKBENCH_HOME": str(tmp_path / "second-machine"),
           "WORKBENCH_STATE": "kubernetes", "KUBECONFIG": str(kubeconfig), "COLUMNS": "200",
           "WORKBENCH_K8S_REAPER": "off"}

    def workbench(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True,
                              text=True, timeout=120, env=env)

    status = workbench("deploy", "status", "web", "--json")
    assert status.returncode == 0, status.stderr
    assert '"backend": "kubernetes"' in status.stdout and '"phase": "promoted"' in status.stdout
    assert "promote" in workbench("deploy", "history", "web").stdout
    back = workbench("rollback", "web")
    assert back.returncode == 0, back.stderr
    selector = (emulator.obj("services", "web") or {})["spec"]["selector"]
    assert selector["workbench.paddle.dev/color"] == "blue"
    assert manager.get("web").state.phase == "rolled_back"
