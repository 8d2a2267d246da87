"""How a deployment runs on Kubernetes: the options of the renderer and of the live backend.

:class:`K8sOptions` is what :mod:`.manifests` renders from (``workbench deploy export``);
:class:`KubernetesOptions` is what :class:`~.backend.KubernetesBackend` is made with (CLI
values and a deployment's state, all strings), translated into the former by
:func:`~.colour.render_options`. The label and annotation keys every object carries are here
too, so the backend, the router and the renderer share one spelling.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from workbench.deploy.names import check_port
from workbench.errors import DeployValueError

__all__ = [
    "COLOR_LABEL",
    "DEPLOYMENT_LABEL",
    "PREFIX",
    "ROLE_LABEL",
    "K8sOptions",
    "KubernetesOptions",
    "check_dns_label",
    "check_positive",
]

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


def check_positive(value: int, what: str, minimum: int = 1) -> None:
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
        check_positive(self.gpus, "gpus", 0)
        check_positive(self.workers, "workers")
        check_positive(self.replicas, "replicas")
        check_positive(self.preview_replicas, "preview replicas")
        check_positive(self.hpa_max, "HPA maximum")
        if self.hpa_max < self.replicas:
            raise DeployValueError(f"HPA maximum ({self.hpa_max}) is below replicas ({self.replicas})")
        check_positive(self.hpa_cpu_percent, "HPA CPU target")
        check_positive(self.graceful_timeout, "graceful timeout", 0)
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
        check_positive(self.run_as_user, "run-as user")  # never 0: the pods run as non-root
        check_positive(self.run_as_group, "run-as group", 0)
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


@dataclass(frozen=True)
class KubernetesOptions:
    """Where and how colours run; every field may be given as a string (the CLI, the state)."""

    namespace: str | None = None  # None: the kube context's namespace
    context: str | None = None  # None: the kubeconfig's current context
    kubeconfig: str | None = None  # None: $KUBECONFIG or ~/.kube/config, else in-cluster
    image: str = "paddle-workbench:latest"
    pvc: str | None = None  # the model repository's PersistentVolumeClaim (mounted read-only)
    gpus: int = 0  # nvidia.com/gpu per replica
    replicas: int = 1  # replicas of a colour that takes traffic
    preview_replicas: int = 1  # replicas of a candidate before it takes traffic
    ready_timeout: float = 300.0  # seconds a colour may take to become available
    scale_down_delay: float = 30.0  # seconds a colour that lost its traffic stays up
    gateway: str | None = None  # the Gateway an HTTPRoute attaches to (canary weights)
    node_address: str | None = None  # reach colours at this node's NodePorts (workbench outside)

    def __post_init__(self) -> None:
        for name in ("gpus", "replicas", "preview_replicas"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise DeployValueError(f"{name} must be a non-negative integer, not {value!r}")
        if self.replicas < 1:
            raise DeployValueError(f"replicas must be at least 1, not {self.replicas}")
        if self.ready_timeout <= 0 or self.scale_down_delay < 0:
            raise DeployValueError("ready_timeout must be positive and scale_down_delay not negative")

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> KubernetesOptions:
        """Options from strings (or values); unknown keys are refused by name."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in options.items():
            if value is None:
                continue
            if key not in known:
                raise DeployValueError(
                    f"unknown kubernetes backend option {key!r}; known: {', '.join(sorted(known))}")
            kind = str(known[key].type)
            try:
                if kind.startswith("int"):
                    values[key] = int(value)
                elif kind.startswith("float"):
                    values[key] = float(value)
                else:
                    values[key] = str(value)
            except ValueError:
                raise DeployValueError(f"{key} must be a number, not {value!r}") from None
        return cls(**values)
