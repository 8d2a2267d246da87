"""Kubernetes manifests of a blue/green workbench deployment: pure functions returning dicts.

No Kubernetes client is imported; the dicts are what ``kubectl apply`` takes (as YAML
or JSON). Per colour (``<name>-blue``, ``<name>-green``) a Deployment of the workbench
image in serve mode, a Service, an HPA (autoscaling/v2) and a PodDisruptionBudget; one
stable Service ``<name>`` whose selector names the live colour (blue/green flips it);
and, for weighted traffic, a Gateway API HTTPRoute over the colour Services or the
workbench's own nginx router as a Deployment (where the cluster has no Gateway
controller).

The options (:class:`~.options.KubernetesOptions`) and label keys are in :mod:`.options`; the
traffic objects (HTTPRoute, nginx router, Ingress) and the whole deployment in :mod:`.routes`.

Public API (stable; the Kubernetes backend and ``workbench deploy export`` use it):

- :class:`KubernetesOptions`: namespace, image, model PVC or host directory, port, host
  network, GPUs, replicas, HPA, probes, router.
- :func:`labels`, :func:`selector`: the labels every object carries / the pod selector.
- :func:`colour_objects` -> ``[Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget]``.
- :func:`pod_template`, :func:`serve_container`: the pod of one colour (reused by exports).
- :func:`stable_service`: the Service whose selector flips between colours.
- :func:`http_route`: HTTPRoute with weighted ``backendRefs`` and ``x-deploy-color`` pins.
- :func:`router_objects`: the nginx router (ConfigMap, Deployment, Service).
- :func:`ingress_objects`: legacy ingress-nginx Ingresses with canary annotations.
- :func:`deployment_objects`: all of the above for one deployment, in apply order.
- :func:`check_dns_label`, :func:`check_weights`, :func:`live_colour`, :func:`colour_name`,
  :func:`router_name`, :func:`service_host`, :func:`cluster_routing_table`.
- Building blocks the exports share: :func:`metadata`, :func:`service`, :func:`hpa`,
  :func:`pdb`, :func:`pod_spec`, :func:`serve_volumes`, :func:`route`,
  :func:`version_annotations`.

Invalid values raise :class:`~workbench.errors.DeployValueError` with one sentence.
"""


from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from workbench.deploy.backend import InstanceSpec
from workbench.deploy.names import check_color
from workbench.deploy.platforms.kubernetes.options import (
    COLOR_LABEL,
    DEPLOYMENT_LABEL,
    MODEL_ANNOTATION,
    MODELS_DIR,
    PRESTOP_SECONDS,
    ROLE_LABEL,
    TMP_DIR,
    VERSION_ANNOTATION,
    KubernetesOptions,
    check_dns_label,
    check_positive,
)
from workbench.errors import DeployValueError

__all__ = [
    "Manifest",
    "check_name",
    "color_name",
    "color_objects",
    "hpa",
    "labels",
    "metadata",
    "pdb",
    "pod_spec",
    "pod_template",
    "router_name",
    "selector",
    "serve_container",
    "serve_volumes",
    "service",
    "stable_service",
    "version_annotations",
]

Manifest = dict[str, Any]


def check_name(name: str) -> str:
    check_dns_label(name, "deployment name")
    if len(name) > 40:  # leaves room for "-green", "-router", "-analysis" and pod suffixes
        raise DeployValueError(f"invalid deployment name {name!r}: use at most 40 characters")
    return name


def color_name(name: str, color: str) -> str:
    """``<name>-blue`` / ``<name>-green``: the Deployment, Service, HPA and PDB of a colour."""
    return f"{check_name(name)}-{check_color(color)}"


def router_name(name: str) -> str:
    """``<name>-router``: the nginx router's ConfigMap, Deployment and Service."""
    return f"{check_name(name)}-router"


def selector(name: str, color: str | None = None, *, role: str = "serve") -> dict[str, str]:
    """The labels that select a deployment's pods (of one colour, or of its router)."""
    sel = {DEPLOYMENT_LABEL: check_name(name), ROLE_LABEL: role}
    if color is not None:
        sel[COLOR_LABEL] = check_color(color)
    return sel


