"""``workbench deploy create --backend kubernetes`` as a real process, on the API emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from tests.deploy.k8s_backend.emulator import Emulator


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
