"""How a deployment runs on Kubernetes: one options type for the renderer and the live backend.

:class:`KubernetesOptions` is what :mod:`.manifests` renders from (``workbench deploy export``)
and what :class:`~.backend.KubernetesBackend` is made with. The backend gets its options as
a mapping of strings (CLI values, a deployment's persisted ``backend_options``) through
:meth:`KubernetesOptions.from_mapping`, which keeps the JSON keys those were always written
with (``pvc``, ``gateway``: aliases of :attr:`~KubernetesOptions.models_claim` and
:attr:`~KubernetesOptions.gateway_name`) and the live backend's defaults (one replica; the
stable Service's selector as the router unless a Gateway is named). The label and
annotation keys every object carries are here too, so the backend, the router and the
renderer share one spelling.
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
    "KubernetesOptions",
    "check_dns_label",
    "check_positive",
]

# the live backend's defaults where the renderer's (for exports) differ, and the JSON keys
# (CLI option names, persisted backend options) that name a field differently
LIVE_REPLICAS = 1
ALIASES: Mapping[str, str] = {"pvc": "models_claim", "gateway": "gateway_name"}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")

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
class KubernetesOptions:
    """How a deployment runs on Kubernetes (everything but the model and its versions).

    The rendering fields come first; the live backend's own (where the cluster is, how
    long to wait) last. Every field may be given as a string through :meth:`from_mapping`.
    """

    namespace: str | None = None  # None: the kube context's namespace live, ``default`` in exports
    image: str = "paddle-workbench:latest"
    image_pull_policy: str = "IfNotPresent"
    models_claim: str = "workbench-models"  # PVC holding the model repository (mounted read-only)
    # the model repository as a directory on every node (hostPath, read-only) instead of a PVC:
    # clusters without a storage provisioner (bare metal, edge), the repository synced to each node
    models_path: str | None = None
    port: int = 8000
    router_port: int = ROUTER_PORT  # the nginx router's port (router="nginx")
    # pods in the node's network namespace (no CNI plugin, kube-proxy or DNS needed): each
    # colour binds its own port on the node's address (blue ``port``, green ``port + 1``)
    host_network: bool = False
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
    # -- the live backend ---------------------------------------------------------------
    context: str | None = None  # None: the kubeconfig's current context
    kubeconfig: str | None = None  # None: $KUBECONFIG or ~/.kube/config, else in-cluster
    ready_timeout: float = 300.0  # seconds a colour may take to become available
    scale_down_delay: float = 30.0  # seconds a colour that lost its traffic stays up
    node_address: str | None = None  # reach colours at this node (NodePorts, or host-network ports)

    def __post_init__(self) -> None:
        if self.namespace is not None:
            check_dns_label(self.namespace, "namespace")
        check_dns_label(self.models_claim, "PVC name")
        check_dns_label(self.gateway_name, "Gateway name")
        if self.gateway_namespace is not None:
            check_dns_label(self.gateway_namespace, "Gateway namespace")
        if self.admin_token_secret is not None:
            check_dns_label(self.admin_token_secret, "Secret name")
        if self.service_account is not None:
            check_dns_label(self.service_account, "ServiceAccount name")
        if self.models_path is not None and (not isinstance(self.models_path, str)
                                             or not self.models_path.startswith("/")):
            raise DeployValueError(f"the models path must be an absolute directory on the nodes, "
                                   f"not {self.models_path!r}")
        if not isinstance(self.image, str) or not _IMAGE.match(self.image):
            raise DeployValueError(f"invalid image reference {self.image!r}")
        if self.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise DeployValueError(
                f"image pull policy must be Always, IfNotPresent or Never, not {self.image_pull_policy!r}"
            )
        check_port(self.port)
        if self.host_network:
            check_port(self.port + 1, "port + 1 (green's port on the host network)")
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
        if isinstance(self.ready_timeout, bool) or not isinstance(self.ready_timeout, (int, float)) \
                or self.ready_timeout <= 0:
            raise DeployValueError(
                f"ready_timeout must be a positive number of seconds, not {self.ready_timeout!r}")
        if isinstance(self.scale_down_delay, bool) or not isinstance(self.scale_down_delay, (int, float)) \
                or self.scale_down_delay < 0:
            raise DeployValueError(
                f"scale_down_delay must be a non-negative number of seconds, not {self.scale_down_delay!r}")

    @property
    def device(self) -> str:
        """What ``workbench serve --device`` gets inside the pod (it sees only its own GPUs)."""
        return "gpu:0" if self.gpus else "cpu"

    @property
    def termination_grace(self) -> int:
        """Seconds Kubernetes waits after preStop starts: preStop, the server's drain, a margin."""
        return PRESTOP_SECONDS + self.graceful_timeout + 10

    @property
    def target_namespace(self) -> str:
        """The namespace objects are written in (``default`` when none was named)."""
        return self.namespace or "default"

    @property
    def uses_gateway(self) -> bool:
        """Traffic splits go through a Gateway API HTTPRoute."""
        return self.router == "gateway"

    def color_port(self, color: str) -> int:
        """The port a colour's server listens on: ``port``, and on the host network green
        one above it (both colours share the node's ports)."""
        return self.port + 1 if self.host_network and color == "green" else self.port

    # -- as strings: the CLI's values and a deployment's persisted backend options ------

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> KubernetesOptions:
        """Options from strings (or values) as the live backend takes them; unknown keys are
        refused by name. ``pvc`` and ``gateway`` are the JSON keys of ``models_claim`` and
        ``gateway_name``; without ``router``, a named gateway means ``gateway``, else
        ``service``; without ``replicas``, one; without ``hpa_max``, at least 4."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in options.items():
            if value is None:
                continue
            name = ALIASES.get(key, key)
            if name not in known:
                names = sorted({*known, *ALIASES})
                raise DeployValueError(
                    f"unknown kubernetes backend option {key!r}; known: {', '.join(names)}")
            values[name] = _parse(name, str(known[name].type), value)
        if "router" not in values:
            values["router"] = "gateway" if "gateway_name" in values else "service"
        values.setdefault("replicas", LIVE_REPLICAS)
        values.setdefault("hpa_max", max(values["replicas"], cls.hpa_max))
        return cls(**values)

    def to_mapping(self) -> dict[str, Any]:
        """The options as JSON values, every field named (``from_mapping`` reads them back)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else (
                dict(value) if isinstance(value, Mapping) else value)
        return out



def _parse(name: str, kind: str, value: Any) -> Any:
    """``value`` (a string from the CLI or the state, or a value) as field ``name`` of type ``kind``."""
    try:
        if kind.startswith("bool"):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in (*_TRUE, *_FALSE):
                raise ValueError(value)
            return text in _TRUE
        if kind.startswith("int"):
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind.startswith("float"):
            return float(value)
        if kind.startswith("tuple"):
            items = value if isinstance(value, (list, tuple)) else str(value).split(",")
            return tuple(str(v).strip() for v in items if str(v).strip())
        if kind.startswith("Mapping"):
            if isinstance(value, Mapping):
                return {str(k): str(v) for k, v in value.items()}
            pairs = [p.split("=", 1) for p in str(value).split(",") if p.strip()]
            return {k.strip(): v.strip() for k, v in pairs}
    except ValueError:
        what = "true or false" if kind.startswith("bool") else "a number" if kind[:3] in ("int", "flo") \
            else "KEY=VALUE pairs"
        raise DeployValueError(f"{name} must be {what}, not {value!r}") from None
    return str(value)