def labels(name: str, color: str | None = None, *, role: str = "serve",
           extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every label of an object of deployment ``name`` (its selector labels included)."""
    return {
        "app.kubernetes.io/name": "paddle-workbench",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": role,
        "app.kubernetes.io/managed-by": "workbench",
        **(extra or {}),
        **selector(name, color, role=role),
    }


def metadata(opts: KubernetesOptions, obj_name: str, obj_labels: Mapping[str, str],
          annotations: Mapping[str, str] | None = None) -> Manifest:
    meta: Manifest = {"name": obj_name, "namespace": opts.target_namespace, "labels": dict(obj_labels)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def version_annotations(model: str, version: str) -> dict[str, str]:
    return {MODEL_ANNOTATION: model, VERSION_ANNOTATION: version}


# -- the serving pod ----------------------------------------------------------------------


def _probe(path: str, *, period: int, failures: int, timeout: int = 3,
           port: str | int | None = "http") -> Manifest:
    action: Manifest = {"path": path}
    if port is not None:
        action["port"] = port
    return {"httpGet": action, "periodSeconds": period, "timeoutSeconds": timeout,
            "failureThreshold": failures}


def serve_container(opts: KubernetesOptions, name: str, color: str, model: str, version: str, *,
                    container_name: str = "serve", startup_probe: bool = True,
                    probe_port: str | int | None = "http", serve_args: Sequence[str] = ()) -> Manifest:
    """The serving container: ``workbench serve`` of one version, hardened, with probes.

    The image's entrypoint (tini + start.sh) runs ``serve ARGS`` as ``workbench serve``.
    Readiness and startup probe ``/v2/health/ready`` (ready once the version is loaded and
    warm; with ``deep_health`` readiness runs a real inference on the manifest's sample),
    liveness ``/v2/health/live``. preStop waits :data:`PRESTOP_SECONDS` so the pod leaves
    the endpoints before SIGTERM starts the server's drain.

    On the host network (``opts.host_network``) the server binds the pod's address (the
    node's, ``$(POD_IP)``), not every interface of the node, on the colour's own port
    (:meth:`~.options.KubernetesOptions.color_port`), declared as a host port so the
    scheduler never places two pods wanting it on one node.

    ``serve_args``: more ``workbench serve`` options, after the rest (a deployment's
    per-segment counting, a candidate's chaos faults).
    """
    port = opts.color_port(check_color(color))
    spec = InstanceSpec(
        deployment=name, color=check_color(color), model=model, version=version, repo=MODELS_DIR,
        port=port, host="$(POD_IP)" if opts.host_network else "0.0.0.0", device=opts.device,
        workers=opts.workers,
        extra_args=("--graceful-timeout", str(opts.graceful_timeout), *serve_args),
    )
    resources: Manifest = {"requests": {"cpu": opts.cpu_request, "memory": opts.memory_request}}
    limits: Manifest = {}
    if opts.cpu_limit:
        limits["cpu"] = opts.cpu_limit
    if opts.memory_limit:
        limits["memory"] = opts.memory_limit
    if opts.gpus:
        limits["nvidia.com/gpu"] = opts.gpus
    if limits:
        resources["limits"] = limits
    env: list[Manifest] = [
        {"name": "HOME", "value": TMP_DIR},
        {"name": "WORKBENCH_HOME", "value": f"{TMP_DIR}/workbench"},
        {"name": "WORKBENCH_REPO", "value": MODELS_DIR},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
    ]
    if opts.host_network:  # the pod's address is the node's: bind it, not 0.0.0.0
        env.insert(0, {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    if opts.admin_token_secret:
        env.append({"name": "WORKBENCH_ADMIN_TOKEN", "valueFrom": {
            "secretKeyRef": {"name": opts.admin_token_secret, "key": "token"}}})
    ready_path = "/v2/health/deep" if opts.deep_health else "/v2/health/ready"
    container: Manifest = {
        "name": container_name,
        "image": opts.image,
        "imagePullPolicy": opts.image_pull_policy,
        "args": spec.serve_args(),
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP",
                   **({"hostPort": port} if opts.host_network else {})}],
        "env": env,
        "resources": resources,
        "readinessProbe": _probe(ready_path, period=10 if opts.deep_health else 5, failures=3,
                                 timeout=10 if opts.deep_health else 3, port=probe_port),
        "livenessProbe": _probe("/v2/health/live", period=10, failures=3, port=probe_port),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SECONDS)]}}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": TMP_DIR},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    if startup_probe:
        # loading and warming a version may take minutes: up to 10 before liveness counts
        container["startupProbe"] = _probe("/v2/health/ready", period=5, failures=120, port=probe_port)
    return container


def _pod_security(opts: KubernetesOptions) -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": opts.run_as_user,
        "runAsGroup": opts.run_as_group,
        "fsGroup": opts.run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def serve_volumes(opts: KubernetesOptions) -> list[Manifest]:
    """The model repository (the PVC, or ``models_path`` on the node), /tmp and /dev/shm."""
    models: Manifest = (
        {"name": "models", "hostPath": {"path": opts.models_path, "type": "Directory"}}
        if opts.models_path else
        {"name": "models", "persistentVolumeClaim": {"claimName": opts.models_claim, "readOnly": True}})
    return [
        models,
        {"name": "tmp", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": opts.shm_size}},
    ]


def pod_spec(opts: KubernetesOptions, containers: list[Manifest], volumes: list[Manifest]) -> Manifest:
    """A pod spec with the workbench's security context and graceful termination."""
    spec: Manifest = {
        "securityContext": _pod_security(opts),
        "terminationGracePeriodSeconds": opts.termination_grace,
        "automountServiceAccountToken": False,
        "containers": containers,
        "volumes": volumes,
    }
    if opts.service_account:
        spec["serviceAccountName"] = opts.service_account
    if opts.host_network:  # no pod network: the node's (cluster DNS still first, if there is one)
        spec["hostNetwork"] = True
        spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    return spec


def pod_template(opts: KubernetesOptions, name: str, color: str, model: str, version: str, *,
                 serve_args: Sequence[str] = ()) -> Manifest:
    """The pod template of one colour serving ``model`` ``version``."""
    container = serve_container(opts, name, color, model, version, serve_args=serve_args)
    return {
        "metadata": {
            "labels": labels(name, color, extra=opts.extra_labels),
            "annotations": version_annotations(model, version),
        },
        "spec": pod_spec(opts, [container], serve_volumes(opts)),
    }


# -- per colour ---------------------------------------------------------------------------


def service(opts: KubernetesOptions, obj_name: str, obj_labels: Mapping[str, str], sel: Mapping[str, str],
             port: int, annotations: Mapping[str, str] | None = None) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(opts, obj_name, obj_labels, annotations),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(sel),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def hpa(opts: KubernetesOptions, target: Mapping[str, str], obj_name: str, obj_labels: Mapping[str, str],
        replicas: int) -> Manifest:
    """An autoscaling/v2 HPA on CPU utilisation, from ``replicas`` up to ``opts.hpa_max``."""
    low = max(1, replicas)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(opts, obj_name, obj_labels),
        "spec": {
            "scaleTargetRef": dict(target),
            "minReplicas": low,
            "maxReplicas": max(low, opts.hpa_max),
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": opts.hpa_cpu_percent},
            }}],
        },
    }


