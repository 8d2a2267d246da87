"""Argo Rollouts: a canary ``Rollout`` judged by an ``AnalysisTemplate`` over the workbench's metrics.

Argo Rollouts replaces the two colour Deployments with one ``Rollout`` (argoproj.io/v1alpha1):
the controller keeps the stable ReplicaSet, brings up the new pod template as the canary
and walks :data:`CANARY_STEPS` (5 % -> 25 % -> 100 %), pausing between steps. A background
analysis (from the second step) runs the ``AnalysisTemplate``: the candidate's share of
server errors and its p99 latency, from the series every serving instance exports
(``workbench_requests_total``, ``workbench_request_duration_seconds``), with the same
default limits as the workbench's own canary analysis. A failed analysis aborts the
rollout: all traffic back to stable.

The queries select the canary's pods by ``rollouts_pod_template_hash`` and
``namespace``: the labels Prometheus' Kubernetes pod discovery gives the scraped series
when pod labels are mapped (``labelmap`` of ``__meta_kubernetes_pod_label_(.+)``).

With ``router="gateway"`` the weights are set on the HTTPRoute through the Argo Rollouts
Gateway API plugin (``argoproj-labs/gatewayAPI``, installed in the controller);
otherwise Argo approximates them by replica counts.
"""

from __future__ import annotations

from typing import Any

from workbench.deploy.platforms.kubernetes.manifests import (
    Manifest,
    hpa,
    labels,
    metadata,
    pdb,
    pod_spec,
    selector,
    serve_container,
    serve_volumes,
    service,
    version_annotations,
)
from workbench.deploy.platforms.kubernetes.options import VERSION_ANNOTATION, KubernetesOptions
from workbench.deploy.platforms.kubernetes.routes import route
from workbench.deploy.rollout.analysis import ErrorRateRule, LatencyRule

__all__ = ["CANARY_STEPS", "analysis_template", "rollout", "rollout_objects"]

CANARY_STEPS: tuple[int, ...] = (5, 25, 100)
PAUSE = "2m"  # between steps: a few analysis intervals
INTERVAL = "1m"
WINDOW = "2m"
GATEWAY_PLUGIN = "argoproj-labs/gatewayAPI"
_SELECTOR = 'namespace="{{args.namespace}}",rollouts_pod_template_hash="{{args.canary-hash}}"'


def canary_name(name: str) -> str:
    return f"{name}-canary"


def analysis_template(opts: KubernetesOptions, name: str) -> Manifest:
    """The ``AnalysisTemplate`` ``<name>``: error rate and p99 latency of the canary's pods."""
    errors_rule, latency_rule = ErrorRateRule(), LatencyRule()
    total = f"sum(rate(workbench_requests_total{{{_SELECTOR}}}[{WINDOW}]))"
    errors = f'sum(rate(workbench_requests_total{{{_SELECTOR},outcome="server_error"}}[{WINDOW}]))'
    p99 = ("histogram_quantile(0.99, sum by (le) "
           f"(rate(workbench_request_duration_seconds_bucket{{{_SELECTOR}}}[{WINDOW}])))")
    prometheus = opts.prometheus_url

    def metric(metric_name: str, query: str, condition: str, limit: int) -> Manifest:
        return {
            "name": metric_name,
            "interval": INTERVAL,
            "failureLimit": limit,
            # no traffic yet (no series, or NaN) is a pass, as with the workbench's own analysis
            "successCondition": f"len(result) == 0 || isNaN(result[0]) || {condition}",
            "provider": {"prometheus": {"address": prometheus, "query": query}},
        }

    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": metadata(opts, name, labels(name, None, role="analysis", extra=opts.extra_labels)),
        "spec": {
            "args": [{"name": "namespace"}, {"name": "canary-hash"}],
            "metrics": [
                metric("error-rate", f"({errors} or vector(0)) / ({total} > 0)",
                       f"result[0] <= {errors_rule.max_rate:g}", errors_rule.intervals - 1),
                metric("latency-p99", p99, f"result[0] <= {latency_rule.max_ms / 1000:g}", 1),
            ],
        },
    }


def rollout(opts: KubernetesOptions, name: str, model: str, version: str) -> Manifest:
    """The ``Rollout`` ``<name>`` whose pod template serves ``model`` ``version``."""
    pod_labels = labels(name, None, extra=opts.extra_labels)
    container = serve_container(opts, name, "blue", model, version)  # the colour is not in the pod
    strategy: dict[str, Any] = {
        "canaryService": canary_name(name),
        "stableService": name,
        "maxSurge": 1,
        "maxUnavailable": 0,
        "analysis": {
            "templates": [{"templateName": name}],
            "startingStep": 1,
            "args": [
                {"name": "namespace", "value": opts.target_namespace},
                {"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
            ],
        },
        "steps": [step for weight in CANARY_STEPS for step in (
            [{"setWeight": weight}] + ([{"pause": {"duration": PAUSE}}] if weight < 100 else []))],
    }
    if opts.router == "gateway":
        plugin = {"httpRoute": name, "namespace": opts.target_namespace}
        strategy["trafficRouting"] = {"plugins": {GATEWAY_PLUGIN: plugin}}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": metadata(opts, name, pod_labels, version_annotations(model, version)),
        "spec": {
            "replicas": opts.replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector(name)},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": {VERSION_ANNOTATION: version}},
                "spec": pod_spec(opts, [container], serve_volumes(opts)),
            },
            "strategy": {"canary": strategy},
        },
    }


def rollout_objects(opts: KubernetesOptions, name: str, model: str, version: str) -> list[Manifest]:
    """Rollout, its stable and canary Services, HTTPRoute (gateway), AnalysisTemplate, HPA, PDB.

    ``version`` is the desired one: applying a new version starts a canary from the
    version the cluster runs. The controller adds the pod-template hash to both
    Services' selectors, so each selects only its ReplicaSet.
    """
    obj_labels = labels(name, None, extra=opts.extra_labels)
    sel = selector(name)
    objects = [
        rollout(opts, name, model, version),
        service(opts, name, obj_labels, sel, opts.port),
        service(opts, canary_name(name), obj_labels, sel, opts.port),
        analysis_template(opts, name),
        hpa(opts, {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": name}, name, obj_labels,
            opts.replicas),
        pdb(opts, name, obj_labels, sel),
    ]
    if opts.router == "gateway":
        objects.append(_weighted_route(opts, name))
    return objects


def _weighted_route(opts: KubernetesOptions, name: str) -> Manifest:
    """The HTTPRoute the Gateway API plugin sets the weights of (stable 100, canary 0 at rest)."""
    return route(opts, name, [{
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        "backendRefs": [
            {"group": "", "kind": "Service", "name": name, "port": opts.port, "weight": 100},
            {"group": "", "kind": "Service", "name": canary_name(name), "port": opts.port, "weight": 0},
        ],
    }])
