"""What the Kubernetes backend and router apply, rendered by :mod:`.manifests`.

The renderer knows deployments (names, options); the backend knows instance specs and its
own options. These functions translate one into the other and add what only a live
deployment has: the admin token's Secret, and NodePort Services when the workbench
reaches colours from outside the cluster.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from workbench.deploy.platforms.kubernetes import manifests, routes
from workbench.deploy.platforms.kubernetes.options import K8sOptions

if TYPE_CHECKING:
    from collections.abc import Mapping

    from workbench.deploy.backend import InstanceSpec
    from workbench.deploy.platforms.kubernetes.client import Obj
    from workbench.deploy.platforms.kubernetes.options import KubernetesOptions

__all__ = ["admin_secret_name", "http_route", "live_colour_objects", "render_options", "stable_service"]


def admin_secret_name(deployment: str) -> str:
    return f"wb-{deployment}-admin"


def render_options(options: KubernetesOptions, namespace: str, deployment: str, *, port: int,
                   workers: int = 1, admin_token: bool = False) -> K8sOptions:
    """The renderer's options for a deployment run by a backend with ``options``."""
    kwargs: dict[str, object] = {}
    if options.pvc:
        kwargs["models_claim"] = options.pvc
    if options.gateway:
        kwargs["gateway_name"] = options.gateway
    return K8sOptions(
        namespace=namespace,
        image=options.image,
        port=port,
        gpus=options.gpus,
        workers=workers,
        replicas=options.replicas,
        preview_replicas=options.preview_replicas,
        hpa_max=max(options.replicas, K8sOptions.hpa_max),
        router="gateway" if options.gateway else "service",
        admin_token_secret=admin_secret_name(deployment) if admin_token else None,
        **kwargs,  # type: ignore[arg-type]
    )


def live_colour_objects(spec: InstanceSpec, options: KubernetesOptions, namespace: str, *,
                   replicas: int, port: int) -> list[Obj]:
    """The admin token's Secret (when the spec has one), then the colour's Deployment,
    Service, HorizontalPodAutoscaler and PodDisruptionBudget."""
    opts = render_options(options, namespace, spec.deployment, port=port, workers=spec.workers,
                          admin_token=bool(spec.admin_token))
    objects: list[Obj] = []
    if spec.admin_token:
        objects.append({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": admin_secret_name(spec.deployment), "namespace": namespace,
                         "labels": manifests.labels(spec.deployment, role="admin")},
            "data": {"token": base64.b64encode(spec.admin_token.encode()).decode()},
        })
    rendered = manifests.colour_objects(opts, spec.deployment, spec.color, spec.model, spec.version,
                                        replicas=replicas)
    for obj in rendered:
        if obj["kind"] == "Service" and options.node_address:
            obj["spec"]["type"] = "NodePort"  # reached from outside at node_address:nodePort
    return [*objects, *rendered]


def stable_service(options: KubernetesOptions, namespace: str, deployment: str, color: str, *,
                   port: int) -> Obj:
    """The deployment's stable Service, selecting ``color``."""
    return manifests.stable_service(render_options(options, namespace, deployment, port=port),
                                    deployment, color)


def http_route(options: KubernetesOptions, namespace: str, deployment: str, weights: Mapping[str, int],
               versions: Mapping[str, str], *, port: int, mirror: Obj | None = None) -> Obj:
    """The HTTPRoute splitting traffic by ``weights`` (with colour and version pins); a
    ``mirror`` filter goes on its weighted rule."""
    route = routes.http_route(render_options(options, namespace, deployment, port=port), deployment,
                                 weights, versions=versions)
    if mirror is not None:
        route["spec"]["rules"][-1]["filters"] = [mirror]
    return route
