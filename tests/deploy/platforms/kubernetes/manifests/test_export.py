"""``workbench deploy export``: golden kustomize directories, the overwrite rules, the CLI.

Golden directories live in tests/deploy/platforms/kubernetes/manifests/golden/<case>/; after an intended change to
the manifests, `UPDATE_GOLDEN=1 pytest tests/deploy/platforms/kubernetes/manifests/test_export.py` rewrites them
(review the diff before committing it).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from workbench.cli import app
from workbench.deploy.platforms.kubernetes.export import FORMATS, MARKER, ExportSource, export, render
from workbench.deploy.platforms.kubernetes.options import KubernetesOptions
from workbench.deploy.records import InstanceRecord
from workbench.deploy.rollout.phases import Phase, Rollout
from workbench.deploy.state import DeploymentState, StateStore
from workbench.errors import DeployValueError

GOLDEN = Path(__file__).parent / "golden"
CANARY = ExportSource.from_versions("digits", "digits", "1.0.0", "1.1.0", 25)
GPU = KubernetesOptions(namespace="ml", image="registry.example/paddle-workbench:1.4", gpus=1,
                 hostnames=("digits.example.com",), gateway_namespace="infra")

#: case -> (source, options, format)
GOLDEN_CASES: dict[str, tuple[ExportSource, KubernetesOptions, str]] = {
    "k8s-gateway-canary": (CANARY, GPU, "k8s"),
    "k8s-nginx-canary": (CANARY, KubernetesOptions(router="nginx"), "k8s"),
    "k8s-service-stable": (ExportSource.from_versions("digits", "digits", "1.0.0"),
                           KubernetesOptions(router="service", deep_health=True), "k8s"),
    "argo-rollouts-gateway": (CANARY, GPU, "argo-rollouts"),
    "argo-rollouts-service": (CANARY, KubernetesOptions(router="service"), "argo-rollouts"),
    "kserve-canary": (CANARY, GPU, "kserve"),
}


def tree(root: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(root.iterdir()) if p.is_file()}


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_export_matches_its_golden_directory(case: str, tmp_path: Path) -> None:
    source, opts, fmt = GOLDEN_CASES[case]
    export(source, opts, fmt, tmp_path / case)
    golden = GOLDEN / case
    if os.environ.get("UPDATE_GOLDEN") == "1":
        shutil.rmtree(golden, ignore_errors=True)
        shutil.copytree(tmp_path / case, golden)
    assert golden.is_dir(), f"missing golden directory {golden}; run with UPDATE_GOLDEN=1"
    assert tree(tmp_path / case) == tree(golden)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_kustomization_lists_every_object_file_in_apply_order(fmt: str, tmp_path: Path) -> None:
    written = export(CANARY, KubernetesOptions(), fmt, tmp_path)
    kustomization = yaml.safe_load((tmp_path / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["resources"] == [p.name for p in written if p.name != "kustomization.yaml"]
    objects = [yaml.safe_load((tmp_path / f).read_text()) for f in kustomization["resources"]]
    assert objects == render(CANARY, KubernetesOptions(), fmt)


def test_argo_rollout_serves_the_candidate_in_5_25_100_steps_judged_by_the_analysis() -> None:
    objects = {o["kind"]: o for o in render(CANARY, KubernetesOptions(), "argo-rollouts")}
    rollout = objects["Rollout"]
    args = rollout["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--version") + 1] == "1.1.0"
    canary = rollout["spec"]["strategy"]["canary"]
    assert [s["setWeight"] for s in canary["steps"] if "setWeight" in s] == [5, 25, 100]
    assert canary["analysis"]["templates"] == [{"templateName": objects["AnalysisTemplate"]["metadata"]["name"]}]
    queries = " ".join(m["provider"]["prometheus"]["query"] for m in objects["AnalysisTemplate"]["spec"]["metrics"])
    assert "workbench_requests_total" in queries and "workbench_request_duration_seconds_bucket" in queries
    assert objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["kind"] == "Rollout"
    services = [o["metadata"]["name"] for o in render(CANARY, KubernetesOptions(), "argo-rollouts") if o["kind"] == "Service"]
    assert {canary["stableService"], canary["canaryService"]} == set(services)


def test_kserve_serves_the_candidate_with_its_traffic_percent() -> None:
    (isvc,) = render(CANARY, GPU, "kserve")
    predictor = isvc["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 25
    (container,) = predictor["containers"]
    assert container["image"] == GPU.image
    assert container["args"][container["args"].index("--version") + 1] == "1.1.0"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    (stable,) = render(ExportSource.from_versions("digits", "digits", "1.0.0"), GPU, "kserve")
    assert "canaryTrafficPercent" not in stable["spec"]["predictor"]


def test_a_directory_that_is_not_an_export_is_refused_and_left_alone(tmp_path: Path) -> None:
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    with pytest.raises(DeployValueError, match="not empty"):
        export(CANARY, KubernetesOptions(), "k8s", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert mine.read_text() == "mine"


def test_a_previous_export_is_replaced_and_a_users_own_files_stay(tmp_path: Path) -> None:
    export(CANARY, KubernetesOptions(router="nginx"), "k8s", tmp_path)
    assert (tmp_path / "configmap-digits-router.yaml").exists()
    (tmp_path / "patch.yaml").write_text("# mine\n")
    export(CANARY, KubernetesOptions(router="gateway"), "k8s", tmp_path)
    assert not (tmp_path / "configmap-digits-router.yaml").exists()  # stale file of the last export
    assert (tmp_path / "httproute-digits.yaml").exists()
    assert (tmp_path / "patch.yaml").read_text() == "# mine\n"
    assert json.loads((tmp_path / MARKER).read_text())["format"] == "k8s"


def make_state(home: Path) -> None:
    records = {
        color: InstanceRecord(color=color, version=version, host="127.0.0.1", port=port, backend="process",
                              ref="1", started_at=1.0)
        for color, version, port in (("blue", "1.0.0", 9001), ("green", "1.1.0", 9002))
    }
    state = DeploymentState(name="web", model="digits", repo="/repo", port=8080, instances=records,
                            rollout=Rollout(phase=Phase.CANARY, stable="blue", weight=25, step=2))
    with StateStore(home).transaction("web") as txn:
        txn.save(state)


def test_cli_exports_a_local_deployment_with_its_versions_and_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    make_state(tmp_path / "home")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["deploy", "export", "web", "--out", str(out), "--namespace", "ml",
                                      "--gpus", "1"])
    assert result.exit_code == 0, result.output
    assert "kubectl apply -k" in result.output
    route = yaml.safe_load((out / "httproute-web.yaml").read_text())
    weights = {r["name"]: r["weight"] for r in route["spec"]["rules"][-1]["backendRefs"]}
    assert weights == {"web-blue": 75, "web-green": 25}
    green = yaml.safe_load((out / "deployment-web-green.yaml").read_text())
    assert green["metadata"]["namespace"] == "ml"
    assert green["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_cli_exports_without_a_local_deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["deploy", "export", "web", "--out", str(tmp_path / "out"),
                                      "--format", "kserve", "--model", "digits", "--version", "1.0.0",
                                      "--candidate", "1.1.0", "--weight", "5"])
    assert result.exit_code == 0, result.output
    isvc = yaml.safe_load((tmp_path / "out" / "inferenceservice-web.yaml").read_text())
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 5


@pytest.mark.parametrize(("argv", "message"), [
    (["--format", "helm"], "--format"),
    (["--model", "digits"], "--model and --version"),
    (["--namespace", "ML", "--model", "digits", "--version", "1.0.0"], "invalid Kubernetes namespace"),
    ([], "no deployment named 'web'"),
    (["--model", "digits", "--version", "1.0.0", "--candidate", "1.0.0"], "is the stable --version"),
    (["--model", "digits", "--version", "1.0.0", "--weight", "5"], "--weight needs a --candidate"),
    (["--model", "digits", "--version", "1.0.0", "--candidate", "1.1.0", "--weight", "150"],
     "--weight"),
    (["--format", "kserve", "--router", "nginx", "--model", "digits", "--version", "1.0.0"],
     "--router does not apply to --format kserve"),
])
def test_cli_mistakes_are_one_sentence(argv: list[str], message: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    from workbench.cli import main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        main(["deploy", "export", "web", "--out", str(out), *argv])
    assert exited.value.code != 0
    assert not out.exists()
    err = " ".join(capsys.readouterr().err.split())
    assert message in err and "Traceback" not in err


def test_cli_refuses_a_foreign_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.yaml").write_text("x: 1\n")
    from workbench.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["deploy", "export", "web", "--out", str(tmp_path / "out"), "--model", "digits", "--version", "1.0.0"])
    assert exited.value.code == 2
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.yaml"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "digits", "--version", "abc"], "'abc' is not a semantic version"),
    (["--model", "digits", "--version", "1.0.0", "--candidate", "next"], "'next' is not a semantic version"),
    (["--model", "dig its", "--version", "1.0.0"], "invalid model name 'dig its'"),
])
def test_cli_refuses_a_model_or_version_the_repository_could_never_hold(
        argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    from workbench.cli import main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        main(["deploy", "export", "web", "--out", str(out), *argv])
    assert exited.value.code == 2
    assert not out.exists()
    err = " ".join(capsys.readouterr().err.split())
    assert message in err and "Traceback" not in err


def test_cli_an_unwritable_directory_is_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    (tmp_path / "a-file").write_text("x\n")
    from workbench.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["deploy", "export", "web", "--out", str(tmp_path / "a-file" / "out"),
              "--model", "digits", "--version", "1.0.0"])
    assert exited.value.code == 9
    err = " ".join(capsys.readouterr().err.split())
    assert "cannot write the export to" in err and "Traceback" not in err


def test_a_failed_write_removes_the_directories_it_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import workbench.deploy.platforms.kubernetes.export as export_module

    calls = []

    def full_disk(path: Path, text: str, *, mode: int = 0o600) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        Path(path).write_text(text)

    monkeypatch.setattr(export_module, "write_atomic", full_disk)
    source = ExportSource.from_versions("web", "digits", "1.0.0")
    with pytest.raises(export_module.DeployError, match="No space left on device"):
        export(source, KubernetesOptions(), "k8s", tmp_path / "new" / "out")
    assert list(tmp_path.iterdir()) == []
