"""A live Kubernetes 1.20 cluster for the tests: ``.ci/k8s-setup.sh`` starts it.

``WORKBENCH_TEST_KUBECONFIG`` (printed by the setup script) names the admin kubeconfig.
Without it, or when its API server does not answer, the tests skip; under ``CI=true``
they fail (tests/_components.py). The cluster is real: etcd, kube-apiserver (TLS, token
authentication, Node and RBAC authorization), controller-manager, scheduler, and the
real kubelet 1.20 (dockershim on the private dockerd of .ci/docker-setup.sh); no CNI
plugin runs, so pods use ``hostNetwork``. Each test works in a namespace of its own,
deleted afterwards.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._components import require
from tests.k8s_live._cluster import Cluster, load, wait_until


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    """The live cluster (skips, or fails under CI=true, when there is none)."""
    path = os.environ.get("WORKBENCH_TEST_KUBECONFIG", "")
    require("a Kubernetes cluster", bool(path) and Path(path).is_file(),
            "WORKBENCH_TEST_KUBECONFIG is not set to a kubeconfig (run .ci/k8s-setup.sh)")
    require("kubectl", shutil.which("kubectl") is not None, "apt-get install kubernetes-client")
    live = load(Path(path))
    try:
        status, _ = live.request("GET", "/readyz")
    except OSError as exc:
        status = 0
        reason = str(exc)
    else:
        reason = f"/readyz answered {status}"
    require("a Kubernetes cluster", status == 200, f"the API server at {live.server} is not ready ({reason})")
    return live


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace, deleted (without waiting) after the test."""
    name = f"wb-test-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    # the service account controller makes `default` shortly after; pods need it
    wait_until(lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
               30, f"the default service account of {name}")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
