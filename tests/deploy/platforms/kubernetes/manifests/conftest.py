"""Factories for the Kubernetes manifest tests: option sets and the deployments rendered from them."""

from __future__ import annotations

from typing import Any

from workbench.deploy.platforms.kubernetes.options import KubernetesOptions
from workbench.deploy.platforms.kubernetes.routes import deployment_objects

Manifest = dict[str, Any]

#: name -> (options, versions, weights, stable): the cases every invariant runs over
CASES: dict[str, tuple[KubernetesOptions, dict[str, str], dict[str, int], str]] = {
    "stable_only": (KubernetesOptions(router="service"), {"blue": "1.0.0"}, {"blue": 100}, "blue"),
    "canary_gateway_gpu": (
        KubernetesOptions(namespace="ml", image="registry.example/paddle-workbench:1.4", gpus=1, replicas=2,
                   hpa_max=6, hostnames=("digits.example.com",), gateway_namespace="infra"),
        {"blue": "1.0.0", "green": "1.1.0+20260405"}, {"blue": 75, "green": 25}, "blue",
    ),
    "canary_nginx_deep": (
        KubernetesOptions(router="nginx", deep_health=True, admin_token_secret="web-admin", gpus=2),
        {"blue": "1.0.0", "green": "1.1.0"}, {"blue": 95, "green": 5}, "blue",
    ),
    "promoted_green": (KubernetesOptions(), {"blue": "1.0.0", "green": "1.1.0"}, {"green": 100}, "blue"),
    "canary_ingress_legacy": (
        KubernetesOptions(router="ingress-nginx", hostnames=("digits.example.com",)),
        {"blue": "1.0.0", "green": "1.1.0"}, {"blue": 90, "green": 10}, "blue",
    ),
}


def render(case: str, name: str = "web", model: str = "digits") -> list[Manifest]:
    opts, versions, weights, stable = CASES[case]
    return deployment_objects(opts, name, model, versions, weights, stable=stable)
