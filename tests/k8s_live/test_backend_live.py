"""The Kubernetes backend and router against the live Kubernetes 1.20 API server.

Each test runs the backend as the least-privilege ServiceAccount that
``workbench deploy export`` ships (:mod:`workbench.deploy.platforms.kubernetes.rbac`):
the export's ServiceAccount, Role and RoleBinding are applied by the admin, and the
backend connects with a kubeconfig holding that account's token (TokenRequest API).

What runs where. The control plane is real: discovery, server-side apply and its
conflicts, watches, RBAC, the CRD schema of the HTTPRoute, the Deployment controller
and the scheduler. The node is the real kubelet, with no CNI plugin. The colours here
are Deployments made by the test with the backend's names, labels and annotations, whose
pod is a small file server on the host network with an HTTP readiness probe that the
kubelet runs: their readiness, the backend's watch of it, ``deploy status``'s readiness
and the Service-selector switch and rollback are real; no traffic is sent to them. The
backend's own serving pods (``workbench serve`` of a real model, ``host_network`` and
``models_path``) run under load in tests/k8s_live/test_serving_live.py.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests._components import require
from tests.k8s_live._cluster import wait_until
from workbench.deploy.backend import Instance, InstanceSpec
from workbench.deploy.platforms.kubernetes import options
from workbench.deploy.platforms.kubernetes.backend import KubernetesBackend
from workbench.deploy.platforms.kubernetes.client import ApplyConflict, ClusterError
from workbench.deploy.platforms.kubernetes.rbac import account_name, rbac_objects
from workbench.deploy.platforms.kubernetes.router import KubernetesRouter
from workbench.deploy.routing import RoutingTable, Upstream
from workbench.errors import BackendError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.k8s_live._cluster import Cluster

pytest.importorskip("kubernetes")

NAME = "web"
SERVER = ("import http.server, functools, os, sys; os.makedirs('/tmp/www', exist_ok=True); "
          "open('/tmp/www/ready', 'w').close() if sys.argv[2] == 'ready' else None; "
          "http.server.ThreadingHTTPServer((os.environ['POD_IP'], int(sys.argv[1])), "
          "functools.partial(http.server.SimpleHTTPRequestHandler, directory='/tmp/www')).serve_forever()")


@pytest.fixture(scope="module")
def image() -> str:
    value = os.environ.get("WORKBENCH_TEST_IMAGE", "")
    require("the test image", bool(value), "WORKBENCH_TEST_IMAGE is not set (source /tmp/workbench-docker.env)")
    return value


def account_kubeconfig(cluster: Cluster, namespace: str, path: Path) -> Path:
    """Apply the export's ServiceAccount, Role and RoleBinding as the admin; a kubeconfig
    holding the account's token (a bound, expiring token from the TokenRequest API)."""
    for obj in rbac_objects(NAME, namespace):
        cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(obj))
    status, answer = cluster.request(
        "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{account_name(NAME)}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 900}})
    assert status == 201, answer
    ca = base64.b64encode(cluster.ca_file.read_bytes()).decode()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": [{"name": "live", "cluster": {"server": cluster.server, "certificate-authority-data": ca}}],
        "users": [{"name": "operator", "user": {"token": answer["status"]["token"]}}],
        "contexts": [{"name": "operator", "context": {"cluster": "live", "user": "operator",
                                                      "namespace": namespace}}],
    }))
    return path


@pytest.fixture
def backend(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[KubernetesBackend]:
    """The backend in ``namespace`` as the export's least-privilege account."""
    config = account_kubeconfig(cluster, namespace, tmp_path / "operator.kubeconfig")
    made = KubernetesBackend(kubeconfig=str(config), image="paddle-workbench:live-test", ready_timeout=120.0,
                             scale_down_delay=600.0, gateway="workbench")
    yield made
    made.api.close()


def spec(color: str, version: str = "1.0.0") -> InstanceSpec:
    return InstanceSpec(deployment=NAME, color=color, model="digits", version=version,  # type: ignore[arg-type]
                        repo="/models", port=8000)


def colour(color: str, version: str, image: str, port: int, *, ready: bool = True) -> dict[str, Any]:
    """A colour Deployment with the backend's name, labels and annotations, whose pod is a
    file server on the host network, Ready through the kubelet's HTTP probe."""
    pod_labels = {options.DEPLOYMENT_LABEL: NAME, options.ROLE_LABEL: "serve", options.COLOR_LABEL: color}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": f"{NAME}-{color}", "labels": {**pod_labels, "app.kubernetes.io/managed-by": "workbench"},
                     "annotations": {options.MODEL_ANNOTATION: "digits", options.VERSION_ANNOTATION: version}},
        "spec": {
            "replicas": 1, "selector": {"matchLabels": pod_labels},
            "template": {"metadata": {"labels": pod_labels}, "spec": {
                "hostNetwork": True, "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "serve", "image": image, "imagePullPolicy": "Never",
                    "command": ["python", "-c", SERVER, str(port), "ready" if ready else "never"],
                    "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    # a slow answer on a busy node is not a readiness change (it would update
                    # the Deployment's status, which the tests compare)
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": port}, "periodSeconds": 1,
                                       "timeoutSeconds": 5, "failureThreshold": 3},
                }],
            }},
        },
    }


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def table(green: int, colors: tuple[str, ...] = ("blue", "green")) -> RoutingTable:
    ups = tuple(Upstream(color=c, host=f"{NAME}-{c}.svc", port=8000, version="1") for c in colors)  # type: ignore[arg-type]
    return RoutingTable(deployment=NAME, listen_port=8000, listen_host=f"{NAME}.svc", upstreams=ups,
                        green_weight=green)


