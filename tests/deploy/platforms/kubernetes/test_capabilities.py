"""API versions from discovery or a release: what the backend writes and what an export holds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from typer.testing import CliRunner

from tests.deploy.platforms.kubernetes.conftest import spec
from tests.deploy.platforms.kubernetes.emulator import SERVED_1_20, Emulator
from workbench.cli import app
from workbench.deploy.platforms.kubernetes.capabilities import ApiVersions
from workbench.errors import DeployValueError

if TYPE_CHECKING:
    from workbench.deploy.platforms.kubernetes.client import KubeApi


def test_a_release_serves_its_own_versions() -> None:
    old = ApiVersions.for_release("1.20")
    assert (old.hpa, old.pdb, old.http_route) == ("autoscaling/v2beta2", "policy/v1beta1",
                                                  "gateway.networking.k8s.io/v1")
    assert ApiVersions.for_release("v1.21.4").pdb == "policy/v1"
    new = ApiVersions.for_release("1.30", gateway="gateway.networking.k8s.io/v1beta1")
    assert (new.hpa, new.pdb, new.http_route) == ("autoscaling/v2", "policy/v1",
                                                  "gateway.networking.k8s.io/v1beta1")


@pytest.mark.parametrize(("release", "words"), [("1.18", "too old"), ("two", "looks like 1.20")])
def test_a_bad_release_is_one_sentence(release: str, words: str) -> None:
    with pytest.raises(DeployValueError, match=words):
        ApiVersions.for_release(release)


def test_fit_rewrites_only_the_kinds_with_several_versions() -> None:
    old = ApiVersions.from_served(SERVED_1_20)
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "spec": {"minReplicas": 1}}
    assert old.fit(hpa) == {**hpa, "apiVersion": "autoscaling/v2beta2"}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment"}
    assert old.fit(deployment) is deployment
    assert old.http_route == "gateway.networking.k8s.io/v1beta1"


def test_a_cluster_without_an_hpa_version_is_refused() -> None:
    with pytest.raises(DeployValueError, match="serves none of autoscaling/v2, autoscaling/v2beta2"):
        ApiVersions.from_served({"v1", "apps/v1", "policy/v1"})


def test_discovery_reads_the_served_group_versions_once(api: KubeApi, emulator: Emulator) -> None:
    emulator.served = set(SERVED_1_20)
    assert api.served_versions() == SERVED_1_20
    api.served_versions()
    assert [c.path for c in emulator.calls] == ["/api", "/apis"]


def test_the_backend_writes_the_versions_kubernetes_1_20_serves(make_backend, emulator: Emulator) -> None:
    emulator.served = set(SERVED_1_20)
    backend = make_backend(replicas=2)
    instance = backend.start(spec("blue"))
    writes = [c.path for c in emulator.calls if c.method == "PATCH"]
    assert "/apis/autoscaling/v2beta2/namespaces/ml/horizontalpodautoscalers/web-blue" in writes
    assert "/apis/policy/v1beta1/namespaces/ml/poddisruptionbudgets/web-blue" in writes
    assert not any("autoscaling/v2/" in p or "policy/v1/" in p for p in writes)
    backend.stop(instance)
    deletes = [c.path for c in emulator.calls if c.method == "DELETE" and c.status == 200]
    assert "/apis/autoscaling/v2beta2/namespaces/ml/horizontalpodautoscalers/web-blue" in deletes
    assert emulator.obj("poddisruptionbudgets", "web-blue") is None


def _export(tmp_path: Path, *extra: str) -> dict[str, dict]:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["deploy", "export", "web", "--out", str(out), "--model", "digits",
                                      "--version", "1.0.0", "--candidate", "1.1.0", "--weight", "10",
                                      "--namespace", "ml", *extra])
    assert result.exit_code == 0, result.output
    return {p.name: yaml.safe_load(p.read_text()) for p in out.glob("*.yaml")}


def test_export_for_kubernetes_1_20_offline(tmp_path: Path) -> None:
    files = _export(tmp_path, "--kube-version", "1.20", "--gateway-api", "gateway.networking.k8s.io/v1beta1")
    assert files["horizontalpodautoscaler-web-blue.yaml"]["apiVersion"] == "autoscaling/v2beta2"
    assert files["poddisruptionbudget-web-green.yaml"]["apiVersion"] == "policy/v1beta1"
    assert files["httproute-web.yaml"]["apiVersion"] == "gateway.networking.k8s.io/v1beta1"
    assert files["role-workbench-web.yaml"]["kind"] == "Role"


def test_export_asks_a_clusters_discovery(tmp_path: Path, emulator: Emulator, kubeconfig: Path) -> None:
    emulator.served = set(SERVED_1_20)
    files = _export(tmp_path, "--kubeconfig", str(kubeconfig))
    assert files["horizontalpodautoscaler-web-green.yaml"]["apiVersion"] == "autoscaling/v2beta2"
    assert files["httproute-web.yaml"]["apiVersion"] == "gateway.networking.k8s.io/v1beta1"
    assert not [c for c in emulator.calls if c.method != "GET"]  # nothing applied


def test_export_with_a_release_and_a_cluster_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["deploy", "export", "web", "--out", str(tmp_path / "o"), "--model", "d",
                                      "--version", "1.0.0", "--kube-version", "1.20", "--kubeconfig", "x"])
    assert result.exit_code != 0 and "not both" in result.output
