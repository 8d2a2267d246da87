"""Deployment state in the cluster: one ConfigMap per deployment, a Lease as its lock.

:class:`ClusterStateStore` has the interface of the file-backed
:class:`~workbench.deploy.state.StateStore` (load, save through a transaction, lock,
names, remove, the admin token), so :class:`~workbench.deploy.deployment.Deployment`
and the canary controller use it unchanged; the notebook, an SSH shell and a second
machine with the same kube context see one truth.

In the deployment's namespace::

    ConfigMap wb-<name>-state   data: state.json, state.json.prev (the state before the last write)
    Lease     wb-<name>-lock    held while a process changes the state (renewed while held)
    Secret    wb-<name>-admin   the bearer token of the instances' admin API

Two guards keep concurrent writers from losing an update. The Lease (the cluster's
own lock object, ``coordination.k8s.io/v1``) serialises transactions across machines;
its holder renews it every few seconds, so a crashed holder frees it within
``lease_seconds``. And every write replaces the ConfigMap with the
``resourceVersion`` it was read at: if anyone changed it meanwhile (a holder whose
lease expired, ``kubectl edit``), the API answers 409 and the write fails with a
StateError saying so; nothing is overwritten. Local files (the router's workdir, logs)
stay under the workbench home as before.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import secrets
import shutil
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from workbench.deploy.history import actor
from workbench.deploy.names import check_deployment_name
from workbench.deploy.platforms.kubernetes.client import ClusterError, translate
from workbench.deploy.platforms.kubernetes.options import DEPLOYMENT_LABEL, ROLE_LABEL
from workbench.deploy.state import (
    PREVIOUS_FILE,
    STATE_FILE,
    DeploymentState,
    StateStore,
    Transaction,
    parse_state,
    reentrant,
)
from workbench.errors import StateCorruptError, StateError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from workbench._types import StrPath
    from workbench.deploy.platforms.kubernetes.client import KubeApi, Obj

__all__ = ["STATE_LABELS", "ClusterStateStore", "store_from_env"]

log = logging.getLogger(__name__)

#: Labels of every state ConfigMap (``names()`` lists by them).
STATE_LABELS = {"app.kubernetes.io/managed-by": "workbench", ROLE_LABEL: "state"}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _seconds(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return 0.0


class ClusterStateStore(StateStore):
    """Deployment states in ConfigMaps of one namespace (see the module docstring)."""

    def __init__(
        self,
        api: KubeApi,
        home: StrPath | None = None,
        *,
        lock_timeout: float = 60.0,
        lease_seconds: int = 30,
    ) -> None:
        super().__init__(home, lock_timeout=lock_timeout)
        self.api = api
        self.lease_seconds = lease_seconds
        self._seen: dict[str, str] = {}  # name -> resourceVersion the state was last read at
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        return f"ClusterStateStore({self.api!r})"

    @staticmethod
    def configmap(name: str) -> str:
        return f"wb-{check_deployment_name(name)}-state"

    # -- reading -------------------------------------------------------------------------

    def _get(self, name: str) -> Obj | None:
        with translate(StateError):
            return self.api.get("v1", "ConfigMap", self.configmap(name))

    def exists(self, name: str) -> bool:
        return self._get(name) is not None

    def names(self) -> list[str]:
        with translate(StateError):
            items = self.api.list("v1", "ConfigMap", labels=STATE_LABELS)
        return sorted(str(i["metadata"]["labels"][DEPLOYMENT_LABEL]) for i in items
                      if DEPLOYMENT_LABEL in i["metadata"].get("labels", {}))

    def load(self, name: str) -> DeploymentState:
        obj = self._get(name)
        where = f"ConfigMap {self.api.namespace}/{self.configmap(name)}"
        if obj is None:
            raise StateError(f"no deployment named {name!r} (looked in {where})")
        with self._guard:
            self._seen[name] = str(obj["metadata"].get("resourceVersion", ""))
        text = (obj.get("data") or {}).get(STATE_FILE)
        if not isinstance(text, str):
            raise StateCorruptError(f"the state of deployment {name!r} ({where}) has no {STATE_FILE}; "
                                    f"`workbench deploy restore {name}` brings back the previous state")
        return parse_state(name, where, text)

    def load_previous(self, name: str) -> DeploymentState | None:
        obj = self._get(name)
        try:
            text = (obj or {}).get("data", {})[PREVIOUS_FILE]
            return DeploymentState.from_dict(json.loads(text))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    # -- writing -------------------------------------------------------------------------

    def _write(self, state: DeploymentState, *, keep_previous: bool = True) -> None:
        """Replace the ConfigMap at the resourceVersion it was read at (create it if new)."""
        name = state.name
        data = {STATE_FILE: json.dumps(state.to_dict(), indent=1) + "\n"}
        with self._guard:
            seen = self._seen.get(name)
        current = self._get(name)
        if current is not None and keep_previous:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                text = current["data"][STATE_FILE]
                json.loads(text)  # only a readable state is worth keeping
                data[PREVIOUS_FILE] = text
        body: Obj = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": self.configmap(name),
                         "labels": {**STATE_LABELS, DEPLOYMENT_LABEL: name}},
            "data": data,
        }
        try:
            if current is None:
                if seen:
                    raise ClusterError("it was deleted meanwhile", 409, "Conflict")
                written = self.api.create(body)
            else:
                # the version this process read; a write never overwrites one it has not seen
                body["metadata"]["resourceVersion"] = seen or current["metadata"]["resourceVersion"]
                written = self.api.replace(body)
        except ClusterError as exc:
            if exc.status == 409:
                raise StateError(
                    f"the state of deployment {name!r} was changed by another process or "
                    f"machine since this one read it; nothing was written; run the command again"
                ) from exc
            raise StateError(str(exc)) from exc
        with self._guard:
            self._seen[name] = str(written["metadata"].get("resourceVersion", ""))

    def remove(self, name: str) -> None:
        """Delete the state ConfigMap, the lease, the admin Secret and the local files."""
        with translate(StateError):
            for kind, obj in (("ConfigMap", self.configmap(name)), ("Secret", f"wb-{name}-admin"),
                              ("Lease", f"wb-{name}-lock")):
                self.api.delete("coordination.k8s.io/v1" if kind == "Lease" else "v1", kind, obj)
        with self._guard:
            self._seen.pop(name, None)
        shutil.rmtree(self.directory(name), ignore_errors=True)

    @contextlib.contextmanager
    def transaction(self, name: str, timeout: float | None = None) -> Iterator[Transaction]:
        """Take the Lease, read (None if it does not exist yet), let the caller save, release."""
        with self.lock(name, timeout):
            with self._guard:
                self._seen.pop(name, None)
            state = self.load(name) if self.exists(name) else None
            yield Transaction(self, name, state)

    # -- the admin token -----------------------------------------------------------------

    def admin_token(self, name: str) -> str:
        """The instances' admin token, kept in a Secret (made on first use)."""
        secret = f"wb-{check_deployment_name(name)}-admin"
        with translate(StateError):
            for _ in range(3):
                found = self.api.get("v1", "Secret", secret)
                if found is not None:
                    return base64.b64decode(found["data"]["token"]).decode().strip()
                token = secrets.token_urlsafe(32)
                try:
                    self.api.create({
                        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": secret,
                                     "labels": {"app.kubernetes.io/managed-by": "workbench",
                                                DEPLOYMENT_LABEL: name}},
                        "data": {"token": base64.b64encode(token.encode()).decode()},
                    })
                    return token
                except ClusterError as exc:
                    if exc.status != 409:  # made by another process meanwhile: read it
                        raise
        raise StateError(f"cannot make the admin token Secret {secret}")

    # -- the lock: a Lease ---------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the deployment's Lease (StateError if another holder keeps it too long).

        Re-entrant within a thread, like the file store's lock."""
        lease = f"wb-{check_deployment_name(name)}-lock"
        key = f"lease:{self.api.server}/{self.api.namespace}/{lease}"
        with reentrant(key, lambda: self._hold(name, lease, timeout)):
            yield

    @contextlib.contextmanager
    def _hold(self, name: str, lease: str, timeout: float | None) -> Iterator[None]:
        holder = f"{actor()}/{uuid.uuid4().hex[:8]}"
        wait = self.lock_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        with translate(StateError):
            other = self._acquire(lease, holder, deadline)
        if other is not None:
            raise StateError(
                f"deployment {name!r} is locked by {other} (Lease {self.api.namespace}/{lease}, "
                f"waited {wait:.0f}s)"
            )
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(lease, holder, stop), daemon=True,
                                   name=f"lease-{name}")
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            with contextlib.suppress(ClusterError):
                self._release(lease, holder)

    def _lease(self, lease: str, holder: str, current: Obj | None) -> Obj:
        now = _now()
        spec = {"holderIdentity": holder, "leaseDurationSeconds": self.lease_seconds,
                "acquireTime": now, "renewTime": now}
        obj: Obj = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": lease, "labels": {"app.kubernetes.io/managed-by": "workbench"}},
                    "spec": spec}
        if current is not None:
            obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return obj

    def _acquire(self, lease: str, holder: str, deadline: float) -> str | None:
        """Take the Lease; None when taken, else who holds it at the deadline."""
        while True:
            current = self.api.get("coordination.k8s.io/v1", "Lease", lease)
            spec = (current or {}).get("spec") or {}
            other = spec.get("holderIdentity")
            expired = _seconds(spec.get("renewTime")) + float(
                spec.get("leaseDurationSeconds") or 0) < time.time()
            if current is None or not other or expired:
                try:
                    if current is None:
                        self.api.create(self._lease(lease, holder, None))
                    else:
                        self.api.replace(self._lease(lease, holder, current))
                    return None
                except ClusterError as exc:
                    if exc.status != 409:  # someone else took it first: look again
                        raise
            if time.monotonic() >= deadline:
                return str(other or "another process")
            time.sleep(0.1)

    def _renew(self, lease: str, holder: str, stop: threading.Event) -> None:
        while not stop.wait(max(1.0, self.lease_seconds / 3)):
            try:
                current = self.api.get("coordination.k8s.io/v1", "Lease", lease)
                if current is None or current.get("spec", {}).get("holderIdentity") != holder:
                    log.warning("lost the lease %s", lease)
                    return
                current["spec"]["renewTime"] = _now()
                self.api.replace(current)
            except ClusterError as exc:
                log.warning("could not renew the lease %s: %s", lease, exc)

    def _release(self, lease: str, holder: str) -> None:
        current = self.api.get("coordination.k8s.io/v1", "Lease", lease)
        if current is not None and current.get("spec", {}).get("holderIdentity") == holder:
            current["spec"]["holderIdentity"] = ""
            self.api.replace(current)


def store_from_env(home: StrPath, *, lock_timeout: float = 60.0) -> ClusterStateStore | None:
    """The cluster store when ``WORKBENCH_STATE=kubernetes``, else None (files).

    ``WORKBENCH_K8S_NAMESPACE`` and ``WORKBENCH_K8S_CONTEXT`` pick the namespace and
    kube context (default: the context's own), ``KUBECONFIG`` the file, as for kubectl.
    """
    import os

    from workbench.deploy.platforms.kubernetes.client import KubeApi

    kind = os.environ.get("WORKBENCH_STATE", "file").strip().lower()
    if kind in ("", "file", "files"):
        return None
    if kind not in ("kubernetes", "k8s"):
        raise StateError(f"WORKBENCH_STATE must be file or kubernetes, not {kind!r}")
    with translate(StateError):
        api = KubeApi.connect(context=os.environ.get("WORKBENCH_K8S_CONTEXT") or None,
                              namespace=os.environ.get("WORKBENCH_K8S_NAMESPACE") or None)
    return ClusterStateStore(api, home, lock_timeout=lock_timeout)