def pdb(opts: KubernetesOptions, obj_name: str, obj_labels: Mapping[str, str],
        sel: Mapping[str, str]) -> Manifest:
    """A policy/v1 PodDisruptionBudget: voluntary evictions take at most one pod at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(opts, obj_name, obj_labels),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(sel)}},
    }


def color_objects(opts: KubernetesOptions, name: str, color: str, model: str, version: str, *,
                   replicas: int, serve_args: Sequence[str] = ()) -> list[Manifest]:
    """``[Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget]`` of one colour;
    ``serve_args`` go to its ``workbench serve`` (:func:`serve_container`).

    ``replicas`` 0 keeps the colour's objects with no pods (a scaled-down old colour);
    its HPA then stays idle (Kubernetes does not scale a Deployment at zero).
    """
    check_positive(replicas, "replicas", 0)
    obj = color_name(name, color)
    obj_labels = labels(name, color, extra=opts.extra_labels)
    sel = selector(name, color)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(opts, obj, obj_labels, version_annotations(model, version)),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": sel},
            # a new pod must be ready before an old one goes: capacity never drops
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": pod_template(opts, name, color, model, version, serve_args=serve_args),
        },
    }
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": obj}
    return [
        deployment,
        service(opts, obj, obj_labels, sel, opts.port),
        hpa(opts, target, obj, obj_labels, replicas),
        pdb(opts, obj, obj_labels, sel),
    ]


def stable_service(opts: KubernetesOptions, name: str, color: str) -> Manifest:
    """The Service ``<name>``: selects the pods of ``color`` only; blue/green flips its selector."""
    return service(opts, check_name(name), labels(name, None, extra=opts.extra_labels),
                    selector(name, color), opts.port)


# -- traffic ------------------------------------------------------------------------------