def selector_of(cluster: Cluster, namespace: str) -> str:
    return str(cluster.get("service", NAME, "-n", namespace)["spec"]["selector"][options.COLOR_LABEL])


def test_the_backend_sees_kubernetes_1_20_through_discovery(cluster: Cluster, backend: KubernetesBackend) -> None:
    status, version = cluster.request("GET", "/version")
    assert status == 200 and version["gitVersion"].startswith("v1.20."), version
    versions = backend.versions
    assert (versions.hpa, versions.pdb) == ("autoscaling/v2beta2", "policy/v1beta1")
    assert versions.http_route == "gateway.networking.k8s.io/v1"  # the CRD installed serves v1


def test_colour_objects_are_applied_by_the_workbench_field_manager_and_conflicts_decided(
        cluster: Cluster, namespace: str, backend: KubernetesBackend) -> None:
    objects = [o for o in backend.objects(spec("blue"), replicas=1) if o["kind"] != "Secret"]
    for obj in objects:
        backend.api.apply(obj)  # the real server validates the 1.20 versions of the HPA and PDB
    hpa = cluster.get("hpa.v2beta2.autoscaling", f"{NAME}-blue", "-n", namespace)
    assert hpa["spec"]["minReplicas"] == 1
    cluster.get("poddisruptionbudget", f"{NAME}-blue", "-n", namespace)
    status, deployment = cluster.request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{NAME}-blue")
    assert status == 200, deployment
    managers = {(f["manager"], f["operation"]) for f in deployment["metadata"]["managedFields"]}
    assert ("workbench", "Apply") in managers

    # someone scales the workbench's Deployment: the next apply takes .spec.replicas back
    cluster.kubectl("scale", "deployment", f"{NAME}-blue", "-n", namespace, "--replicas", "3")
    backend.api.apply(next(o for o in objects if o["kind"] == "Deployment"))
    assert cluster.get("deployment", f"{NAME}-blue", "-n", namespace)["spec"]["replicas"] == 1

    # an object of the same name that another tool made is left alone, with a clear error
    theirs = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"{NAME}-green"},
              "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "theirs"}},
                       "template": {"metadata": {"labels": {"app": "theirs"}},
                                    "spec": {"containers": [{"name": "c", "image": "theirs:1"}]}}}}
    cluster.kubectl("apply", "--server-side", "--field-manager", "helm", "-n", namespace, "-f", "-",
                    stdin=json.dumps(theirs))
    with pytest.raises(BackendError) as info:
        backend.start(spec("green"))
    assert isinstance(info.value.__cause__, ApplyConflict)
    assert "it was not made by the workbench" in str(info.value) and "helm" in str(info.value)
    assert cluster.get("deployment", f"{NAME}-green", "-n", namespace)["spec"]["replicas"] == 5


def test_rbac_refuses_what_the_role_does_not_grant(cluster: Cluster, namespace: str,
                                                   backend: KubernetesBackend, tmp_path: Path) -> None:
    backend.find(NAME)  # what the role grants works
    with pytest.raises(ClusterError) as info:
        backend.api.get("v1", "Secret", "someone-elses")
    assert info.value.status == 403
    assert str(info.value).startswith("the Kubernetes API refused to read Secret")
    assert "lacks the RBAC permission" in str(info.value)
    with pytest.raises(ClusterError, match="forbidden"):
        backend.api.list("v1", "Secret")
    other = KubernetesBackend(kubeconfig=backend.options.kubeconfig, namespace="kube-system",
                              image="paddle-workbench:live-test")
    with pytest.raises(BackendError, match=r"refused to read Deployment objects in namespace kube-system: forbidden .*cannot list"):
        other.find(NAME)
    other.api.close()


