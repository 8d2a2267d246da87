"""The least privilege the Kubernetes backend needs: a ServiceAccount, a Role, a RoleBinding.

``workbench deploy export --format k8s`` ships them (``serviceaccount-``, ``role-`` and
``rolebinding-workbench-<name>.yaml``), so whatever runs ``workbench deploy`` against
the cluster (a CI job, a pod, a person with that account's token) can do what the
backend, the router and the state store do for deployment ``name`` in its namespace,
and nothing else:

- its Deployments (watched while they start), Services, HPAs, PDBs and the HTTPRoute:
  read, apply (``patch``; ``create`` for the first apply), delete;
- its pods and their logs, and events: read only (why a colour does not start);
- its state ConfigMap and its Lease: read, create, replace, delete;
- Secrets: only the deployment's own admin-token Secret by name (``create`` cannot be
  limited to a name in RBAC, so it is granted alone); no listing, no other Secret;
- no other namespace (a Role, not a ClusterRole), no nodes, no RBAC objects, no
  ``pods/exec``.

Discovery (``/api``, ``/apis``) needs no rule: every authenticated user may read it.
The kinds are fitted to the cluster's versions like the rest of the export.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.deploy.platforms.kubernetes.color import admin_secret_name
from workbench.deploy.platforms.kubernetes.manifests import check_name, labels

if TYPE_CHECKING:
    from workbench.deploy.platforms.kubernetes.manifests import Manifest

__all__ = ["account_name", "rbac_objects", "rules"]

_APPLY = ["get", "list", "watch", "create", "patch", "update", "delete"]


def account_name(name: str) -> str:
    """The ServiceAccount, Role and RoleBinding name for deployment ``name``."""
    return f"workbench-{check_name(name)}"


def rules(name: str) -> list[Manifest]:
    """The Role's rules for deployment ``name`` (see the module docstring)."""
    secret = admin_secret_name(name)
    return [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": list(_APPLY)},
        {"apiGroups": [""], "resources": ["services"], "verbs": list(_APPLY)},
        {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": list(_APPLY)},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": list(_APPLY)},
        {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes"], "verbs": list(_APPLY)},
        {"apiGroups": [""], "resources": ["pods", "pods/log", "events"], "verbs": ["get", "list", "watch"]},
        # the nginx router's pods are annotated with their table's hash (a prompt ConfigMap refresh)
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": list(_APPLY)},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "verbs": ["get", "create", "update", "delete"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret],
         "verbs": ["get", "patch", "update", "delete"]},
    ]


def rbac_objects(name: str, namespace: str) -> list[Manifest]:
    """ServiceAccount, Role and RoleBinding letting the workbench run deployment ``name``
    in ``namespace``, in apply order."""
    account = account_name(name)
    meta = {"name": account, "namespace": namespace, "labels": labels(name, role="operator")}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(meta)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": dict(meta),
         "rules": rules(name)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": dict(meta),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]},
    ]
