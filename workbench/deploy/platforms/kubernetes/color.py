"""What the Kubernetes backend and router apply, rendered by :mod:`.manifests`.

The renderer knows deployments; the backend knows instance specs. These functions fit the
backend's options to one deployment (its namespace, workers and admin token) and add what
only a live deployment has: the admin token's Secret, and NodePort Services when the
workbench reaches colours from outside the cluster over the pod network.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import TYPE_CHECKING

from workbench.deploy.platforms.kubernetes import manifests, routes

if TYPE_CHECKING:
    from collections.abc import Mapping

    from workbench.deploy.backend import InstanceSpec
    from workbench.deploy.platforms.kubernetes.client import Obj
    from workbench.deploy.platforms.kubernetes.options import KubernetesOptions

__all__ = ["admin_secret_name", "for_deployment", "http_route", "live_color_objects", "stable_service"]


def admin_secret_name(deployment: str) -> str:
    return f"wb-{deployment}-admin"


def for_deployment(options: KubernetesOptions, namespace: str, deployment: str, *,
                   workers: int | None = None, admin_token: bool = False) -> KubernetesOptions:
    """``options`` as rendered for one deployment in ``namespace`` (the namespace the
    backend's API resolved, its workers, and its admin token's Secret)."""
    return replace(options, namespace=namespace, workers=workers or options.workers,
                   admin_token_secret=admin_secret_name(deployment) if admin_token else None)


def live_color_objects(spec: InstanceSpec, options: KubernetesOptions, namespace: str, *,
                        replicas: int) -> list[Obj]:
    """The admin token's Secret (when the spec has one), then the colour's Deployment,
    Service, HorizontalPodAutoscaler and PodDisruptionBudget; its pods run ``workbench
    serve`` with the spec's options (per-segment counting) and faults (a candidate's)."""
    opts = for_deployment(options, namespace, spec.deployment, workers=spec.workers,
                          admin_token=bool(spec.admin_token))
    objects: list[Obj] = []
    if spec.admin_token:
        objects.append({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": admin_secret_name(spec.deployment), "namespace": namespace,
                         "labels": manifests.labels(spec.deployment, role="admin")},
            "data": {"token": base64.b64encode(spec.admin_token.encode()).decode()},
        })
    rendered = manifests.color_objects(opts, spec.deployment, spec.color, spec.model, spec.version,
                                        replicas=replicas, serve_args=(*spec.extra_args, *spec.faults))
    for obj in rendered:
        if obj["kind"] == "Service" and options.node_address and not options.host_network:
            obj["spec"]["type"] = "NodePort"  # reached from outside at node_address:nodePort
    return [*objects, *rendered]


def stable_service(options: KubernetesOptions, namespace: str, deployment: str, color: str) -> Obj:
    """The deployment's stable Service, selecting ``color``."""
    return manifests.stable_service(for_deployment(options, namespace, deployment), deployment, color)


def http_route(options: KubernetesOptions, namespace: str, deployment: str, weights: Mapping[str, int],
               versions: Mapping[str, str], *, mirror: Obj | None = None) -> Obj:
    """The HTTPRoute splitting traffic by ``weights`` (with colour and version pins); a
    ``mirror`` filter goes on its weighted rule."""
    route = routes.http_route(for_deployment(options, namespace, deployment), deployment,
                              weights, versions=versions)
    if mirror is not None:
        route["spec"]["rules"][-1]["filters"] = [mirror]
    return route
