"""A thin, typed-by-dict door to the Kubernetes API through the official client.

Every object the workbench sends or reads is a plain dict (what the manifest renderer
returns, what ``kubectl get -o json`` prints), so one :class:`KubeApi` serves every kind
(Deployment, Service, HTTPRoute, ConfigMap, Lease ...) by its REST path. The official
``kubernetes`` package does the parts worth not writing again: kubeconfig contexts,
in-cluster service-account credentials, TLS, auth plugins. It is imported only here, and
only when a :class:`KubeApi` is made, so ``workbench --help`` never loads it.

Writes are server-side apply (``application/apply-patch+yaml``, field manager
``workbench``), merge patches, or replaces that carry the object's ``resourceVersion``
(optimistic concurrency: a stale one gets 409 Conflict). API failures become
:class:`ClusterError` with one sentence naming the call and the server's reason;
callers re-raise them as their own seam's error.

Conflicts of an apply. An apply is first sent unforced. When the server answers 409
(a field the apply sets is owned by another field manager: ``kubectl edit``, ``kubectl
scale``, the HPA controller, another tool), the object decides: if it carries the
workbench's ``app.kubernetes.io/managed-by: workbench`` label, the workbench made it and
owns it, so the apply is repeated with ``force=true`` and takes the fields back (logged
as a warning naming the fields); otherwise the object is someone else's, and the apply
fails with :class:`ApplyConflict` naming the fields and their managers — the workbench
never overwrites what it did not make.

Waiting. :meth:`KubeApi.watch` streams an object's changes (``?watch=true`` with a
``metadata.name`` field selector, from the ``resourceVersion`` just read) instead of
polling, each request bounded by ``timeoutSeconds`` and the caller's total deadline.
:meth:`KubeApi.served_versions` is the cluster's discovery (``/api``, ``/apis``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from workbench.errors import ClusterError, DeployError, MissingDependencyError

if TYPE_CHECKING:
    from collections.abc import Mapping

log = logging.getLogger(__name__)

__all__ = ["FIELD_MANAGER", "MANAGED_BY", "ApiError", "ApplyConflict", "ClusterError", "KubeApi", "Obj",
           "translate"]

Obj = dict[str, Any]

FIELD_MANAGER = "workbench"
#: The label (and value) on every object the workbench makes: those it may force-apply.
MANAGED_BY = ("app.kubernetes.io/managed-by", "workbench")


class ApiError(ClusterError):
    """An error answer of the API server; ``detail``: the server's own message."""

    def __init__(self, message: str, status: int = 0, reason: str = "", detail: str = "") -> None:
        super().__init__(message, status, reason)
        self.detail = detail


class ApplyConflict(ApiError):
    """An apply would take fields another field manager owns, on an object the
    workbench did not make."""

#: Plural resource names of the kinds the workbench touches (the REST path's last part).
PLURALS: Mapping[str, str] = {
    "ConfigMap": "configmaps",
    "Deployment": "deployments",
    "Endpoints": "endpoints",
    "Event": "events",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "HTTPRoute": "httproutes",
    "Lease": "leases",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Pod": "pods",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "Secret": "secrets",
    "Service": "services",
    "ServiceAccount": "serviceaccounts",
}

_VERBS = {"GET": "read", "POST": "create", "PUT": "replace", "PATCH": "patch", "DELETE": "delete"}


@contextmanager
def translate(error: type[DeployError]) -> Iterator[None]:
    """Re-raise a :class:`ClusterError` as ``error`` (the caller's seam), same sentence."""
    try:
        yield
    except ClusterError as exc:
        raise error(str(exc)) from exc


