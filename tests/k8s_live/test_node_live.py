"""Pods on the live cluster's node: the real kubelet 1.20 running the test image.

The node is the kubelet built from the same Kubernetes 1.20.2 tree as the control plane
(not a fake: it runs the containers and their probes). It uses dockershim on the private
dockerd of .ci/docker-setup.sh, so WORKBENCH_TEST_IMAGE, built there, runs without a
registry (``imagePullPolicy: Never``). No CNI plugin runs, so the pods use
``hostNetwork``: their IP is the node's (see .ci/k8s-setup.sh), which they learn from the
downward API and listen on.

The Deployment's readiness probe is an HTTP GET the kubelet sends to a file server in the
container (404 until the test makes the file, then 200); its liveness probe an exec the
kubelet runs in the container. So Ready, the replacement of a deleted pod by its
ReplicaSet and the restart of a container that fails liveness are all the kubelet's and
the controllers' doing.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests._components import require
from tests.k8s_live._cluster import wait_until

if TYPE_CHECKING:
    from tests.k8s_live._cluster import Cluster

SERVER = "import http.server, functools, os, sys; os.makedirs('/tmp/www', exist_ok=True); " \
         "http.server.ThreadingHTTPServer((os.environ['POD_IP'], int(sys.argv[1])), " \
         "functools.partial(http.server.SimpleHTTPRequestHandler, directory='/tmp/www')).serve_forever()"


@pytest.fixture(scope="module")
def image() -> str:
    value = os.environ.get("WORKBENCH_TEST_IMAGE", "")
    require("the test image", bool(value), "WORKBENCH_TEST_IMAGE is not set (source /tmp/workbench-docker.env)")
    return value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def deployment(name: str, image: str, port: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "hostNetwork": True, "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "web", "image": image, "imagePullPolicy": "Never",
                    "command": ["python", "-c", SERVER, str(port)],
                    "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": port}, "periodSeconds": 1,
                                       "failureThreshold": 1},
                    "livenessProbe": {"exec": {"command": ["sh", "-c", "test ! -e /tmp/sick"]},
                                      "periodSeconds": 1, "failureThreshold": 2},
                }],
            }},
        },
    }


def pods(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get("pods", "-n", namespace, "-l", f"app={name}")["items"]
    return [pod for pod in items if not pod["metadata"].get("deletionTimestamp")]


def condition(pod: dict[str, Any], kind: str) -> str:
    for cond in pod.get("status", {}).get("conditions", []):
        if cond["type"] == kind:
            return str(cond["status"])
    return "Unknown"


def running_pod(cluster: Cluster, namespace: str, name: str, other_than: str = "") -> dict[str, Any]:
    """The one live pod of the Deployment whose container runs (and is not ``other_than``)."""
    def find() -> dict[str, Any] | None:
        for pod in pods(cluster, namespace, name):
            statuses = pod.get("status", {}).get("containerStatuses", [])
            if pod["metadata"]["uid"] != other_than and statuses and "running" in statuses[0]["state"]:
                return pod
        return None

    found: dict[str, Any] = wait_until(find, 120, f"a running pod of {name}")
    return found


def exec_in(cluster: Cluster, namespace: str, pod: str, *command: str) -> None:
    cluster.kubectl("exec", "-n", namespace, pod, "--", *command)


def ready(cluster: Cluster, namespace: str, pod: str) -> bool:
    return condition(cluster.get("pod", pod, "-n", namespace), "Ready") == "True"


def test_deployment_ready_through_probes_and_pod_replaced(cluster: Cluster, namespace: str, image: str) -> None:
    name, port = "probe", free_port()
    cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(deployment(name, image, port)))
    first = running_pod(cluster, namespace, name)
    pod = first["metadata"]["name"]
    assert first["spec"]["nodeName"] == os.environ.get("WORKBENCH_TEST_K8S_NODE", first["spec"]["nodeName"])
    node = cluster.get("node", first["spec"]["nodeName"])
    (node_ip,) = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
    assert first["status"]["podIP"] == node_ip
    # the server answers, but /ready is 404: the kubelet's HTTP probe keeps the pod out of Ready
    wait_until(lambda: cluster.kubectl("exec", "-n", namespace, pod, "--", "python", "-c",
                                       f"import urllib.request; urllib.request.urlopen('http://{node_ip}:{port}/')",
                                       check=False).returncode == 0, 60, "the file server in the pod")
    for _ in range(3):
        assert not ready(cluster, namespace, pod)
        time.sleep(1)
    exec_in(cluster, namespace, pod, "touch", "/tmp/www/ready")
    wait_until(lambda: ready(cluster, namespace, pod), 60, f"{pod} to become Ready")
    wait_until(lambda: cluster.get("deployment", name, "-n", namespace)["status"].get("availableReplicas") == 1,
               60, "the Deployment to be available")

    # a deleted pod is replaced by its ReplicaSet, and the new one goes through the probe too
    cluster.kubectl("delete", "pod", "-n", namespace, pod, "--wait=false")
    second = running_pod(cluster, namespace, name, other_than=first["metadata"]["uid"])
    replacement = second["metadata"]["name"]
    assert replacement != pod
    assert second["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    assert second["metadata"]["ownerReferences"][0]["name"] == first["metadata"]["ownerReferences"][0]["name"]
    wait_until(lambda: cluster.kubectl("exec", "-n", namespace, replacement, "--", "touch", "/tmp/www/ready",
                                       check=False).returncode == 0, 60, f"exec into {replacement}")
    wait_until(lambda: ready(cluster, namespace, replacement), 60, f"{replacement} to become Ready")

    # liveness: once the exec probe fails twice, the kubelet restarts the container
    exec_in(cluster, namespace, replacement, "touch", "/tmp/sick")

    def restarted() -> bool:
        statuses = cluster.get("pod", replacement, "-n", namespace)["status"]["containerStatuses"]
        return int(statuses[0]["restartCount"]) >= 1

    wait_until(restarted, 90, f"the kubelet to restart {replacement}'s container")
    # the new container has no /tmp/www/ready: the pod leaves Ready
    wait_until(lambda: not ready(cluster, namespace, replacement), 60, f"{replacement} to leave Ready")
