"""Kubernetes manifests of a blue/green workbench deployment: pure functions returning dicts.

No Kubernetes client is imported; the dicts are what ``kubectl apply`` takes (as YAML
or JSON). Per colour (``<name>-blue``, ``<name>-green``) a Deployment of the workbench
image in serve mode, a Service, an HPA (autoscaling/v2) and a PodDisruptionBudget; one
stable Service ``<name>`` whose selector names the live colour (blue/green flips it);
and, for weighted traffic, a Gateway API HTTPRoute over the colour Services or the
workbench's own nginx router as a Deployment (where the cluster has no Gateway
controller).

Public API (stable; the Kubernetes backend and ``workbench deploy export`` use it):

- :class:`K8sOptions`: namespace, image, model PVC, port, GPUs, replicas, HPA, probes, router.
- :func:`labels`, :func:`selector`: the labels every object carries / the pod selector.
- :func:`colour_objects` -> ``[Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget]``.
- :func:`pod_template`, :func:`serve_container`: the pod of one colour (reused by exports).
- :func:`stable_service`: the Service whose selector flips between colours.
- :func:`http_route`: HTTPRoute with weighted ``backendRefs`` and ``x-deploy-color`` pins.
- :func:`router_objects`: the nginx router (ConfigMap, Deployment, Service).
- :func:`ingress_objects`: legacy ingress-nginx Ingresses with canary annotations.
- :func:`deployment_objects`: all of the above for one deployment, in apply order.
- :func:`check_dns_label`, :func:`check_weights`, :func:`live_colour`, :func:`colour_name`,
  :func:`router_name`, :func:`service_host`, :func:`routing_table`.
- Building blocks the exports share: :func:`metadata`, :func:`service`, :func:`hpa`,
  :func:`pdb`, :func:`pod_spec`, :func:`serve_volumes`, :func:`route`,
  :func:`version_annotations`.

Invalid values raise :class:`~workbench.errors.DeployValueError` with one sentence.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from workbench.deploy.backends.base import InstanceSpec
from workbench.deploy.names import COLORS, check_color, check_port
from workbench.deploy.router.table import RoutingTable, Upstream, render_front, render_nginx
from workbench.errors import DeployValueError, RouterError

if TYPE_CHECKING:
    from workbench._types import Color

__all__ = [
    "K8sOptions",
    "check_dns_label",
    "check_weights",
    "colour_name",
    "colour_objects",
    "deployment_objects",
    "hpa",
    "http_route",
    "ingress_objects",
    "labels",
    "live_colour",
    "metadata",
    "pdb",
    "pod_spec",
    "pod_template",
    "route",
    "router_name",
    "router_objects",
    "routing_table",
    "selector",
    "serve_container",
    "serve_volumes",
    "service",
    "service_host",
    "stable_service",
    "version_annotations",
]

Manifest = dict[str, Any]

#: Label and annotation keys (one prefix, like the Docker backend's ``workbench.*`` labels).
PREFIX = "workbench.paddle.dev"
DEPLOYMENT_LABEL = f"{PREFIX}/deployment"
COLOR_LABEL = f"{PREFIX}/color"
ROLE_LABEL = f"{PREFIX}/role"
MODEL_ANNOTATION = f"{PREFIX}/model"
VERSION_ANNOTATION = f"{PREFIX}/version"
CONFIG_ANNOTATION = f"{PREFIX}/config-hash"

MODELS_DIR = "/models"  # where the model repository PVC is mounted (read-only)
TMP_DIR = "/tmp"  # the only writable path of a serving pod besides /dev/shm
ROUTER_CONF_DIR = "/etc/workbench/router"
ROUTER_WORKDIR = "/run/workbench-router"
PIN_HEADER = "x-deploy-color"
VERSION_HEADER = "x-model-version"
ROUTERS = ("gateway", "nginx", "service", "ingress-nginx")
ROUTER_PORT = 8080  # default port of the nginx router pods
PRESTOP_SECONDS = 5  # endpoints controllers and proxies drop the pod before SIGTERM

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_URL = re.compile(r"^https?://[^\s]+$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")


def check_dns_label(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a DNS-1123 label (what Kubernetes names of Services must be)."""
    if not isinstance(name, str) or len(name) > 63 or not _DNS_LABEL.match(name):
        raise DeployValueError(
            f"invalid Kubernetes {what} {name!r}: use at most 63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def _positive(value: int, what: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DeployValueError(f"{what} must be an integer >= {minimum}, not {value!r}")


@dataclass(frozen=True)
class K8sOptions:
    """How a deployment runs on Kubernetes (everything but the model and its versions)."""

    namespace: str = "default"
    image: str = "paddle-workbench:latest"
    image_pull_policy: str = "IfNotPresent"
    models_claim: str = "workbench-models"  # PVC holding the model repository (mounted read-only)
    port: int = 8000
    router_port: int = ROUTER_PORT  # the nginx router's port (router="nginx")
    gpus: int = 0  # per pod; > 0 adds nvidia.com/gpu limits and serves on gpu:0
    workers: int = 1  # worker processes per version (``workbench serve --workers``)
    replicas: int = 2  # pods of the live colour
    preview_replicas: int = 1  # pods of the other colour, so blue/green does not double GPUs
    hpa_max: int = 4  # HPA upper bound per colour (the lower bound is the colour's replicas)
    hpa_cpu_percent: int = 70  # HPA target: average CPU utilisation of the requests
    deep_health: bool = False  # readiness runs a real inference (/v2/health/deep)
    graceful_timeout: int = 30  # seconds ``workbench serve`` drains in-flight requests on SIGTERM
    # "gateway" (HTTPRoute) | "nginx" (own router) | "service" (selector only) | "ingress-nginx" (legacy)
    router: str = "gateway"
    gateway_name: str = "workbench"
    gateway_namespace: str | None = None  # None: the deployment's namespace
    hostnames: tuple[str, ...] = ()
    cpu_request: str = "1"
    memory_request: str = "2Gi"
    cpu_limit: str | None = None
    memory_limit: str | None = "4Gi"
    shm_size: str = "1Gi"  # /dev/shm (memory-backed) for the worker processes' tensors
    run_as_user: int = 1000  # the image's non-root user
    run_as_group: int = 100
    admin_token_secret: str | None = None  # Secret (key ``token``) for the admin API
    service_account: str | None = None
    prometheus_url: str = "http://prometheus.monitoring.svc:9090"  # for exported analyses
    extra_labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_dns_label(self.namespace, "namespace")
        check_dns_label(self.models_claim, "PVC name")
        check_dns_label(self.gateway_name, "Gateway name")
        if self.gateway_namespace is not None:
            check_dns_label(self.gateway_namespace, "Gateway namespace")
        if self.admin_token_secret is not None:
            check_dns_label(self.admin_token_secret, "Secret name")
        if self.service_account is not None:
            check_dns_label(self.service_account, "ServiceAccount name")
        if not isinstance(self.image, str) or not _IMAGE.match(self.image):
            raise DeployValueError(f"invalid image reference {self.image!r}")
        if self.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise DeployValueError(
                f"image pull policy must be Always, IfNotPresent or Never, not {self.image_pull_policy!r}"
            )
        check_port(self.port)
        check_port(self.router_port, "router port")
        _positive(self.gpus, "gpus", 0)
        _positive(self.workers, "workers")
        _positive(self.replicas, "replicas")
        _positive(self.preview_replicas, "preview replicas")
        _positive(self.hpa_max, "HPA maximum")
        if self.hpa_max < self.replicas:
            raise DeployValueError(f"HPA maximum ({self.hpa_max}) is below replicas ({self.replicas})")
        _positive(self.hpa_cpu_percent, "HPA CPU target")
        _positive(self.graceful_timeout, "graceful timeout", 0)
        for host in self.hostnames:
            if not isinstance(host, str) or len(host) > 253 or not _HOSTNAME.match(host):
                raise DeployValueError(f"invalid host name {host!r}: use a DNS name like digits.example.com")
        if not isinstance(self.prometheus_url, str) or not _URL.match(self.prometheus_url):
            raise DeployValueError(f"invalid Prometheus URL {self.prometheus_url!r}")
        if self.router not in ROUTERS:
            raise DeployValueError(f"router must be one of {', '.join(ROUTERS)}, not {self.router!r}")
        for what in ("cpu_request", "memory_request", "cpu_limit", "memory_limit", "shm_size"):
            value = getattr(self, what)
            if value is not None and (not isinstance(value, str) or not _QUANTITY.match(value)):
                raise DeployValueError(
                    f"{what.replace('_', ' ')} must be a quantity like 500m or 2Gi, not {value!r}"
                )
        _positive(self.run_as_user, "run-as user")  # never 0: the pods run as non-root
        _positive(self.run_as_group, "run-as group", 0)
        for key, value in self.extra_labels.items():
            if key.startswith(PREFIX) or not re.match(r"^[A-Za-z0-9./_-]{1,253}$", key) or not re.match(
                r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$", value
            ):
                raise DeployValueError(f"invalid extra label {key}={value!r}")

    @property
    def device(self) -> str:
        """What ``workbench serve --device`` gets inside the pod (it sees only its own GPUs)."""
        return "gpu:0" if self.gpus else "cpu"

    @property
    def termination_grace(self) -> int:
        """Seconds Kubernetes waits after preStop starts: preStop, the server's drain, a margin."""
        return PRESTOP_SECONDS + self.graceful_timeout + 10


# -- names and labels ---------------------------------------------------------------------


def _check_name(name: str) -> str:
    check_dns_label(name, "deployment name")
    if len(name) > 40:  # leaves room for "-green", "-router", "-analysis" and pod suffixes
        raise DeployValueError(f"invalid deployment name {name!r}: use at most 40 characters")
    return name


def colour_name(name: str, color: str) -> str:
    """``<name>-blue`` / ``<name>-green``: the Deployment, Service, HPA and PDB of a colour."""
    return f"{_check_name(name)}-{check_color(color)}"


def router_name(name: str) -> str:
    """``<name>-router``: the nginx router's ConfigMap, Deployment and Service."""
    return f"{_check_name(name)}-router"


def selector(name: str, color: str | None = None, *, role: str = "serve") -> dict[str, str]:
    """The labels that select a deployment's pods (of one colour, or of its router)."""
    sel = {DEPLOYMENT_LABEL: _check_name(name), ROLE_LABEL: role}
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


def metadata(opts: K8sOptions, obj_name: str, obj_labels: Mapping[str, str],
          annotations: Mapping[str, str] | None = None) -> Manifest:
    meta: Manifest = {"name": obj_name, "namespace": opts.namespace, "labels": dict(obj_labels)}
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


def serve_container(opts: K8sOptions, name: str, color: str, model: str, version: str, *,
                    container_name: str = "serve", startup_probe: bool = True,
                    probe_port: str | int | None = "http") -> Manifest:
    """The serving container: ``workbench serve`` of one version, hardened, with probes.

    The image's entrypoint (tini + start.sh) runs ``serve ARGS`` as ``workbench serve``.
    Readiness and startup probe ``/v2/health/ready`` (ready once the version is loaded and
    warm; with ``deep_health`` readiness runs a real inference on the manifest's sample),
    liveness ``/v2/health/live``. preStop waits :data:`PRESTOP_SECONDS` so the pod leaves
    the endpoints before SIGTERM starts the server's drain.
    """
    spec = InstanceSpec(
        deployment=name, color=check_color(color), model=model, version=version, repo=MODELS_DIR,
        port=opts.port, host="0.0.0.0", device=opts.device, workers=opts.workers,
        extra_args=("--graceful-timeout", str(opts.graceful_timeout)),
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
    if opts.admin_token_secret:
        env.append({"name": "WORKBENCH_ADMIN_TOKEN", "valueFrom": {
            "secretKeyRef": {"name": opts.admin_token_secret, "key": "token"}}})
    ready_path = "/v2/health/deep" if opts.deep_health else "/v2/health/ready"
    container: Manifest = {
        "name": container_name,
        "image": opts.image,
        "imagePullPolicy": opts.image_pull_policy,
        "args": spec.serve_args(),
        "ports": [{"name": "http", "containerPort": opts.port, "protocol": "TCP"}],
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


def _pod_security(opts: K8sOptions) -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": opts.run_as_user,
        "runAsGroup": opts.run_as_group,
        "fsGroup": opts.run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def serve_volumes(opts: K8sOptions) -> list[Manifest]:
    return [
        {"name": "models", "persistentVolumeClaim": {"claimName": opts.models_claim, "readOnly": True}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": opts.shm_size}},
    ]


def pod_spec(opts: K8sOptions, containers: list[Manifest], volumes: list[Manifest]) -> Manifest:
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
    return spec


def pod_template(opts: K8sOptions, name: str, color: str, model: str, version: str) -> Manifest:
    """The pod template of one colour serving ``model`` ``version``."""
    return {
        "metadata": {
            "labels": labels(name, color, extra=opts.extra_labels),
            "annotations": version_annotations(model, version),
        },
        "spec": pod_spec(opts, [serve_container(opts, name, color, model, version)], serve_volumes(opts)),
    }


# -- per colour ---------------------------------------------------------------------------


def service(opts: K8sOptions, obj_name: str, obj_labels: Mapping[str, str], sel: Mapping[str, str],
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


def hpa(opts: K8sOptions, target: Mapping[str, str], obj_name: str, obj_labels: Mapping[str, str],
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


def pdb(opts: K8sOptions, obj_name: str, obj_labels: Mapping[str, str], sel: Mapping[str, str]) -> Manifest:
    """A policy/v1 PodDisruptionBudget: voluntary evictions take at most one pod at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(opts, obj_name, obj_labels),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(sel)}},
    }


def colour_objects(opts: K8sOptions, name: str, color: str, model: str, version: str, *,
                   replicas: int) -> list[Manifest]:
    """``[Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget]`` of one colour.

    ``replicas`` 0 keeps the colour's objects with no pods (a scaled-down old colour);
    its HPA then stays idle (Kubernetes does not scale a Deployment at zero).
    """
    _positive(replicas, "replicas", 0)
    obj = colour_name(name, color)
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
            "template": pod_template(opts, name, color, model, version),
        },
    }
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": obj}
    return [
        deployment,
        service(opts, obj, obj_labels, sel, opts.port),
        hpa(opts, target, obj, obj_labels, replicas),
        pdb(opts, obj, obj_labels, sel),
    ]


def stable_service(opts: K8sOptions, name: str, color: str) -> Manifest:
    """The Service ``<name>``: selects the pods of ``color`` only; blue/green flips its selector."""
    return service(opts, _check_name(name), labels(name, None, extra=opts.extra_labels),
                    selector(name, color), opts.port)


# -- traffic ------------------------------------------------------------------------------


def check_weights(weights: Mapping[str, int]) -> dict[str, int]:
    """``weights`` (colour -> percent) checked: known colours, integers 0..100, summing to 100."""
    if not weights:
        raise DeployValueError("weights must name at least one colour")
    checked: dict[str, int] = {}
    for color, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            raise DeployValueError(f"weight of {color} must be an integer in 0..100, not {weight!r}")
        checked[check_color(color)] = weight
    if sum(checked.values()) != 100:
        raise DeployValueError(f"weights must add up to 100, not {sum(checked.values())} ({weights})")
    return {c: checked[c] for c in COLORS if c in checked}


def http_route(opts: K8sOptions, name: str, weights: Mapping[str, int], *,
               versions: Mapping[str, str] | None = None) -> Manifest:
    """A Gateway API (v1) HTTPRoute ``<name>`` splitting traffic over the colour Services.

    Like the nginx router: ``x-deploy-color: blue|green`` pins a colour, ``x-model-version:
    V`` pins the colour serving ``V`` (``versions``: colour -> version; a version both
    colours serve is not pinned), everything else is split by ``weights``.
    """
    shares = check_weights(weights)
    versions = dict(versions or {})

    def ref(color: str, weight: int | None = None) -> Manifest:
        backend: Manifest = {"group": "", "kind": "Service", "name": colour_name(name, color),
                             "port": opts.port}
        if weight is not None:
            backend["weight"] = weight
        return backend

    rules: list[Manifest] = []
    for color in shares:
        rules.append({"matches": [{"headers": [{"type": "Exact", "name": PIN_HEADER, "value": color}]}],
                      "backendRefs": [ref(color)]})
    served = list(versions.values())
    for color in shares:
        version = versions.get(color)
        if version is not None and served.count(version) == 1:
            header = {"type": "Exact", "name": VERSION_HEADER, "value": version}
            rules.append({"matches": [{"headers": [header]}], "backendRefs": [ref(color)]})
    rules.append({"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                  "backendRefs": [ref(c, w) for c, w in shares.items()]})
    return route(opts, name, rules)


def route(opts: K8sOptions, name: str, rules: list[Manifest]) -> Manifest:
    """An HTTPRoute ``<name>`` attached to the options' Gateway, with ``rules``."""
    parent: Manifest = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": opts.gateway_name}
    if opts.gateway_namespace:
        parent["namespace"] = opts.gateway_namespace
    spec: Manifest = {"parentRefs": [parent], "rules": rules}
    if opts.hostnames:
        spec["hostnames"] = list(opts.hostnames)
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": metadata(opts, _check_name(name),
                             labels(name, None, role="route", extra=opts.extra_labels)),
        "spec": spec,
    }


def service_host(opts: K8sOptions, name: str, color: str) -> str:
    """The cluster DNS name of a colour's Service."""
    return f"{colour_name(name, color)}.{opts.namespace}.svc.cluster.local"


def routing_table(opts: K8sOptions, name: str, weights: Mapping[str, int], versions: Mapping[str, str], *,
                  stable: str = "blue") -> RoutingTable:
    """The nginx router's table, its upstreams being the colour Services' cluster DNS names."""
    shares = check_weights(weights)
    try:
        upstreams = tuple(
            Upstream(check_color(color), service_host(opts, name, color), opts.port, versions[color])
            for color in shares
        )
        return RoutingTable(deployment=name, listen_port=opts.router_port, listen_host="0.0.0.0",
                            upstreams=upstreams, green_weight=shares.get("green", 0),
                            stable=check_color(stable))
    except KeyError as exc:
        raise DeployValueError(f"no version given for colour {exc.args[0]}") from None
    except RouterError as exc:
        raise DeployValueError(str(exc)) from None


def router_objects(opts: K8sOptions, name: str, routing: RoutingTable | Mapping[str, int], *,
                   versions: Mapping[str, str] | None = None, stable: str = "blue") -> list[Manifest]:
    """The workbench's nginx router in the cluster: ``[ConfigMap, Deployment, Service]``.

    ``routing`` is a :class:`RoutingTable` or weights (colour -> percent, with ``versions``).
    The pod runs the two nginx tiers of the local router (front and router, sharing the
    router's unix socket in an emptyDir) from the image's ``router`` mode; the ConfigMap's
    hash is a pod annotation, so a new table rolls the router's pods.
    """
    table = routing if isinstance(routing, RoutingTable) else routing_table(
        opts, name, routing, versions or {}, stable=stable)
    try:
        router_conf = render_nginx(table, workdir=ROUTER_WORKDIR)
        front_conf = render_front(table, workdir=ROUTER_WORKDIR)
    except RouterError as exc:
        raise DeployValueError(str(exc)) from None
    obj = router_name(name)
    obj_labels = labels(name, None, role="router", extra=opts.extra_labels)
    sel = selector(name, role="router")
    data = {"nginx.conf": router_conf, "front.conf": front_conf,
            "table.json": json.dumps(table.to_dict(), indent=2, sort_keys=True)}
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    front_dir = f"{ROUTER_WORKDIR}/front"

    def nginx(tier: str, conf: str, mounts: list[Manifest]) -> Manifest:
        container: Manifest = {
            "name": tier,
            "image": opts.image,
            "imagePullPolicy": opts.image_pull_policy,
            "args": ["router", f"{ROUTER_CONF_DIR}/{conf}"],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "runAsNonRoot": True,
                "capabilities": {"drop": ["ALL"]},
            },
            "volumeMounts": [{"name": "config", "mountPath": ROUTER_CONF_DIR, "readOnly": True}, *mounts],
            # nginx stops accepting on SIGQUIT and finishes open requests; SIGTERM would cut them
            "lifecycle": {"preStop": {"exec": {"command": [
                "sh", "-c", f"sleep {PRESTOP_SECONDS}; nginx -c {ROUTER_CONF_DIR}/{conf} -s quit",
            ]}}},
        }
        if tier == "front":
            container["ports"] = [{"name": "http", "containerPort": table.listen_port, "protocol": "TCP"}]
            probe = {"tcpSocket": {"port": "http"}, "periodSeconds": 5, "timeoutSeconds": 3,
                     "failureThreshold": 3}
            container["readinessProbe"] = probe
            container["livenessProbe"] = {**probe, "periodSeconds": 10}
        else:
            probe = {"exec": {"command": ["test", "-S", f"{front_dir}/router.sock"]},
                     "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3}
            container["readinessProbe"] = probe
            container["livenessProbe"] = {**probe, "periodSeconds": 10}
        return container

    shared = {"name": "front", "mountPath": front_dir}
    spec = pod_spec(opts, [
        nginx("router", "nginx.conf", [{"name": "work", "mountPath": ROUTER_WORKDIR}, shared]),
        nginx("front", "front.conf", [shared]),
    ], [
        {"name": "config", "configMap": {"name": obj}},
        {"name": "work", "emptyDir": {}},
        {"name": "front", "emptyDir": {}},
    ])
    # a request may try both colours, each up to connect + read timeout, before nginx quits
    budget = round(2 * (table.connect_timeout + table.read_timeout))
    spec["terminationGracePeriodSeconds"] = PRESTOP_SECONDS + budget + 20
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(opts, obj, obj_labels), "data": data},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata(opts, obj, obj_labels),
            "spec": {
                "replicas": 2,
                "revisionHistoryLimit": 3,
                "selector": {"matchLabels": sel},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {"metadata": {"labels": obj_labels, "annotations": {CONFIG_ANNOTATION: digest}},
                             "spec": spec},
            },
        },
        service(opts, obj, obj_labels, sel, table.listen_port),
    ]


INGRESS_CANARY = "nginx.ingress.kubernetes.io/canary"


def ingress_objects(opts: K8sOptions, name: str, weights: Mapping[str, int], *,
                    stable: str = "blue") -> list[Manifest]:
    """Legacy: ingress-nginx Ingresses (class ``nginx``) for clusters that still run it.

    ``<name>`` sends to the stable colour's Service; with a candidate, ``<name>-canary``
    carries ingress-nginx's canary annotations: ``canary-weight`` percent of the
    requests, and every request with ``x-deploy-color: <candidate>``, go to the
    candidate. (ingress-nginx was retired in March 2026; prefer the Gateway API route.)
    """
    shares = check_weights(weights)
    stable_color = check_color(stable)
    if stable_color not in shares:
        raise DeployValueError(f"the stable colour {stable_color} has no weight")

    def ingress(obj: str, color: str, annotations: Mapping[str, str] | None = None) -> Manifest:
        backend = {"service": {"name": colour_name(name, color), "port": {"number": opts.port}}}
        http = {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}
        rules: list[Manifest] = [{"host": h, "http": http} for h in opts.hostnames] or [{"http": http}]
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": metadata(opts, obj, labels(name, None, role="route", extra=opts.extra_labels),
                                 annotations),
            "spec": {"ingressClassName": "nginx", "rules": rules},
        }

    objects = [ingress(_check_name(name), stable_color)]
    for color, weight in shares.items():
        if color != stable_color:
            objects.append(ingress(f"{name}-canary", color, {
                INGRESS_CANARY: "true",
                f"{INGRESS_CANARY}-weight": str(weight),
                f"{INGRESS_CANARY}-by-header": PIN_HEADER,
                f"{INGRESS_CANARY}-by-header-value": color,
            }))
    return objects


