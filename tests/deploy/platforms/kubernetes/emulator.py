"""An in-memory Kubernetes API emulator behind real HTTP on loopback.

No API server can run on these machines, so the Kubernetes backend, router and state
store are tested against this emulator: the real ``kubernetes`` client loads a real
kubeconfig that points at it and speaks HTTP to it. It emulates the part of the API the
workbench uses, not Kubernetes:

- namespaced objects of any kind under ``/api/v1`` and ``/apis/<group>/<version>``:
  GET (one, or a list with ``labelSelector``/``fieldSelector`` equalities), POST (409
  AlreadyExists), PUT (409 Conflict on a stale ``metadata.resourceVersion``), PATCH
  (server-side apply as a create-or-merge, JSON merge patch, strategic merge as a merge),
  DELETE; ``resourceVersion`` and ``generation`` bumped on writes;
- a Deployment "controller": after each write to a Deployment its status says all
  replicas are ready and ``Available`` (``ready_after`` GETs later, to show progress), or,
  for the names in ``broken``, never: a Pod in ``CrashLoopBackOff`` (or another waiting
  reason) and a Warning Event for it;
- fault injection (:meth:`Emulator.fail`): the next matching calls answer a ``Status``
  with the given code (403, 409, 422 ...);
- a journal of every call (:attr:`Emulator.calls`) for call-sequence assertions;
- NodePort Services get a free loopback port as ``nodePort``, and an optional
  ``kubelet`` (see ``kubelet.py``) is told after every write, so tests can run a real
  process per ready colour behind it.

It does not schedule pods, route traffic, validate schemas, or track field managers.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

_PATH = re.compile(
    r"^/(?P<group>api/v1|apis/[^/]+/[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>status|scale|log))?$"
)


@dataclass
class Call:
    method: str
    path: str
    content_type: str
    body: Any
    status: int

    @property
    def kind_name(self) -> str:
        """``plural/name`` of the call's object (``plural`` for a collection)."""
        m = _PATH.match(self.path)
        if not m:
            return self.path
        return m["plural"] + (f"/{m['name']}" if m["name"] else "")


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    reason: str
    message: str
    times: int


@dataclass
class Broken:
    reason: str = "CrashLoopBackOff"
    message: str = "back-off 40s restarting failed container=serve"
    event_reason: str = "BackOff"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what the emulator also uses for apply)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


def _matches(obj: dict[str, Any], selector: str, *, fields: bool = False) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, want = term.partition("=")
        if fields:
            value: Any = obj
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
        else:
            value = obj.get("metadata", {}).get("labels", {}).get(key)
        if str(value) != want:
            return False
    return True


