"""KubernetesBackend: each colour a Deployment and a Service in one namespace.

``start(spec)`` server-side applies the colour's Deployment (the workbench image in
serve mode) and Service, waits until the Deployment is available (the readiness probe
on ``/v2/health/ready`` passed on every replica), logging its progress, and returns an
:class:`~workbench.deploy.backend.Instance` whose URL is the colour Service's
in-cluster address (``http://<deployment>-<colour>.<namespace>.svc:8000``), or, for a
workbench outside the cluster, ``node_address`` and the Service's NodePort; on the host
network (``host_network``), the node's address (``node_address``, else the pod's host
IP) and the colour's own port (blue ``port``, green ``port + 1``). A colour
that never becomes ready (a crash loop, an image that cannot be pulled, an
unschedulable pod, the progress deadline, or ``ready_timeout``) raises BackendError
naming the reason, and its objects are deleted; only the candidate colour's objects
are ever touched, so the stable colour, the stable Service and the HTTPRoute stay as
they were. ``stop`` deletes the colour's objects.

A colour started while the other colour of the deployment runs is a candidate: it
starts with ``preview_replicas`` (default 1) so that a blue/green rollout does not
double the GPUs; :class:`~workbench.deploy.platforms.kubernetes.router.KubernetesRouter` scales
it to ``replicas`` before it takes traffic.

Traffic is not the backend's business: the router flips the stable Service's selector
and the HTTPRoute's weights. The ``kubernetes`` client is imported only when a backend
is made (the ``k8s`` extra).

Fitting the cluster: the HPA, PDB and HTTPRoute are written in the versions the
cluster's discovery says it serves (:mod:`~workbench.deploy.platforms.kubernetes.capabilities`:
``autoscaling/v2beta2`` and ``policy/v1beta1`` on Kubernetes 1.20). Writes are
server-side applies by the ``workbench`` field manager (conflicts: see
:mod:`~workbench.deploy.platforms.kubernetes.client`). Waiting for a colour watches its
Deployment (no polling) within one total deadline, ``ready_timeout``, looking at its
pods between changes.

Clusters without a pod network or a storage provisioner (bare metal, edge, the live test
cluster): ``host_network`` runs the serving pods in the node's network namespace, and
``models_path`` mounts the model repository from a directory on the node (read-only)
instead of a PersistentVolumeClaim. The workbench's own nginx router on a machine that
reaches the node then routes to the colours (``router="process"``).

Tested against an in-memory API emulator and a live Kubernetes 1.20 cluster with a real
kubelet (tests/k8s_live/test_backend_live.py, tests/k8s_live/test_serving_live.py: the
rendered serving pods, ``workbench serve`` of a real model, under load).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from workbench.deploy.backend import Backend, Instance, InstanceSpec, Readiness
from workbench.deploy.platforms.kubernetes import options
from workbench.deploy.platforms.kubernetes.capabilities import ApiVersions
from workbench.deploy.platforms.kubernetes.client import ApplyConflict, ClusterError, KubeApi, translate
from workbench.deploy.platforms.kubernetes.color import admin_secret_name, live_color_objects
from workbench.deploy.platforms.kubernetes.options import KubernetesOptions
from workbench.deploy.platforms.kubernetes.readiness import pod_problems, rollout_progress
from workbench.errors import BackendError

if TYPE_CHECKING:
    from collections.abc import Callable

    from workbench._types import Color
    from workbench.deploy.platforms.kubernetes.client import Obj

__all__ = ["KubernetesBackend"]

log = logging.getLogger(__name__)

SERVE_PORT = 8000  # the container's and the colour Service's port
#: The renderer's label and annotation keys.
LABEL_DEPLOYMENT = options.DEPLOYMENT_LABEL
LABEL_COLOR = options.COLOR_LABEL
MODEL_ANNOTATION = options.MODEL_ANNOTATION
VERSION_ANNOTATION = options.VERSION_ANNOTATION
#: What a colour is made of, in the order it is deleted (versions as rendered; fitted to
#: the cluster by :meth:`KubernetesBackend.fit`).
COLOR_KINDS = (("autoscaling/v2", "HorizontalPodAutoscaler"), ("policy/v1", "PodDisruptionBudget"),
                ("apps/v1", "Deployment"), ("v1", "Service"))


class KubernetesBackend(Backend):
    """Runs each colour as a Deployment and a Service (see the module docstring)."""

    name = "kubernetes"

    def __init__(self, *, api: KubeApi | None = None,
                 progress: Callable[[str], None] | None = None, **options: Any) -> None:
        self.options = KubernetesOptions.from_mapping(options)
        self._api = api
        self._versions: ApiVersions | None = None
        self.progress = progress  # called with a line at each change while waiting

    def __repr__(self) -> str:
        return f"KubernetesBackend(namespace={self.options.namespace!r}, image={self.options.image!r})"

    @property
    def port(self) -> int:
        """The colour Services' (and the stable Service's) port."""
        return self.options.port

    @property
    def api(self) -> KubeApi:
        if self._api is None:
            with translate(BackendError):
                self._api = KubeApi.connect(context=self.options.context,
                                            config_file=self.options.kubeconfig,
                                            namespace=self.options.namespace)
        return self._api

    @property
    def versions(self) -> ApiVersions:
        """The API versions the cluster serves for the kinds written in several (discovery,
        read once)."""
        if self._versions is None:
            with translate(BackendError):
                self._versions = ApiVersions.from_served(self.api.served_versions())
        return self._versions

    def version_of(self, api_version: str, kind: str) -> str:
        """``api_version`` as rendered for ``kind``, fitted to the cluster."""
        return str(self.versions.fit({"apiVersion": api_version, "kind": kind})["apiVersion"])

    # -- names and objects ---------------------------------------------------------------

    @staticmethod
    def object_name(deployment: str, color: Color | str) -> str:
        """The name of a colour's Deployment and Service."""
        return f"{deployment}-{color}"

    def service_host(self, deployment: str, color: Color | str) -> str:
        """The in-cluster host name of a colour's Service."""
        return f"{self.object_name(deployment, color)}.{self.api.namespace}.svc"

    def stable_host(self, deployment: str) -> str:
        """The in-cluster host name of the deployment's stable Service (its public address)."""
        return f"{deployment}.{self.api.namespace}.svc"

    def public_address(self, deployment: str) -> tuple[str, int]:
        """Where clients reach the deployment: the stable Service's in-cluster name, or with
        ``router=nginx`` the router's Service, or on the host network the router's port on
        ``node_address`` (which must then be given: the router's pod does not exist yet)."""
        if self.options.router != "nginx":
            return self.stable_host(deployment), SERVE_PORT
        if not self.options.host_network:
            return f"{deployment}-router.{self.api.namespace}.svc", self.options.router_port
        if not self.options.node_address:
            raise BackendError("the nginx router on the host network needs node_address "
                               "(the node whose router_port clients reach)")
        return self.options.node_address, self.options.router_port

    def address(self, deployment: str, color: Color | str) -> tuple[str, int]:
        """Where the workbench reaches a colour: its Service's in-cluster name and port;
        with ``node_address``, that node and the Service's NodePort; on the host network,
        the node (``node_address`` or the pod's host IP) and the colour's port."""
        if self.options.host_network:
            return self._node_of(deployment, color), self.options.color_port(color)
        if not self.options.node_address:
            return self.service_host(deployment, color), self.port
        with translate(BackendError):
            service = self.api.get("v1", "Service", self.object_name(deployment, color)) or {}
        ports = (service.get("spec") or {}).get("ports") or [{}]
        node_port = ports[0].get("nodePort")
        if not node_port:
            raise BackendError(f"Service {self.object_name(deployment, color)} has no NodePort")
        return self.options.node_address, int(node_port)

    def _node_of(self, deployment: str, color: Color | str) -> str:
        """The address of the node a host-network colour runs on (its ready pod's first)."""
        if self.options.node_address:
            return self.options.node_address
        labels = {LABEL_DEPLOYMENT: deployment, LABEL_COLOR: str(color)}
        with translate(BackendError):
            pods = self.api.list("v1", "Pod", labels=labels)
        live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
        ready = [p for p in live if _pod_ready(p)]
        for pod in [*ready, *live]:
            host = (pod.get("status") or {}).get("hostIP")
            if host:
                return str(host)
        raise BackendError(f"{self.object_name(deployment, color)} has no pod on a node yet; "
                           "give node_address to name the node")

    def objects(self, spec: InstanceSpec, replicas: int) -> list[Obj]:
        """The admin token's Secret, the colour's Deployment, Service, HPA and PDB, as
        :mod:`workbench.deploy.platforms.kubernetes.manifests` renders them."""
        objects = live_color_objects(spec, self.options, self.api.namespace, replicas=replicas)
        return [self.versions.fit(obj) for obj in objects]

    # -- Backend -------------------------------------------------------------------------

    def start(self, spec: InstanceSpec) -> Instance:
        name = self.object_name(spec.deployment, spec.color)
        other = "green" if spec.color == "blue" else "blue"
        with translate(BackendError):
            candidate = self.api.get("apps/v1", "Deployment",
                                     self.object_name(spec.deployment, other)) is not None
        replicas = self.options.preview_replicas if candidate else self.options.replicas
        replicas = max(1, min(replicas, self.options.replicas))
        try:
            with translate(BackendError):
                self._wait_deleted(name, self.options.ready_timeout)
                for obj in self.objects(spec, replicas):
                    self.api.apply(obj)
            self._say(f"{name}: applied ({spec.model} {spec.version}, {replicas} replica(s)"
                      f"{', candidate' if candidate else ''})")
            self.wait_ready(name, self.options.ready_timeout)
        except BackendError as exc:
            if isinstance(exc.__cause__, ApplyConflict):  # someone else's object: leave it be
                raise
            with contextlib.suppress(ClusterError):  # nothing of this colour stays behind
                self._delete_color(name)
            raise
        host, port = self.address(spec.deployment, spec.color)
        ready = replace(spec, host=host, port=port)
        return Instance(spec=ready, backend=self.name, ref=f"{self.api.namespace}/{name}",
                        labels={LABEL_DEPLOYMENT: spec.deployment, LABEL_COLOR: spec.color,
                                "replicas": str(replicas)})

    def _wait_deleted(self, name: str, timeout: float) -> None:
        """Wait (watching) until the colour's Deployment and Service of a previous start,
        still being deleted (foreground: their pods and endpoints go first), are gone: an
        apply meanwhile would only update the object being deleted."""
        deadline = time.monotonic() + timeout
        for api_version, kind in (("apps/v1", "Deployment"), ("v1", "Service")):
            obj = self.api.get(api_version, kind, name)
            meta = (obj or {}).get("metadata") or {}
            if not meta.get("deletionTimestamp"):
                continue
            self._say(f"{name}: waiting until the previous {kind} is deleted")
            changes = self.api.watch(api_version, kind, name, deadline=deadline,
                                     since=str(meta.get("resourceVersion") or ""))
            if not any(change is None for change in changes):
                raise BackendError(f"{name}: the previous {kind} was still being deleted after {timeout:g}s")

    def wait_ready(self, name: str, timeout: float) -> None:
        """Wait until Deployment ``name`` is available, watching it (no polling) for at most
        ``timeout`` seconds in all; BackendError naming why it is not. Its pods are looked
        at after each change and whenever the watch is quiet (every few seconds), so a
        crash loop or an image that cannot be pulled ends the wait early."""
        deadline = time.monotonic() + timeout
        last = ""
        with translate(BackendError):
            deployment: Obj | None = self.api.get("apps/v1", "Deployment", name)
            since = str(((deployment or {}).get("metadata") or {}).get("resourceVersion") or "")
            changes = self.api.watch("apps/v1", "Deployment", name, deadline=deadline, since=since,
                                     slice_seconds=min(5.0, max(1.0, timeout)))
            while True:
                if deployment is None:
                    raise BackendError(f"{name} was deleted while it was starting")
                progress = rollout_progress(deployment)
                if progress.ready:
                    self._say(f"{name}: ready ({progress.message})")
                    return
                fatal, warnings = self._problems(deployment)
                if progress.message != last:
                    self._say(f"{name}: {progress.message}")
                    last = progress.message
                if fatal or progress.failed:
                    why = "; ".join(fatal) or progress.message
                    seen = f"; events: {' | '.join(warnings)}" if warnings else ""
                    raise BackendError(f"{name} did not become ready: {why}{seen}")
                change = next(changes, _DEADLINE)
                if change is _DEADLINE:
                    seen = f"; events: {' | '.join(warnings)}" if warnings else ""
                    raise BackendError(f"{name} did not become ready: not ready within {timeout:g}s "
                                       f"({progress.message}){seen}")
                if change is None:
                    deployment = None
                elif isinstance(change, dict) and change:
                    deployment = change

    def _problems(self, deployment: Obj) -> tuple[list[str], list[str]]:
        selector = (deployment.get("spec") or {}).get("selector", {}).get("matchLabels") or {}
        pods = self.api.list("v1", "Pod", labels=selector)
        events = self.api.list("v1", "Event") if pods else []
        return pod_problems(pods, events)

    def stop(self, instance: Instance, timeout: float = 10.0) -> None:
        """Delete the colour's objects (and, with the last colour, the instances'
        admin-token Secret)."""
        deployment = instance.spec.deployment
        with translate(BackendError):
            self._delete_color(self.object_name(deployment, instance.spec.color))
            if not self._colors(deployment):
                self.api.delete("v1", "Secret", admin_secret_name(deployment))

    def _colors(self, deployment: str) -> list[Obj]:
        """The deployment's colour Deployments (not its nginx router, if it has one)."""
        found = self.api.list("apps/v1", "Deployment", labels={LABEL_DEPLOYMENT: deployment})
        return [o for o in found if ((o.get("metadata") or {}).get("labels") or {}).get(LABEL_COLOR)]

    def _delete_color(self, name: str) -> None:
        for api_version, kind in COLOR_KINDS:
            self.api.delete(self.version_of(api_version, kind), kind, name)

    def _color_deployment(self, instance: Instance) -> tuple[str, Obj | None]:
        """The name of ``instance``'s colour Deployment and the object (None if gone)."""
        name = self.object_name(instance.spec.deployment, instance.spec.color)
        with translate(BackendError):
            return name, self.api.get("apps/v1", "Deployment", name)

    def is_running(self, instance: Instance) -> bool:
        """The Deployment exists and has an available replica (or was scaled down on purpose)."""
        _, deployment = self._color_deployment(instance)
        if deployment is None:
            return False
        wanted, available = _replicas(deployment)
        return wanted == 0 or available > 0  # 0: parked by the router's scale-down delay

    def readiness(self, instance: Instance) -> Readiness:
        """Ready when every replica the Deployment wants is available: the pods' own
        readiness probes decide, not an HTTP probe from here (the in-cluster Service
        name does not resolve outside the cluster)."""
        name, deployment = self._color_deployment(instance)
        if deployment is None:
            return Readiness(False, False, f"Deployment {name} is gone")
        wanted, available = _replicas(deployment)
        if wanted == 0:  # parked by the router's scale-down delay
            return Readiness(True, False, "scaled to zero while it takes no traffic")
        if available >= wanted:
            return Readiness(True, True)
        with translate(BackendError):
            fatal, _ = self._problems(deployment)
        why = "; ".join([f"{available} of {wanted} replicas available", *fatal])
        return Readiness(available > 0, False, why)

    def logs(self, instance: Instance, tail: int = 200) -> str:
        labels = {LABEL_DEPLOYMENT: instance.spec.deployment, LABEL_COLOR: instance.spec.color}
        with translate(BackendError):
            pods = self.api.list("v1", "Pod", labels=labels)
            return "".join(self.api.pod_log(p["metadata"]["name"], tail) for p in pods[:1])

    def find(self, deployment: str) -> list[Instance]:
        with translate(BackendError):
            found = self._colors(deployment)
        instances = []
        for obj in found:
            labels = (obj.get("metadata") or {}).get("labels") or {}
            annotations = (obj.get("metadata") or {}).get("annotations") or {}
            color = labels.get(LABEL_COLOR)
            if color not in ("blue", "green"):
                continue
            try:
                host, port = self.address(deployment, color)
            except BackendError:
                host, port = self.service_host(deployment, color), self.port
            spec = InstanceSpec(
                deployment=deployment, color=color, model=annotations.get(MODEL_ANNOTATION, "?"),
                version=annotations.get(VERSION_ANNOTATION, "?"), repo=options.MODELS_DIR, port=port,
                host=host,
            )
            instances.append(Instance(spec=spec, backend=self.name,
                                      ref=f"{self.api.namespace}/{obj['metadata']['name']}",
                                      labels=dict(labels)))
        return instances

    def _say(self, line: str) -> None:
        log.info("%s", line)
        if self.progress is not None:
            self.progress(line)


_DEADLINE = object()  # the watch ended: the deadline passed


def _pod_ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _replicas(deployment: Obj) -> tuple[int, int]:
    """A Deployment's wanted replicas and how many of them are available."""
    wanted = int((deployment.get("spec") or {}).get("replicas", 1))
    return wanted, int((deployment.get("status") or {}).get("availableReplicas", 0))
