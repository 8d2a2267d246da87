"""bench/k8s_smoke.sh cannot run here (no API server); its syntax and argument handling can."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests._components import require

SCRIPT = Path(__file__).resolve().parents[4] / "bench" / "k8s_smoke.sh"


def need_kubectl() -> None:
    require("kubectl", shutil.which("kubectl") is not None,
            "install kubernetes-client (Debian) for `kubectl kustomize`")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_the_script_parses() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_help_lists_the_options() -> None:
    proc = run("--help")
    assert proc.returncode == 0
    for option in ("--context", "--namespace", "--image", "--pvc", "--gateway-service", "--requests"):
        assert option in proc.stdout


def test_it_refuses_to_run_without_a_context() -> None:
    proc = run("--image", "img", "--pvc", "models")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("k8s_smoke: refusing to run without --context: "
                                   "this script changes a real cluster")


@pytest.mark.parametrize(
    ("args", "message"),
    [(("--context", "c", "--pvc", "m"), "--image is required"),
     (("--context", "c", "--image", "i"), "--pvc is required"),
     (("--context", "c", "--image", "i", "--pvc", "m", "--requests", "0"), "--requests must be a number"),
     (("--context", "c", "--image", "i", "--pvc", "m", "--name", "Bad_Name"), "--name must be a DNS label"),
     (("--context", "c", "--image", "i", "--pvc", "m", "--gateway-service", "gw"),
      "--gateway-service must be NAMESPACE/SERVICE"),
     (("--bogus",), "unknown argument: --bogus"),
     (("--context",), "--context needs a value")],
)
def test_bad_arguments_are_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    proc = run(*args)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_an_unknown_context_is_refused_before_anything_runs(tmp_path: Path) -> None:
    need_kubectl()
    config = tmp_path / "kubeconfig"
    config.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    proc = run("--context", "nowhere", "--image", "i", "--pvc", "m", env={"KUBECONFIG": str(config)})
    assert proc.returncode == 2
    assert proc.stderr.strip() == "k8s_smoke: no kube context named nowhere"


def test_the_dry_run_step_gets_a_kustomization_that_builds(tmp_path: Path) -> None:
    """A kubectl stand-in records the calls and answers the cluster-side ones; the export
    is the real `workbench deploy export`, and `kubectl kustomize` (offline, real) must
    build what the script hands to `apply --dry-run=server -k`. The stand-in refuses the
    driver pod's wait, so the script stops there, and its cleanup runs."""
    need_kubectl()
    real = shutil.which("kubectl")
    log = tmp_path / "calls"
    fake = tmp_path / "bin" / "kubectl"
    fake.parent.mkdir()
    fake.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {log}
args=" $* "
if [[ "$args" == *" --dry-run=server -k "* ]]; then
    exec {real} kustomize "${{@: -1}}" | grep '^kind:'
fi
[[ "$args" == *" -f - "* ]] && cat >/dev/null
[[ "$args" == *" wait "* ]] && {{ echo "timed out waiting" >&2; exit 1; }}
[[ "$args" == *" -o yaml"* ]] && echo "apiVersion: v1"
exit 0
""")
    fake.chmod(0o755)
    workbench = f"{sys.executable} -m workbench"
    proc = run("--context", "kind-test", "--image", "registry.example/wb:1", "--pvc", "models",
               "--namespace", "smoke-ns",
               env={"PATH": f"{fake.parent}:{os.environ['PATH']}", "WORKBENCH": workbench,
                    "WORKBENCH_HOME": str(tmp_path / "home")})
    assert proc.returncode != 0  # stopped at the driver pod, as the stand-in wanted
    assert "dry run (server): ok (" in proc.stdout, proc.stdout + proc.stderr
    objects = int(proc.stdout.split("ok (")[1].split()[0])
    assert objects >= 9  # two colours of Deployment, Service, HPA, PDB and the stable Service
    calls = log.read_text().splitlines()
    dry = next(c for c in calls if "--dry-run=server" in c)
    assert dry.startswith("--context kind-test apply --dry-run=server -k ")
    assert any("delete pod wb-smoke-driver" in c for c in calls)  # cleanup ran
