"""KubernetesRouter: a routing table made live in the cluster.

Blue/green switches flip the deployment's stable Service's selector to the colour that
takes all traffic (one PATCH; kube-proxy follows within a second or two). Canary
weights patch the ``backendRefs`` weights of a Gateway API ``HTTPRoute`` over the two
colour Services, so the canary controller drives weights through this router exactly
as it does through nginx. The HTTPRoute is used when the deployment names a Gateway
(``gateway`` option). With ``router=nginx`` the workbench's own nginx router runs in the
cluster instead (:func:`~workbench.deploy.platforms.kubernetes.routes.router_objects`: a
Deployment reading its configuration from the ConfigMap ``<name>-router``): each apply
writes the table to the ConfigMap and annotates the router's pods with its hash, which
makes the kubelet refresh the mounted files at once; the pods reload nginx in place. On
the host network its upstreams are the colours' node ports. Without either, a split is
refused with one sentence.

Order of one :meth:`KubernetesRouter.apply`, so a failure leaves traffic where it was:

1. every colour that is to take traffic is scaled to its full ``replicas`` (a candidate
   starts with ``preview_replicas``; a colour parked after a switch has 0) and waited
   for until it is available; if it never is, RouterError and nothing was flipped;
2. the stable Service's selector, then the HTTPRoute's weights (and its ``RequestMirror``
   filter, when the table mirrors a share of stable's requests to the candidate);
3. a colour that just lost all its traffic is kept up for ``scale_down_delay`` seconds
   (the annotation ``workbench.paddle.dev/scale-down-at`` on its Deployment), so a rollback
   within the delay is one flip; a detached reaper (:mod:`workbench.deploy.platforms.kubernetes.reaper`)
   scales it to 0 replicas when the delay is over, and every apply reaps what is due
   too. A rollback after that scales the old colour back up first (step 1).

Tested against an in-memory API emulator and, for the blue/green path and the
HTTPRoute it writes, a live Kubernetes 1.20 API server (tests/k8s_live/test_backend_live.py);
the nginx router in the cluster drives a canary there under load
(tests/k8s_live/test_canary_live.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from workbench.deploy.platforms.kubernetes.backend import LABEL_COLOR, LABEL_DEPLOYMENT
from workbench.deploy.platforms.kubernetes.client import ClusterError, translate
from workbench.deploy.platforms.kubernetes.color import http_route, stable_service
from workbench.deploy.platforms.kubernetes.manifests import router_name, selector
from workbench.deploy.platforms.kubernetes.options import CONFIG_ANNOTATION, PREFIX
from workbench.deploy.platforms.kubernetes.reaper import launch
from workbench.deploy.platforms.kubernetes.routes import router_objects
from workbench.errors import BackendError, RouterError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from workbench.deploy.platforms.kubernetes.backend import KubernetesBackend
    from workbench.deploy.platforms.kubernetes.client import KubeApi, Obj
    from workbench.deploy.routing import RoutingTable

__all__ = ["KubernetesRouter"]

log = logging.getLogger(__name__)

WEIGHTS = f"{PREFIX}/weights"  # on the stable Service: colours with traffic, their weights (JSON)
SCALE_DOWN_AT = f"{PREFIX}/scale-down-at"  # on a colour's Deployment: unix time
PARKED = f"{PREFIX}/parked"  # on a colour's Deployment scaled to 0 after the delay


class KubernetesRouter:
    """Routes one deployment's traffic in the cluster (see the module docstring)."""

    def __init__(self, deployment: str, backend: KubernetesBackend, *,
                 clock: Callable[[], float] = time.time, workdir: Path | None = None,
                 background: bool = True) -> None:
        self.deployment = deployment
        self.backend = backend
        self.options = backend.options
        self.clock = clock
        self.workdir = workdir  # where the background reaper logs (None: nowhere)
        self.background = background  # start a reaper for each scale-down delay

    def __repr__(self) -> str:
        gateway = self.options.gateway_name if self.options.uses_gateway else None
        return f"KubernetesRouter({self.deployment!r}, gateway={gateway!r})"

    @property
    def api(self) -> KubeApi:
        with translate(RouterError):
            return self.backend.api

    def _color_name(self, color: str) -> str:
        return self.backend.object_name(self.deployment, color)

    # -- Router --------------------------------------------------------------------------

    def apply(self, table: RoutingTable) -> None:
        weights: dict[str, int] = {c: table.weights[c] for c in table.colors}
        split = all(0 < w < 100 for w in weights.values()) and len(weights) == 2
        if split and not (self.options.uses_gateway or self.uses_nginx):
            raise RouterError(
                f"{self.deployment}: a traffic split ({_show(weights)}) needs a Gateway API HTTPRoute; "
                "give the deployment a gateway (--gateway NAME) or the nginx router (router=nginx), "
                "or switch all at once"
            )
        mirror = table.mirror_percent if table.candidate in weights else 0
        if mirror and not self.options.uses_gateway:
            raise RouterError(f"{self.deployment}: mirroring needs a Gateway API HTTPRoute; "
                              "give the deployment a gateway (--gateway NAME)")
        live = table.stable if split else max(weights, key=lambda c: weights[c])
        namespace = self.api.namespace
        with translate(RouterError):
            for color, weight in sorted(weights.items()):
                if weight > 0:
                    self._scale_up(color)
            if self.uses_nginx:
                self._apply_nginx(table)
            service = self.api.get("v1", "Service", self.deployment)
            before = _weights_of(service)
            if service is None:
                self.api.apply(stable_service(self.options, namespace, self.deployment, live))
            elif (service.get("spec") or {}).get("selector", {}).get(LABEL_COLOR) != live:
                self.api.patch("v1", "Service", self.deployment,
                               {"spec": {"selector": selector(self.deployment, live)}})
                log.info("%s: stable Service now selects %s", self.deployment, live)
            if self.options.uses_gateway:
                versions: dict[str, str] = {u.color: u.version for u in table.upstreams}
                wanted = http_route(self.options, namespace, self.deployment, weights, versions,
                                    mirror=self._mirror(table.candidate, mirror))
                wanted = self.backend.versions.fit(wanted)
                route = self.api.get(wanted["apiVersion"], "HTTPRoute", self.deployment)
                if route is None:
                    self.api.apply(wanted)
                elif (route.get("spec") or {}).get("rules") != wanted["spec"]["rules"]:
                    # one merge patch replaces the rules list: pins and weights change together
                    self.api.patch(wanted["apiVersion"], "HTTPRoute", self.deployment,
                                   {"spec": {"rules": wanted["spec"]["rules"]}})
            serving = {c: w for c, w in weights.items() if w > 0}
            if before != serving:
                self.api.patch("v1", "Service", self.deployment,
                               {"metadata": {"annotations": {WEIGHTS: json.dumps(serving, sort_keys=True)}}})
            now = self.clock()
            due = now + self.options.scale_down_delay
            parked = [c for c in sorted(before) if before[c] > 0 and weights.get(c, 0) == 0]
            for color in parked:
                self._mark(color, due)
            self.reap(now)
        if parked and self.background and self.options.scale_down_delay > 0:
            log_path = None if self.workdir is None else self.workdir / "reaper.log"
            launch(self.deployment, due, self.options.to_mapping(), log_path)

    @property
    def uses_nginx(self) -> bool:
        """Traffic goes through the workbench's nginx router in the cluster."""
        return self.options.router == "nginx"

    def _router_objects(self, table: RoutingTable) -> list[Obj]:
        """The in-cluster router's ConfigMap, Deployment and Service for ``table`` (its
        upstreams are the colours' addresses as the backend gave them), and no config hash
        in the pod template: a new table is reloaded in place, not rolled."""
        opts = replace(self.options, namespace=self.api.namespace)
        pod_table = replace(table, listen_host="0.0.0.0", listen_port=opts.router_port)
        objects = [self.backend.versions.fit(o) for o in router_objects(opts, self.deployment, pod_table)]
        objects[1]["spec"]["template"]["metadata"].pop("annotations", None)
        return objects

    def _apply_nginx(self, table: RoutingTable) -> None:
        """Write ``table`` to the router's ConfigMap; the first time, start the router and
        wait until it is available; after that, annotate its pods with the table's hash so
        the kubelet refreshes their ConfigMap volume now rather than at its next sync."""
        configmap, deployment, service = self._router_objects(table)
        name = configmap["metadata"]["name"]
        current = self.api.get("v1", "ConfigMap", name)
        changed = current is None or current.get("data") != configmap["data"]
        if changed:
            self.api.apply(configmap)
        if self.api.get("apps/v1", "Deployment", name) is None:
            self.api.apply(service)
            self.api.apply(deployment)
            try:
                self.backend.wait_ready(name, self.options.ready_timeout)
            except BackendError as exc:
                raise RouterError(f"{exc}; traffic unchanged") from exc
            return
        if changed:
            digest = hashlib.sha256(json.dumps(configmap["data"], sort_keys=True).encode()).hexdigest()[:16]
            for pod in self.api.list("v1", "Pod", labels=selector(self.deployment, role="router")):
                self.api.patch("v1", "Pod", pod["metadata"]["name"],
                               {"metadata": {"annotations": {CONFIG_ANNOTATION: digest}}})
            log.info("%s: router table %s written (%s)", self.deployment, digest, table)

    def _mirror(self, candidate: str, percent: int) -> Obj | None:
        """The HTTPRoute filter copying ``percent`` of requests to the candidate (GEP-3171)."""
        if not percent:
            return None
        ref = {"name": self._color_name(candidate), "port": self.options.port}
        return {"type": "RequestMirror", "requestMirror": {"backendRef": ref, "percent": percent}}

    @property
    def running(self) -> bool:
        """Whether the stable Service exists."""
        with translate(RouterError):
            return self.api.get("v1", "Service", self.deployment) is not None

    def stop(self) -> None:
        """Delete the stable Service and the HTTPRoute. Idempotent."""
        with translate(RouterError):
            self.api.delete("v1", "Service", self.deployment)
            if self.options.uses_gateway:
                self.api.delete(self.backend.versions.http_route, "HTTPRoute", self.deployment)
            if self.uses_nginx:
                name = router_name(self.deployment)
                for api_version, kind in (("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "ConfigMap")):
                    self.api.delete(api_version, kind, name)

    # -- keeping the old colour for a while ----------------------------------------------

    def reap(self, now: float | None = None) -> list[str]:
        """Scale to 0 every colour whose scale-down time has passed; their names."""
        now = self.clock() if now is None else now
        parked = []
        with translate(RouterError):
            for obj in self.api.list("apps/v1", "Deployment", labels={LABEL_DEPLOYMENT: self.deployment}):
                annotations = (obj.get("metadata") or {}).get("annotations") or {}
                due = annotations.get(SCALE_DOWN_AT)
                if due is None or float(due) > round(now, 3):
                    continue
                name = obj["metadata"]["name"]
                self.api.patch("apps/v1", "Deployment", name, {
                    "metadata": {"annotations": {SCALE_DOWN_AT: None, PARKED: "true"}},
                    "spec": {"replicas": 0},
                })
                log.info("%s: scaled %s down (no traffic for its delay)", self.deployment, name)
                parked.append(name)
        return parked

    def next_scale_down(self) -> float | None:
        """When the next parked colour is due (unix time), or None."""
        with translate(RouterError):
            found = self.api.list("apps/v1", "Deployment", labels={LABEL_DEPLOYMENT: self.deployment})
        times = [float(a[SCALE_DOWN_AT]) for o in found
                 if SCALE_DOWN_AT in (a := (o.get("metadata") or {}).get("annotations") or {})]
        return min(times, default=None)

    def _hpa_floor(self, name: str, replicas: int) -> None:
        """Keep the colour's HPA from scaling it below ``replicas`` (the candidate's HPA was
        rendered for its preview replicas)."""
        try:
            hpa_version = self.backend.versions.hpa
            hpa = self.api.get(hpa_version, "HorizontalPodAutoscaler", name)
            if hpa is not None and int(hpa.get("spec", {}).get("minReplicas", 1)) < replicas:
                top = max(replicas, int(hpa["spec"].get("maxReplicas", replicas)))
                self.api.patch(hpa_version, "HorizontalPodAutoscaler", name,
                               {"spec": {"minReplicas": replicas, "maxReplicas": top}})
        except ClusterError as exc:
            if exc.status not in (403, 404):  # no HPA, or no right to it: the Deployment decides
                raise

    def _mark(self, color: str, when: float) -> None:
        try:
            self.api.patch("apps/v1", "Deployment", self._color_name(color),
                           {"metadata": {"annotations": {SCALE_DOWN_AT: f"{when:.3f}"}}})
        except ClusterError as exc:
            if exc.status != 404:  # already gone (a rollback stops the candidate next)
                raise

    def _scale_up(self, color: str) -> None:
        """Give ``color`` its full replicas (and no pending scale-down) before it takes traffic."""
        name = self._color_name(color)
        obj = self.api.get("apps/v1", "Deployment", name)
        if obj is None:
            raise RouterError(f"{self.deployment}: {color} has no Deployment {name}; traffic unchanged")
        replicas = int((obj.get("spec") or {}).get("replicas", 1))
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        want = max(replicas, self.options.replicas)
        if replicas == want and not ({SCALE_DOWN_AT, PARKED} & set(annotations)):
            return
        self.api.patch("apps/v1", "Deployment", name, {
            "metadata": {"annotations": {SCALE_DOWN_AT: None, PARKED: None}},
            "spec": {"replicas": want},
        })
        self._hpa_floor(name, want)
        if replicas < want:
            log.info("%s: scaling %s to %d replicas before it takes traffic", self.deployment, name, want)
            try:
                self.backend.wait_ready(name, self.options.ready_timeout)
            except BackendError as exc:
                raise RouterError(f"{exc}; traffic unchanged") from exc


def _weights_of(service: Obj | None) -> dict[str, int]:
    if service is None:
        return {}
    text = ((service.get("metadata") or {}).get("annotations") or {}).get(WEIGHTS)
    if text:
        try:
            return {str(k): int(v) for k, v in json.loads(text).items() if int(v) > 0}
        except (ValueError, AttributeError):
            pass
    color = (service.get("spec") or {}).get("selector", {}).get(LABEL_COLOR)
    return {str(color): 100} if color else {}


def _show(weights: dict[str, int]) -> str:
    return ", ".join(f"{c} {w}%" for c, w in sorted(weights.items()))
