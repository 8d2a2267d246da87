"""Traffic on Kubernetes: the HTTPRoute, the nginx router, legacy Ingresses, and every
object of one deployment in apply order (:func:`deployment_objects`).

Pure like :mod:`.manifests`, whose per-colour objects it composes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from workbench.deploy.names import COLORS, check_color
from workbench.deploy.platforms.kubernetes.manifests import (
    Manifest,
    check_name,
    color_name,
    color_objects,
    labels,
    metadata,
    pod_spec,
    router_name,
    selector,
    service,
    stable_service,
)
from workbench.deploy.platforms.kubernetes.options import (
    CONFIG_ANNOTATION,
    PIN_HEADER,
    PRESTOP_SECONDS,
    ROUTER_CONF_DIR,
    ROUTER_WORKDIR,
    VERSION_HEADER,
    KubernetesOptions,
)
from workbench.deploy.routing import RoutingTable, Upstream, render_front, render_nginx
from workbench.errors import DeployValueError, RouterError

if TYPE_CHECKING:
    from workbench._types import Color

__all__ = [
    "INGRESS_CANARY",
    "RELOAD_LOOP",
    "check_weights",
    "cluster_routing_table",
    "deployment_objects",
    "http_route",
    "ingress_objects",
    "live_color",
    "route",
    "router_objects",
    "service_host",
]


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


def http_route(opts: KubernetesOptions, name: str, weights: Mapping[str, int], *,
               versions: Mapping[str, str] | None = None) -> Manifest:
    """A Gateway API (v1) HTTPRoute ``<name>`` splitting traffic over the colour Services.

    Like the nginx router: ``x-deploy-color: blue|green`` pins a colour, ``x-model-version:
    V`` pins the colour serving ``V`` (``versions``: colour -> version; a version both
    colours serve is not pinned), everything else is split by ``weights``.
    """
    shares = check_weights(weights)
    versions = dict(versions or {})

    def ref(color: str, weight: int | None = None) -> Manifest:
        backend: Manifest = {"group": "", "kind": "Service", "name": color_name(name, color),
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


def route(opts: KubernetesOptions, name: str, rules: list[Manifest]) -> Manifest:
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
        "metadata": metadata(opts, check_name(name),
                             labels(name, None, role="route", extra=opts.extra_labels)),
        "spec": spec,
    }


def service_host(opts: KubernetesOptions, name: str, color: str) -> str:
    """The cluster DNS name of a colour's Service."""
    return f"{color_name(name, color)}.{opts.target_namespace}.svc.cluster.local"


def cluster_routing_table(opts: KubernetesOptions, name: str, weights: Mapping[str, int],
                          versions: Mapping[str, str], *, stable: str = "blue") -> RoutingTable:
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


#: The router containers' command (``sh -c``; $1 is the nginx configuration): nginx in the
#: background, reloaded (after ``nginx -t``) whenever its configuration file changes, which
#: the kubelet makes happen when it refreshes the ConfigMap volume (at its sync, or at once
#: when the pod is updated: the live router annotates its pods); SIGTERM quits nginx
#: gracefully. Polls once a second with ``cksum``: POSIX sh, nothing else in the image.
RELOAD_LOOP = """\
conf="$1"; prefix="$(dirname "$conf")/"
nginx -p "$prefix" -c "$conf" & pid=$!
trap 'nginx -p "$prefix" -c "$conf" -s quit; wait "$pid"; exit 0' TERM INT
seen="$(cksum < "$conf")"
while kill -0 "$pid" 2>/dev/null; do
  sleep 1 & wait $!
  now="$(cksum < "$conf")"
  [ "$now" = "$seen" ] && continue
  seen="$now"
  if nginx -p "$prefix" -c "$conf" -t -q; then
    nginx -p "$prefix" -c "$conf" -s reload && echo "router: reloaded $conf"
  else
    echo "router: $conf is not valid, nginx keeps the previous one" >&2
  fi
done
wait "$pid"
"""


def router_objects(opts: KubernetesOptions, name: str, routing: RoutingTable | Mapping[str, int], *,
                   versions: Mapping[str, str] | None = None, stable: str = "blue") -> list[Manifest]:
    """The workbench's nginx router in the cluster: ``[ConfigMap, Deployment, Service]``.

    ``routing`` is a :class:`RoutingTable` or weights (colour -> percent, with ``versions``).
    The pod runs the two nginx tiers of the local router (front and router, sharing the
    router's unix socket in an emptyDir); each tier's container reloads its nginx in place
    (``nginx -s reload``: no connection dropped) when the kubelet refreshes the mounted
    ConfigMap (:data:`RELOAD_LOOP`). The ConfigMap's hash is a pod annotation too, so a
    GitOps apply of a new table rolls the pods as well. On the host network the router
    binds ``router_port`` on its node: one pod (two could not share the node's port), which
    makes way for its successor (``maxSurge`` 0) when the template changes.
    """
    table = routing if isinstance(routing, RoutingTable) else cluster_routing_table(
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
            "command": ["sh", "-c", RELOAD_LOOP, "router", f"{ROUTER_CONF_DIR}/{conf}"],
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
                "replicas": 1 if opts.host_network else 2,
                "revisionHistoryLimit": 3,
                "selector": {"matchLabels": sel},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": (
                    {"maxSurge": 0, "maxUnavailable": 1} if opts.host_network
                    else {"maxSurge": 1, "maxUnavailable": 0})},
                "template": {"metadata": {"labels": obj_labels, "annotations": {CONFIG_ANNOTATION: digest}},
                             "spec": spec},
            },
        },
        service(opts, obj, obj_labels, sel, table.listen_port),
    ]


INGRESS_CANARY = "nginx.ingress.kubernetes.io/canary"


def ingress_objects(opts: KubernetesOptions, name: str, weights: Mapping[str, int], *,
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
        backend = {"service": {"name": color_name(name, color), "port": {"number": opts.port}}}
        http = {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}
        rules: list[Manifest] = [{"host": h, "http": http} for h in opts.hostnames] or [{"http": http}]
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": metadata(opts, obj, labels(name, None, role="route", extra=opts.extra_labels),
                                 annotations),
            "spec": {"ingressClassName": "nginx", "rules": rules},
        }

    objects = [ingress(check_name(name), stable_color)]
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


def live_color(weights: Mapping[str, int], stable: str) -> Color:
    """The colour taking most of the traffic (ties: ``stable``)."""
    shares = check_weights(weights)
    best = max(shares.values())
    if shares.get(check_color(stable), -1) == best:
        return check_color(stable)
    return next(check_color(c) for c, w in shares.items() if w == best)


def deployment_objects(opts: KubernetesOptions, name: str, model: str, versions: Mapping[str, str],
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
    live = live_color(shares, stable_color)
    objects: list[Manifest] = []
    for color in COLORS:
        if color in versions:
            replicas = opts.replicas if color == live else opts.preview_replicas
            objects += color_objects(opts, name, color, model, versions[color], replicas=replicas)
    objects.append(stable_service(opts, name, live))
    full: dict[str, int] = {c: shares.get(c, 0) for c in COLORS if c in versions}
    if opts.router == "gateway":
        objects.append(http_route(opts, name, full, versions=versions))
    elif opts.router == "nginx":
        objects += router_objects(opts, name, full, versions=versions, stable=stable_color)
    elif opts.router == "ingress-nginx":
        objects += ingress_objects(opts, name, full, stable=stable_color)
    return objects