def test_blue_green_and_canary_on_live_deployments(cluster: Cluster, namespace: str, image: str,
                                                   backend: KubernetesBackend) -> None:
    for color, version in (("blue", "1.0.0"), ("green", "1.1.0")):
        cluster.kubectl("apply", "-n", namespace, "-f", "-",
                        stdin=json.dumps(colour(color, version, image, free_port())))
    started = time.monotonic()
    backend.wait_ready(f"{NAME}-blue", 120.0)  # a watch, until the kubelet's probe passes
    blue = Instance(spec=spec("blue"), backend="kubernetes", ref=f"{namespace}/{NAME}-blue")
    assert backend.readiness(blue) == (True, True, "")
    assert time.monotonic() - started < 120
    found = {i.spec.color: i.spec.version for i in backend.find(NAME)}
    assert found == {"blue": "1.0.0", "green": "1.1.0"}

    router = KubernetesRouter(NAME, backend, background=False)
    router.apply(table(0, ("blue",)))
    assert selector_of(cluster, namespace) == "blue"
    router.apply(table(10))  # canary: the HTTPRoute (gateway.networking.k8s.io/v1, the real CRD schema)
    route = cluster.get("httproute", NAME, "-n", namespace)
    refs = {r["name"]: r["weight"] for r in route["spec"]["rules"][-1]["backendRefs"]}
    assert refs == {f"{NAME}-blue": 90, f"{NAME}-green": 10}
    router.apply(table(100))  # switch: green waited for (Ready), then the selector flipped
    assert selector_of(cluster, namespace) == "green"
    router.apply(table(0))  # rollback
    assert selector_of(cluster, namespace) == "blue"
    route = cluster.get("httproute", NAME, "-n", namespace)
    refs = {r["name"]: r["weight"] for r in route["spec"]["rules"][-1]["backendRefs"]}
    assert refs.get(f"{NAME}-blue") == 100 and refs.get(f"{NAME}-green", 0) == 0


def test_a_candidate_that_never_becomes_ready_leaves_stable_untouched(
        cluster: Cluster, namespace: str, image: str, backend: KubernetesBackend) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    stdin=json.dumps(colour("blue", "1.0.0", image, free_port())))
    backend.wait_ready(f"{NAME}-blue", 120.0)
    KubernetesRouter(NAME, backend, background=False).apply(table(0, ("blue",)))
    before = cluster.get("deployment", f"{NAME}-blue", "-n", namespace)["metadata"]["resourceVersion"]
    service_before = cluster.get("service", NAME, "-n", namespace)["metadata"]["resourceVersion"]

    # the backend's own green: its pod needs the model repository's claim, which does not
    # exist here, so the real scheduler never places it
    with pytest.raises(BackendError) as info:
        backend.start(spec("green", "1.1.0"))
    assert str(info.value).startswith(f"{NAME}-green did not become ready: pod {NAME}-green-")
    assert "Unschedulable" in str(info.value)
    # deleted in the foreground: gone once the garbage collector has removed its pods
    wait_until(lambda: cluster.kubectl("get", "deployment", f"{NAME}-green", "-n", namespace,
                                       check=False).returncode != 0, 60, "the failed candidate to be deleted")
    for kind in ("service", "hpa.v2beta2.autoscaling", "poddisruptionbudget"):
        assert cluster.kubectl("get", kind, f"{NAME}-green", "-n", namespace, check=False).returncode != 0
    assert cluster.get("deployment", f"{NAME}-blue", "-n", namespace)["metadata"]["resourceVersion"] == before
    assert cluster.get("service", NAME, "-n", namespace)["metadata"]["resourceVersion"] == service_before
    assert selector_of(cluster, namespace) == "blue"

    # a candidate whose readiness probe never passes: the total deadline ends the watch
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    stdin=json.dumps(colour("green", "1.1.0", image, free_port(), ready=False)))
    started = time.monotonic()
    with pytest.raises(BackendError, match=r"did not become ready: not ready within 8s"):
        backend.wait_ready(f"{NAME}-green", 8.0)
    assert time.monotonic() - started < 20
    assert selector_of(cluster, namespace) == "blue"


@pytest.mark.parametrize("fit", ["--kube-version=1.20", "--kubeconfig"])
def test_an_export_fitted_to_the_cluster_is_taken_as_written(cluster: Cluster, namespace: str, tmp_path: Path,
                                                             fit: str) -> None:
    """Offline for 1.20, or from the live discovery: the server takes every object unchanged."""
    from typer.testing import CliRunner

    from workbench.cli import app

    out = tmp_path / "export"
    args = ["deploy", "export", NAME, "--out", str(out), "--model", "digits", "--version", "1.0.0",
            "--candidate", "1.1.0", "--weight", "10", "--namespace", namespace, "--hostname", "digits.example.com"]
    args += [fit] if fit.startswith("--kube-version") else [fit, str(cluster.kubeconfig)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    kinds = {yaml.safe_load(p.read_text())["apiVersion"] for p in out.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert {"autoscaling/v2beta2", "policy/v1beta1", "rbac.authorization.k8s.io/v1"} <= kinds
    assert not {"autoscaling/v2", "policy/v1"} & kinds
    applied = cluster.kubectl("apply", "--dry-run=server", "-k", str(out), check=False)
    assert applied.returncode == 0, applied.stderr
    assert "role.rbac.authorization.k8s.io/workbench-web created (server dry run)" in applied.stdout
    assert "horizontalpodautoscaler.autoscaling/web-green created (server dry run)" in applied.stdout
