"""What the Kubernetes backend applies for one colour, from an InstanceSpec."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from workbench.deploy.backends.base import InstanceSpec
    from workbench.deploy.backends.kubernetes import KubernetesOptions
    from workbench.deploy.k8s.client import Obj


def colour_objects(spec: InstanceSpec, options: KubernetesOptions, *, replicas: int,
                   port: int) -> list[Obj]:
    """The colour's admin-token Secret (when it has a token), Deployment and Service."""
    from workbench.deploy.backends.kubernetes import LABEL_COLOR, LABEL_DEPLOYMENT, LABEL_VERSION

    name = f"{spec.deployment}-{spec.color}"
    select = {LABEL_DEPLOYMENT: spec.deployment, LABEL_COLOR: spec.color}
    labels = {"app.kubernetes.io/name": "paddle-workbench", "app.kubernetes.io/managed-by": "workbench",
              **select, LABEL_VERSION: spec.version}
    args = ["serve", "--repo", "/models", "--model", spec.model, "--version", spec.version,
            "--host", "0.0.0.0", "--port", str(port), "--device", spec.device,
            "--workers", str(spec.workers), *spec.extra_args]
    env: list[dict[str, object]] = [{"name": k, "value": v} for k, v in spec.env]
    objects: list[Obj] = []
    if spec.admin_token:
        secret = f"wb-{spec.deployment}-admin"
        objects.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": secret, "labels": {LABEL_DEPLOYMENT: spec.deployment}},
                        "data": {"token": base64.b64encode(spec.admin_token.encode()).decode()}})
        env.append({"name": "WORKBENCH_ADMIN_TOKEN",
                    "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}}})
    resources = {"limits": {"nvidia.com/gpu": str(options.gpus)}} if options.gpus else {}
    volume = ({"name": "models", "persistentVolumeClaim": {"claimName": options.pvc, "readOnly": True}}
              if options.pvc else {"name": "models", "emptyDir": {}})
    probe = {"httpGet": {"path": "/v2/health/ready", "port": port}, "periodSeconds": 5}
    objects.append({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"workbench.io/model": spec.model, "workbench.io/repo": spec.repo}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": select},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{
                        "name": "serve", "image": options.image, "args": args, "env": env,
                        "ports": [{"name": "http", "containerPort": port}],
                        "readinessProbe": probe,
                        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": port}},
                        "resources": resources,
                        "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
                    }],
                    "volumes": [volume],
                },
            },
        },
    })
    objects.append({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {"selector": select, "ports": [{"name": "http", "port": port, "targetPort": port}],
                 **({"type": "NodePort"} if options.node_address else {})},
    })
    return objects


def stable_service(deployment: str, color: str, *, port: int) -> Obj:
    """The deployment's public Service, selecting one colour's pods."""
    from workbench.deploy.backends.kubernetes import LABEL_COLOR, LABEL_DEPLOYMENT

    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": deployment, "labels": {LABEL_DEPLOYMENT: deployment,
                                                     "app.kubernetes.io/managed-by": "workbench"}},
        "spec": {"selector": {LABEL_DEPLOYMENT: deployment, LABEL_COLOR: color},
                 "ports": [{"name": "http", "port": port, "targetPort": port}]},
    }


def http_route(deployment: str, gateway: str, weights: Mapping[str, int], *, port: int) -> Obj:
    """A Gateway API HTTPRoute splitting traffic between the colour Services by weight."""
    from workbench.deploy.backends.kubernetes import LABEL_DEPLOYMENT

    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": deployment, "labels": {LABEL_DEPLOYMENT: deployment,
                                                     "app.kubernetes.io/managed-by": "workbench"}},
        "spec": {
            "parentRefs": [{"name": gateway}],
            "rules": [{"backendRefs": backend_refs(deployment, weights, port=port)}],
        },
    }


def backend_refs(deployment: str, weights: Mapping[str, int], *, port: int) -> list[Obj]:
    return [{"name": f"{deployment}-{color}", "port": port, "weight": weight}
            for color, weight in sorted(weights.items())]
