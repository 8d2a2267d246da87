"""``workbench deploy export`` against a live Kubernetes 1.20 API server.

Every format (k8s with each router, argo-rollouts with each router, kserve) is exported by
the CLI into a temporary directory and sent to the real server with
``kubectl apply --dry-run=server -k``: admission, defaulting and validation run, the CRDs
of Gateway API v1, Argo Rollouts and KServe (installed by .ci/k8s-setup.sh) check the
custom resources, nothing is stored.

Kubernetes 1.20 serves ``autoscaling/v2beta2`` and ``policy/v1beta1`` only; the exporter
writes ``autoscaling/v2`` and ``policy/v1`` (1.23+ and 1.21+). So the server's verdict on
the export as written is checked against discovery (refused exactly when it names a group
version the server does not serve), and the export is also proven with those objects
moved to the served pre-release of the same major version (autoscaling/v2beta2,
policy/v1beta1: the HorizontalPodAutoscaler and PodDisruptionBudget fields the export
uses mean the same there).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.k8s_live._cluster import cli_export

if TYPE_CHECKING:
    from tests.k8s_live._cluster import Cluster

#: (format, router): every export the CLI writes (kserve routes itself)
EXPORTS = [("k8s", router) for router in ("gateway", "nginx", "service", "ingress-nginx")] + [
    ("argo-rollouts", router) for router in ("gateway", "nginx", "service", "ingress-nginx")] + [("kserve", None)]


def documents(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(file, object) for every object the kustomization lists."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return [(directory / name, doc) for name in kustomization["resources"]
            for doc in yaml.safe_load_all((directory / name).read_text()) if doc]


def dry_run(cluster: Cluster, directory: Path) -> tuple[bool, str]:
    proc = cluster.kubectl("apply", "--dry-run=server", "-k", str(directory), check=False)
    return proc.returncode == 0, proc.stdout + proc.stderr


def group_versions(cluster: Cluster) -> dict[str, list[str]]:
    """group -> its served versions, most preferred first (discovery)."""
    status, groups = cluster.request("GET", "/apis")
    assert status == 200, groups
    return {group["name"]: [v["version"] for v in group["versions"]] for group in groups["groups"]}


def served_instead(api_version: str, versions: dict[str, list[str]]) -> str:
    """The served pre-release of the same major version: autoscaling/v2 -> autoscaling/v2beta2."""
    group, _, version = api_version.partition("/")
    candidates = [v for v in versions.get(group, []) if v.startswith(version)]
    assert candidates, f"the server serves no {version}* of {group} (it has {versions.get(group)})"
    return f"{group}/{max(candidates, key=_maturity)}"


def _maturity(version: str) -> tuple[int, int]:
    """v2beta2 > v2beta1 > v2alpha1 (a GA version would rank above them all)."""
    match = re.fullmatch(r"v\d+(?:(alpha|beta)(\d+))?", version)
    assert match, version
    stage = {"alpha": 0, "beta": 1, None: 2}[match.group(1)]
    return stage, int(match.group(2) or 0)


@pytest.mark.parametrize(("fmt", "router"), EXPORTS, ids=[f"{f}-{r or 'own'}" for f, r in EXPORTS])
def test_export_as_written_meets_discovery(cluster: Cluster, namespace: str, tmp_path: Path,
                                           fmt: str, router: str | None) -> None:
    """The server takes the export as written exactly when it serves every group version in it."""
    out = cli_export(tmp_path / "export", fmt, router, namespace)
    served = cluster.served_group_versions()
    unserved = sorted({doc["apiVersion"] for _, doc in documents(out)} - served)
    accepted, output = dry_run(cluster, out)
    if unserved:
        assert not accepted, f"the server took {unserved}, which discovery does not list:\n{output}"
        for api_version in unserved:
            assert api_version in output, output
    else:
        assert accepted, output


@pytest.mark.parametrize(("fmt", "router"), EXPORTS, ids=[f"{f}-{r or 'own'}" for f, r in EXPORTS])
def test_export_accepted_with_served_versions(cluster: Cluster, namespace: str, tmp_path: Path,
                                              fmt: str, router: str | None) -> None:
    """With unserved group versions moved to the served ones, every object passes a server dry run."""
    out = cli_export(tmp_path / "export", fmt, router, namespace)
    served = cluster.served_group_versions()
    versions = group_versions(cluster)
    docs = documents(out)
    for path, _ in docs:
        moved = []
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["apiVersion"] not in served:
                doc["apiVersion"] = served_instead(doc["apiVersion"], versions)
            moved.append(doc)
        path.write_text(yaml.safe_dump_all(moved, sort_keys=False))
    accepted, output = dry_run(cluster, out)
    assert accepted, output
    # one line per object, each "(server dry run)"
    lines = [line for line in output.splitlines() if "(server dry run)" in line]
    assert len(lines) == len(docs), output
    names = {f"{doc['kind'].lower()}.{doc['apiVersion'].split('/')[0]}/{doc['metadata']['name']}"
             if "/" in doc["apiVersion"] else f"{doc['kind'].lower()}/{doc['metadata']['name']}"
             for _, doc in docs}
    for name in names:
        assert any(line.startswith(name + " ") for line in lines), (name, output)


def test_export_refused_when_invalid(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    """The dry run is a real check: a Deployment the server must refuse makes it fail."""
    out = cli_export(tmp_path / "export", "k8s", "service", namespace)
    path = out / "deployment-web-blue.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 70000}]
    path.write_text(yaml.safe_dump(doc))
    for name in ("horizontalpodautoscaler-web-blue.yaml", "horizontalpodautoscaler-web-green.yaml",
                 "poddisruptionbudget-web-blue.yaml", "poddisruptionbudget-web-green.yaml"):
        (out / name).unlink()
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    kustomization["resources"] = [r for r in kustomization["resources"] if (out / r).exists()]
    (out / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    accepted, output = dry_run(cluster, out)
    assert not accepted
    assert "containerPort" in output, output


def test_dry_run_stores_nothing(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    out = cli_export(tmp_path / "export", "kserve", None, namespace)
    assert dry_run(cluster, out)[0]
    assert cluster.get("inferenceservices.serving.kserve.io", "-n", namespace)["items"] == []
    shutil.rmtree(out)