@dataclass
class Emulator:
    """The emulated API; :meth:`start` serves it on 127.0.0.1 in a thread."""

    objects: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    broken: dict[str, Broken] = field(default_factory=dict)  # Deployment name -> why
    logs: dict[str, list[str]] = field(default_factory=dict)  # pod name -> log lines
    kubelet: Any = None  # object with sync(emulator), called after every write
    ready_after: int = 0  # GETs of a Deployment before its status turns ready
    _rv: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _pending: dict[str, int] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None

    # -- control from tests ------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Emulator:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, answer = emulator.handle(self.command, self.path,
                                                 self.headers.get("Content-Type", ""), raw)
                text = isinstance(answer, str)
                data = answer.encode() if text else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if text else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def kubeconfig(self, path: Path, *, namespace: str = "ml", context: str = "emulator") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emu", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "emulator-token"}}],
            "contexts": [{"name": context,
                          "context": {"cluster": "emu", "user": "tester", "namespace": namespace}}],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def fail(self, method: str, path: str, status: int, message: str = "", *,
             reason: str = "", times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` on a path matching ``path``
        (a regex searched in the path) with ``status``."""
        reasons = {403: "Forbidden", 404: "NotFound", 409: "Conflict", 422: "Invalid",
                   500: "InternalError"}
        self.faults.append(Fault(method, re.compile(path), status,
                                 reason or reasons.get(status, "Failure"), message, times))

    def obj(self, plural: str, name: str, namespace: str = "ml") -> dict[str, Any] | None:
        with self._lock:
            for (_, ns, p, n), value in self.objects.items():
                if (ns, p, n) == (namespace, plural, name):
                    return copy.deepcopy(value)
        return None

    def writes(self) -> list[str]:
        """``METHOD plural/name`` of every write, in order."""
        return [f"{c.method} {c.kind_name}" for c in self.calls
                if c.method != "GET" and c.status < 400]

    # -- the API -----------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, content_type: str, raw: bytes
               ) -> tuple[int, dict[str, Any]]:
        url = urlsplit(raw_path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = None
        if raw:
            body = yaml.safe_load(raw) if "yaml" in content_type else json.loads(raw)
        with self._lock:
            status, answer = self._handle(method, url.path, query, content_type, body)
            self.calls.append(Call(method, url.path, content_type, body, status))
            if method != "GET" and status < 400 and self.kubelet is not None:
                self.kubelet.sync(self)
        return status, answer

    def _status(self, code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
        return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                      "reason": reason, "message": message, "code": code}

    def _handle(self, method: str, path: str, query: dict[str, str], content_type: str,
                body: Any) -> tuple[int, dict[str, Any]]:
        for fault in self.faults:
            if fault.times > 0 and fault.method == method and fault.path.search(path):
                fault.times -= 1
                return self._status(fault.status, fault.reason, fault.message or fault.reason)
        m = _PATH.match(path)
        if not m:
            return self._status(404, "NotFound", f"the server could not find {path}")
        group, ns, plural, name = m["group"], m["ns"], m["plural"], m["name"]
        key = (group, ns, plural, name or "")
        current = self.objects.get(key)
        if name is None:
            if method == "GET":
                items = [copy.deepcopy(o) for (g, n2, p, _), o in sorted(self.objects.items())
                         if (g, n2, p) == (group, ns, plural)
                         and _matches(o, query.get("labelSelector", ""))
                         and _matches(o, query.get("fieldSelector", ""), fields=True)]
                return 200, {"kind": "List", "apiVersion": "v1", "items": items,
                             "metadata": {"resourceVersion": str(next(self._rv))}}
            if method == "POST":
                name = str(body["metadata"]["name"])
                key = (group, ns, plural, name)
                if key in self.objects:
                    return self._status(409, "AlreadyExists", f'{plural} "{name}" already exists')
                return 201, self._store(key, body, None)
            return self._status(405, "MethodNotAllowed", f"{method} on a collection")
        if method == "GET":
            if current is None:
                return self._status(404, "NotFound", f'{plural} "{name}" not found')
            if m["sub"] == "log":
                lines = self.logs.get(name, [])[-int(query.get("tailLines", "1000")):]
                return 200, "".join(line + "\n" for line in lines)  # type: ignore[return-value]
            if plural == "deployments":
                self._tick(key)
            return 200, copy.deepcopy(self.objects[key])
        if method == "DELETE":
            if current is None:
                return self._status(404, "NotFound", f'{plural} "{name}" not found')
            del self.objects[key]
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        if method == "PUT":
            if current is None:
                return self._status(404, "NotFound", f'{plural} "{name}" not found')
            sent = str(body.get("metadata", {}).get("resourceVersion") or "")
            if sent and sent != current["metadata"]["resourceVersion"]:
                return self._status(
                    409, "Conflict",
                    f'Operation cannot be fulfilled on {plural} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again")
            return 200, self._store(key, body, current)
        if method == "PATCH":
            if "apply-patch" in content_type:
                if not query.get("fieldManager"):
                    return self._status(422, "Invalid", "fieldManager is required for apply")
                merged = merge(current or {}, body)
                return (200 if current else 201), self._store(key, merged, current)
            if current is None:
                return self._status(404, "NotFound", f'{plural} "{name}" not found')
            if "json-patch" in content_type:
                return self._status(415, "UnsupportedMediaType", "json-patch is not emulated")
            return 200, self._store(key, merge(current, body), current)
        return self._status(405, "MethodNotAllowed", method)

    def _store(self, key: tuple[str, str, str, str], body: dict[str, Any],
               current: dict[str, Any] | None) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = key[1]
        meta["resourceVersion"] = str(next(self._rv))
        if current is None:
            meta["uid"] = f"uid-{meta['resourceVersion']}"
            meta["generation"] = 1
        else:
            meta["uid"] = current["metadata"]["uid"]
            changed = {k: v for k, v in obj.items() if k not in ("metadata", "status")} != {
                k: v for k, v in current.items() if k not in ("metadata", "status")}
            meta["generation"] = current["metadata"].get("generation", 1) + int(changed)
            if "status" in current and "status" not in body:
                obj["status"] = current["status"]
        if key[2] == "services" and obj.get("spec", {}).get("type") == "NodePort":
            old = {p.get("name"): p.get("nodePort") for p in (current or {}).get("spec", {}).get("ports", [])}
            for port in obj["spec"].get("ports", []):
                port.setdefault("nodePort", old.get(port.get("name")) or _free_port())
        self.objects[key] = obj
        if key[2] == "deployments":
            self._pending[key[3]] = self.ready_after
            self._reconcile(key)
        return copy.deepcopy(obj)

    def _tick(self, key: tuple[str, str, str, str]) -> None:
        if self._pending.get(key[3], 0) > 0:
            self._pending[key[3]] -= 1
        self._reconcile(key)

    def _reconcile(self, key: tuple[str, str, str, str]) -> None:
        """The Deployment controller and the kubelet, as far as status goes."""
        obj = self.objects[key]
        name = key[3]
        replicas = int(obj.get("spec", {}).get("replicas", 1))
        generation = obj["metadata"]["generation"]
        broken = self.broken.get(name)
        waiting = self._pending.get(name, 0) > 0
        if broken is None and not waiting:
            ready = replicas
            conditions = [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ]
        else:
            ready = 0
            conditions = [
                {"type": "Available", "status": "False" if replicas else "True",
                 "reason": "MinimumReplicasUnavailable"},
                {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
            ]
        obj["status"] = {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": replicas - ready,
            "conditions": conditions,
        }
        group, ns = "api/v1", key[1]
        pod_key = (group, ns, "pods", f"{name}-7d9f-x1")
        labels = obj.get("spec", {}).get("selector", {}).get("matchLabels", {})
        if not replicas:
            self.objects.pop(pod_key, None)
            return
        container: dict[str, Any] = {"name": "serve", "ready": True, "restartCount": 0,
                                     "state": {"running": {}}}
        if broken is not None:
            container = {"name": "serve", "ready": False, "restartCount": 4,
                         "state": {"waiting": {"reason": broken.reason, "message": broken.message}}}
            self.objects[(group, ns, "events", f"{pod_key[3]}.1")] = {
                "apiVersion": "v1", "kind": "Event", "type": "Warning",
                "reason": broken.event_reason, "message": broken.message, "count": 4,
                "metadata": {"name": f"{pod_key[3]}.1", "namespace": ns},
                "involvedObject": {"kind": "Pod", "name": pod_key[3], "namespace": ns},
            }
        self.objects[pod_key] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_key[3], "namespace": ns, "labels": dict(labels),
                         "resourceVersion": str(next(self._rv))},
            "status": {"phase": "Running", "containerStatuses": [container]},
        }
