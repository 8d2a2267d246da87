"""RBAC on the live API server: a ServiceAccount bound to a least-privilege Role.

The server runs ``--authorization-mode Node,RBAC``. The account's token comes from the
TokenRequest API (``serviceaccounts/<name>/token``, a bound, expiring JWT signed with the
cluster's service account key), the way a pod's projected token does; every request
below is authenticated with it over TLS verified against the cluster's CA.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.k8s_live._cluster import Cluster


def setup_reader(cluster: Cluster, namespace: str) -> str:
    """A ServiceAccount that may get and list pods in ``namespace``, nothing else; its token."""
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "pod-reader"},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "reader"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
         "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]},
    ]
    for obj in objects:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(obj))
    status, answer = cluster.request(
        "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/reader/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}})
    assert status == 201, answer
    token: str = answer["status"]["token"]
    return token


def test_service_account_gets_only_what_its_role_grants(cluster: Cluster, namespace: str) -> None:
    token = setup_reader(cluster, namespace)
    user = f"system:serviceaccount:{namespace}:reader"

    status, answer = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods", token=token)
    assert status == 200, answer
    assert answer["kind"] == "PodList"

    refused = [
        ("GET", f"/api/v1/namespaces/{namespace}/secrets", None),
        ("GET", f"/api/v1/namespaces/{namespace}/configmaps", None),
        ("GET", "/api/v1/namespaces/kube-system/pods", None),
        ("GET", "/api/v1/nodes", None),
        ("DELETE", f"/api/v1/namespaces/{namespace}/pods/anything", None),
        ("POST", f"/api/v1/namespaces/{namespace}/pods",
         {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "intruder"},
          "spec": {"containers": [{"name": "c", "image": "none"}]}}),
        ("POST", f"/apis/apps/v1/namespaces/{namespace}/deployments",
         {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "intruder"}}),
        ("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
         {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "escalate"},
          "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
          "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]}),
    ]
    for method, path, body in refused:
        status, answer = cluster.request(method, path, body, token=token)
        assert status == 403, (method, path, status, answer)
        assert answer["reason"] == "Forbidden"
        assert user in answer["message"], answer["message"]

    # the account's own view agrees (SelfSubjectAccessReview)
    status, review = cluster.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"namespace": namespace, "verb": "watch", "resource": "pods"}}}, token=token)
    assert status == 201, review
    assert review["status"]["allowed"] is False


def test_bad_token_is_unauthenticated(cluster: Cluster, namespace: str) -> None:
    token = setup_reader(cluster, namespace)
    status, answer = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods", token=token[:-4] + "AAAA")
    assert status == 401, answer
    # a deleted account's token stops working (the token is bound to the ServiceAccount's uid)
    cluster.kubectl("delete", "serviceaccount", "reader", "-n", namespace)
    status, answer = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods", token=token)
    assert status == 401, answer