def path_of(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    """The REST path of a kind (and object) in a namespace."""
    group = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    plural = PLURALS.get(kind, kind.lower() + "s")
    where = f"/namespaces/{namespace}" if namespace else ""
    return f"{group}{where}/{plural}" + (f"/{name}" if name else "")


def describe_error(status: int, body: bytes | str | None, verb: str, what: str) -> ApiError:
    """One sentence for an API error response (a ``Status`` object, usually)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    reason, message = "", text.strip()[:300]
    try:
        data = json.loads(text)
        reason = str(data.get("reason", ""))
        message = str(data.get("message", message))
    except (ValueError, AttributeError):
        pass
    lead = f"the Kubernetes API refused to {verb} {what}"
    if status == 401:
        hint = "unauthorized; the credentials of the kube context are missing or expired"
    elif status == 403:
        hint = f"forbidden ({message}); the context's user lacks the RBAC permission"
    elif status == 404:
        hint = f"not found ({message})"
    elif status == 409:
        hint = f"conflict ({message}); it was changed by someone else meanwhile, try again"
    elif status == 422:
        hint = f"the object is invalid ({message})"
    else:
        hint = f"HTTP {status} {reason} ({message})"
    return ApiError(f"{lead}: {hint}", status, reason, message)


class KubeApi:
    """Calls on one namespace of one cluster; objects in and out are dicts."""

    def __init__(self, api_client: Any, namespace: str, *, context: str | None = None,
                 timeout: float = 30.0) -> None:
        self._client = api_client
        self.namespace = namespace
        self.context = context
        self.timeout = timeout
        self._served: frozenset[str] | None = None

    def __repr__(self) -> str:
        return f"KubeApi(server={self.server!r}, namespace={self.namespace!r})"

    @property
    def server(self) -> str:
        return str(self._client.configuration.host)

    @classmethod
    def connect(
        cls,
        *,
        context: str | None = None,
        config_file: str | None = None,
        namespace: str | None = None,
        timeout: float = 30.0,
    ) -> KubeApi:
        """Connect as ``kubectl`` would: the kubeconfig (``config_file``, ``$KUBECONFIG``,
        ``~/.kube/config``) and its ``context`` (its current one if None), or the pod's
        service account when running inside the cluster with no kubeconfig.

        ``namespace``: None takes the context's namespace, else ``default``.
        """
        try:
            import kubernetes.client
            import kubernetes.config
        except ModuleNotFoundError as exc:
            raise MissingDependencyError("kubernetes", "k8s") from exc
        kclient: Any = kubernetes.client  # the package's config helpers are untyped
        kconfig: Any = kubernetes.config
        configuration = kclient.Configuration()
        current_ns = None
        explicit = config_file is not None or bool(os.environ.get("KUBECONFIG"))
        # read $KUBECONFIG now: the client reads it once, when first imported
        config_file = config_file or os.environ.get("KUBECONFIG") or None
        try:
            kconfig.load_kube_config(config_file=config_file, context=context,
                                     client_configuration=configuration, persist_config=False)
            _, active = kconfig.list_kube_config_contexts(config_file)
            if context is not None:
                contexts, _ = kconfig.list_kube_config_contexts(config_file)
                active = next((c for c in contexts if c.get("name") == context), active)
            current_ns = (active or {}).get("context", {}).get("namespace")
        except kconfig.ConfigException as exc:
            if explicit or context is not None:
                raise ClusterError(f"cannot use the kube config: {exc}") from exc
            try:
                kconfig.load_incluster_config(client_configuration=configuration)
            except kconfig.ConfigException as exc2:
                raise ClusterError(
                    "no Kubernetes cluster configured: no kubeconfig (set KUBECONFIG or "
                    f"--kubeconfig) and not inside a pod ({exc2})"
                ) from exc2
            current_ns = _incluster_namespace()
        api_client = kclient.ApiClient(configuration)
        return cls(api_client, namespace or current_ns or "default", context=context,
                   timeout=timeout)

    def close(self) -> None:
        self._client.close()

    # -- the REST calls ------------------------------------------------------------------

    def request(self, method: str, path: str, **options: Any) -> Obj:
        """One call (options as :meth:`_call`); the decoded JSON answer."""
        data = self._call(method, path, **options)
        if not data:
            return {}
        decoded: Obj = json.loads(data)
        return decoded

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str | None = None,
        what: str = "",
    ) -> bytes:
        """One call; the answer's bytes. ClusterError on any failure."""
        headers = {"Accept": "application/json, */*"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        verb = _VERBS.get(method, method.lower())
        what = what or path
        try:
            serialized = self._client.param_serialize(
                method=method,
                resource_path=path,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self._client.call_api(*serialized, _request_timeout=self.timeout)
            data = response.read()
        except Exception as exc:  # urllib3, ssl, socket: the API could not be reached
            if isinstance(exc, ClusterError):
                raise
            status = int(getattr(exc, "status", 0) or 0)
            if status:
                raise describe_error(status, getattr(exc, "body", None), verb, what) from exc
            raise ClusterError(
                f"cannot reach the Kubernetes API at {self.server} to {verb} {what}: {exc}"
            ) from exc
        if not 200 <= response.status < 300:
            raise describe_error(response.status, data, verb, what)
        return bytes(data or b"")

    def pod_log(self, pod: str, tail: int = 200) -> str:
        """The last ``tail`` lines of a pod's (first container's) log."""
        data = self._call("GET", path_of("v1", "Pod", self.namespace, pod) + "/log",
                          query={"tailLines": str(tail)}, what=f"the log of pod {pod}")
        return data.decode("utf-8", "replace")

    def get(self, api_version: str, kind: str, name: str) -> Obj | None:
        """The object, or None if it does not exist."""
        try:
            return self.request("GET", path_of(api_version, kind, self.namespace, name),
                                what=self._what(kind, name))
        except ClusterError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, api_version: str, kind: str, *, labels: Mapping[str, str] | None = None,
             fields: Mapping[str, str] | None = None) -> list[Obj]:
        """Objects of ``kind`` in the namespace matching the label (and field) equalities."""
        query = {}
        if labels:
            query["labelSelector"] = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        if fields:
            query["fieldSelector"] = ",".join(f"{k}={v}" for k, v in sorted(fields.items()))
        answer = self.request("GET", path_of(api_version, kind, self.namespace), query=query,
                              what=f"{kind} objects in namespace {self.namespace}")
        return list(answer.get("items") or [])

    def create(self, obj: Obj) -> Obj:
        api_version, kind, name = _ident(obj)
        return self.request("POST", path_of(api_version, kind, self.namespace), body=obj,
                            what=self._what(kind, name))

    def replace(self, obj: Obj) -> Obj:
        """PUT ``obj``; with ``metadata.resourceVersion`` set, 409 if it changed since."""
        api_version, kind, name = _ident(obj)
        return self.request("PUT", path_of(api_version, kind, self.namespace, name), body=obj,
                            what=self._what(kind, name))

    def apply(self, obj: Obj) -> Obj:
        """Server-side apply ``obj`` as the ``workbench`` field manager; on a conflict,
        forced when the object is the workbench's, else :class:`ApplyConflict` (see the
        module docstring)."""
        api_version, kind, name = _ident(obj)
        try:
            return self._apply(obj, force=False)
        except ApiError as exc:
            if exc.status != 409:
                raise
            current = self.get(api_version, kind, name)
            labels = ((current or {}).get("metadata") or {}).get("labels") or {}
            if current is None or labels.get(MANAGED_BY[0]) == MANAGED_BY[1]:
                log.warning("%s: taking back fields another manager changed (%s)",
                            self._what(kind, name), exc.detail)
                return self._apply(obj, force=True)
            raise ApplyConflict(
                f"cannot apply {self._what(kind, name)}: it was not made by the workbench "
                f"(no {MANAGED_BY[0]}={MANAGED_BY[1]} label) and another field manager owns "
                f"fields the workbench sets ({exc.detail}); delete or rename it, or choose "
                "another deployment name", exc.status, exc.reason, exc.detail) from exc

    def _apply(self, obj: Obj, *, force: bool) -> Obj:
        api_version, kind, name = _ident(obj)
        query = {"fieldManager": FIELD_MANAGER}
        if force:
            query["force"] = "true"
        return self.request("PATCH", path_of(api_version, kind, self.namespace, name), body=obj,
                            query=query, content_type="application/apply-patch+yaml",
                            what=self._what(kind, name))

    # -- discovery and watches -----------------------------------------------------------

    def served_versions(self) -> frozenset[str]:
        """Every group/version the cluster serves (``v1``, ``apps/v1``, ``autoscaling/v2beta2``,
        ...), from discovery; read once per :class:`KubeApi`."""
        if self._served is None:
            core = self.request("GET", "/api", what="the API versions (discovery)")
            groups = self.request("GET", "/apis", what="the API groups (discovery)")
            served = set(core.get("versions") or ())
            for group in groups.get("groups") or ():
                served.update(str(v.get("groupVersion")) for v in group.get("versions") or ())
            self._served = frozenset(served)
        return self._served

    def watch(self, api_version: str, kind: str, name: str, *, deadline: float,
              since: str | None = None, slice_seconds: float = 10.0) -> Iterator[Obj | None]:
        """Stream ``kind``/``name`` as it changes, until ``deadline`` (``time.monotonic()``).

        Yields the object after each change, ``None`` once it is deleted, and an empty
        dict when a watch request ended without a change (every ``slice_seconds`` at
        most), so the caller can look elsewhere (pods, events) between changes.
        ``since``: the ``resourceVersion`` to watch from (the object's as just
        read). A 410 Gone (that version's history is compacted, or older than the
        server's watch cache) restarts from a fresh list, as client-go's reflector does:
        the object as it is now (``None`` if it is gone meanwhile) is yielded, and the
        watch goes on from the list's ``resourceVersion``, so no change is lost.
        """
        path = path_of(api_version, kind, self.namespace)
        version = since
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            query = {"watch": "true", "fieldSelector": f"metadata.name={name}",
                     "timeoutSeconds": str(max(1, int(min(left, slice_seconds))))}
            if version:
                query["resourceVersion"] = version
            changed = expired = False
            for event in self._stream(path, query, what=f"{self._what(kind, name)} (watch)"):
                kind_of_event = event.get("type")
                obj = event.get("object") or {}
                if kind_of_event == "ERROR":
                    if int(obj.get("code") or 0) == 410:  # too old: start again from a fresh list
                        expired = True
                        break
                    raise describe_error(int(obj.get("code") or 500), json.dumps(obj), "watch",
                                         self._what(kind, name))
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version or "")
                if kind_of_event == "BOOKMARK":
                    continue
                changed = True
                yield None if kind_of_event == "DELETED" else obj
            if expired:
                version, current = self._relist(path, kind, name)
                log.debug("the watch of %s restarts from a fresh list at %s", self._what(kind, name), version)
                yield current
            elif not changed:
                yield {}

    def _relist(self, path: str, kind: str, name: str) -> tuple[str, Obj | None]:
        """The list's ``resourceVersion`` and ``kind``/``name`` in it (None when it is gone)."""
        answer = self.request("GET", path, query={"fieldSelector": f"metadata.name={name}"},
                              what=f"{self._what(kind, name)} (list after 410 Gone)")
        version = str((answer.get("metadata") or {}).get("resourceVersion") or "")
        items = list(answer.get("items") or [])
        return version, (items[0] if items else None)

    def _stream(self, path: str, query: Mapping[str, str], *, what: str) -> Iterator[Obj]:
        """The events of one watch request, one JSON line each, as they arrive."""
        headers = {"Accept": "application/json, */*"}
        try:
            serialized = self._client.param_serialize(
                method="GET", resource_path=path, query_params=list(query.items()),
                header_params=headers, auth_settings=["BearerToken"])
            timeout = float(query.get("timeoutSeconds", self.timeout)) + self.timeout
            response = self._client.call_api(*serialized, _request_timeout=timeout)
        except Exception as exc:
            status = int(getattr(exc, "status", 0) or 0)
            if status:
                raise describe_error(status, getattr(exc, "body", None), "watch", what) from exc
            raise ClusterError(f"cannot reach the Kubernetes API at {self.server} to watch {what}: "
                               f"{exc}") from exc
        if not 200 <= response.status < 300:
            raise describe_error(response.status, response.read(), "watch", what)
        raw = response.response  # urllib3's, not preloaded: read as the server sends
        pending = b""
        done = False
        try:
            for chunk in raw.stream(amt=None, decode_content=False):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
            if pending.strip():
                yield json.loads(pending)
            done = True
        except (OSError, ValueError) as exc:
            if isinstance(exc, ValueError):
                raise ClusterError(f"the watch of {what} sent something that is not JSON: {exc}") from exc
            log.debug("the watch of %s ended: %s", what, exc)  # the slice ends, the caller goes on
        finally:
            if not done:  # left mid-stream: the connection still carries the watch, drop it
                raw.close()
            raw.release_conn()

    def patch(self, api_version: str, kind: str, name: str, patch: Obj) -> Obj:
        """A JSON merge patch (RFC 7386): maps merge, lists and scalars replace."""
        return self.request(
            "PATCH",
            path_of(api_version, kind, self.namespace, name),
            body=patch,
            query={"fieldManager": FIELD_MANAGER},
            content_type="application/merge-patch+json",
            what=self._what(kind, name),
        )

    def delete(self, api_version: str, kind: str, name: str) -> bool:
        """Delete (foreground propagation); False if it did not exist."""
        try:
            self.request(
                "DELETE",
                path_of(api_version, kind, self.namespace, name),
                body={"kind": "DeleteOptions", "apiVersion": "v1",
                      "propagationPolicy": "Foreground"},
                what=self._what(kind, name),
            )
        except ClusterError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def _what(self, kind: str, name: str) -> str:
        return f"{kind} {self.namespace}/{name}"


def _ident(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    try:
        return str(obj["apiVersion"]), str(obj["kind"]), str(obj["metadata"]["name"])
    except (KeyError, TypeError) as exc:
        raise ClusterError(f"not a Kubernetes object (needs apiVersion, kind, metadata.name): {exc}") from exc


def _incluster_namespace() -> str | None:
    from pathlib import Path

    try:
        return Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip()
    except OSError:
        return None