# -- a whole deployment -------------------------------------------------------------------


def live_colour(weights: Mapping[str, int], stable: str) -> Color:
    """The colour taking most of the traffic (ties: ``stable``)."""
    shares = check_weights(weights)
    best = max(shares.values())
    if shares.get(check_color(stable), -1) == best:
        return check_color(stable)
    return next(check_color(c) for c, w in shares.items() if w == best)


def deployment_objects(opts: K8sOptions, name: str, model: str, versions: Mapping[str, str],
                       weights: Mapping[str, int] | None = None, *, stable: str = "blue") -> list[Manifest]:
    """Every object of a deployment, in apply order.

    ``versions``: colour -> version of each running colour; ``weights``: colour -> percent
    (default: all to ``stable``). The live colour gets ``opts.replicas`` pods, the other
    ``opts.preview_replicas``. The stable Service selects the live colour; the route is
    an HTTPRoute (``router="gateway"``), the nginx router (``"nginx"``) or nothing
    (``"service"``: blue/green by selector only).
    """
    stable_color = check_color(stable)
    versions = {check_color(c): v for c, v in versions.items()}
    if stable_color not in versions:
        raise DeployValueError(f"the stable colour {stable_color} needs a version")
    shares = check_weights(weights if weights is not None else {stable_color: 100})
    for color, weight in shares.items():
        if weight and color not in versions:
            raise DeployValueError(f"colour {color} has a weight but no version")
    live = live_colour(shares, stable_color)
    objects: list[Manifest] = []
    for color in COLORS:
        if color in versions:
            replicas = opts.replicas if color == live else opts.preview_replicas
            objects += colour_objects(opts, name, color, model, versions[color], replicas=replicas)
    objects.append(stable_service(opts, name, live))
    full: dict[str, int] = {c: shares.get(c, 0) for c in COLORS if c in versions}
    if opts.router == "gateway":
        objects.append(http_route(opts, name, full, versions=versions))
    elif opts.router == "nginx":
        objects += router_objects(opts, name, full, versions=versions, stable=stable_color)
    elif opts.router == "ingress-nginx":
        objects += ingress_objects(opts, name, full, stable=stable_color)
    return objects
