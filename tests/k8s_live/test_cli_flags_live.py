"""`workbench deploy create --backend kubernetes` takes the options of clusters without a pod
network from the command line: --host-network, --models-path and --image-pull-policy reach
the backend, which checks them against the live cluster's client before anything is applied."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from workbench.cli import app

if TYPE_CHECKING:
    from tests.k8s_live._cluster import Cluster

pytest.importorskip("kubernetes")


def create(cluster: Cluster, namespace: str, repo: Path, *extra: str) -> tuple[int, str]:
    args = ["deploy", "create", "web", "--model", "digits", "--version", "1.0.0",
            "--backend", "kubernetes", "--kubeconfig", str(cluster.kubeconfig),
            "--namespace", namespace, "--image", "workbench-test:latest", "--repo", str(repo), *extra]
    result = CliRunner().invoke(app, args)
    said = f"{result.output} {result.exception or ''}"  # a WorkbenchError: main() prints it
    return result.exit_code, " ".join(said.split())


@pytest.mark.parametrize(("extra", "said"), [
    (["--host-network", "--models-path", "models"],
     "the models path must be an absolute directory on the nodes, not 'models'"),
    (["--host-network", "--image-pull-policy", "Sometimes"],
     "image pull policy must be Always, IfNotPresent or Never, not 'Sometimes'"),
])
def test_the_flags_reach_the_backend_and_a_bad_value_starts_nothing(
        cluster: Cluster, namespace: str, tmp_path: Path, extra: list[str], said: str) -> None:
    code, output = create(cluster, namespace, tmp_path / "repo", *extra)
    assert code != 0 and said in output, output
    assert cluster.get("deployments", "-n", namespace)["items"] == []
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())
