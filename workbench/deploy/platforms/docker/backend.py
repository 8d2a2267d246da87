"""The Docker backend: serving instances as containers of the workbench image.

:class:`DockerBackend` runs ``workbench serve`` in a container of the workbench
image (``docker/Dockerfile``), on a local engine or a remote one over SSH::

    DockerBackend()                                   # DOCKER_HOST, else the local socket
    DockerBackend("unix:///run/user/1000/docker.sock")
    DockerBackend("ssh://deploy@gpu-box:22", identity_file="~/.ssh/id_ed25519")

Each container mounts the model repository read-only at ``/models``, runs as the
image's non-root user, uses host networking (or publishes its port), gets the GPU
of ``spec.device`` through a device request, and carries labels
(``workbench.deployment``, ``workbench.color``, ``workbench.model``,
``workbench.version``, ...) from which :meth:`DockerBackend.find` rebuilds its
:class:`~workbench.deploy.backend.Instance` after a restart. Remote engines are
reached through paramiko; an unknown SSH host key is refused (see
:mod:`workbench.deploy.platforms.docker.engine`).

:class:`~workbench.deploy.platforms.docker.router.DockerNginx` (re-exported here) runs the
router's nginx in a container of the same image, and ``python -m
workbench.deploy.platforms.docker.backend healthcheck`` is the image's ``HEALTHCHECK``.

The Docker SDK is imported when a client is first needed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.deploy.backend import Backend, Instance, InstanceSpec
from workbench.deploy.names import COLORS, check_deployment_name
from workbench.deploy.platforms.docker.engine import (
    DEFAULT_IMAGE,
    connect,
    default_image,
    describe,
    is_local,
    sdk,
    translate,
)
from workbench.errors import BackendError
from workbench.health import loopback

if TYPE_CHECKING:
    from collections.abc import Mapping

    from workbench._types import StrPath

__all__ = [
    "DEFAULT_IMAGE",
    "MODELS_DIR",
    "DockerBackend",
]

logger = logging.getLogger(__name__)

#: The image serving containers run unless told otherwise (env ``WORKBENCH_IMAGE``).
#: Where containers see the model repository (mounted read-only).
MODELS_DIR = "/models"
#: How long ``start`` watches a new container for an early exit; it returns sooner
#: once the instance accepts connections.
START_GRACE = 3.0
LABEL = "workbench"
_LOG_LINES = 25


def _port_taken(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((loopback(host), port), timeout=0.2):
            return True
    except OSError:
        return False


def _gpu_index(device: str) -> int | None:
    """None for ``cpu``; the GPU index for ``gpu`` / ``gpu:N``; BackendError otherwise."""
    if device == "cpu":
        return None
    if device == "gpu":
        return 0
    if device.startswith("gpu:") and device[4:].isdigit():
        return int(device[4:])
    raise BackendError(f"device must be 'cpu', 'gpu' or 'gpu:N', not {device!r}")


class DockerBackend(Backend):
    """Starts ``workbench serve`` in containers of the workbench image.

    ``docker_host``: the engine (``unix://``, ``tcp://``, ``ssh://user@host[:port]``);
    None means ``DOCKER_HOST`` or the local socket. ``image``: the workbench image
    (default: env ``WORKBENCH_IMAGE``, else ``paddle-workbench:latest``); it is never
    pulled implicitly. ``network``: ``"host"`` (the container shares the engine
    host's network and binds ``spec.host:spec.port`` itself) or ``"bridge"`` (it
    binds 0.0.0.0 inside and its port is published on ``spec.host:spec.port``).
    ``user``: run as this user instead of the image's non-root one. ``env``: extra
    environment for every container. ``known_hosts`` / ``identity_file``: for
    ``ssh://`` engines. ``start_grace``: how long :meth:`start` watches a container
    for an early exit. ``client``: an existing ``docker.DockerClient``.

    A spec's model repository is a path on the *engine's* host (it is bind-mounted);
    with a remote engine it must exist there. Containers are removed when stopped.
    """

    name = "docker"

    def __init__(
        self,
        docker_host: str | None = None,
        *,
        image: str | None = None,
        network: str = "host",
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        known_hosts: StrPath | None = None,
        identity_file: StrPath | None = None,
        start_grace: float = START_GRACE,
        timeout: float = 60.0,
        client: Any = None,
    ) -> None:
        if network not in ("host", "bridge"):
            raise ValueError(f"network must be 'host' or 'bridge', not {network!r}")
        self.docker_host = docker_host
        self.image = image or default_image()
        self.network = network
        self.user = user
        self.env = dict(env or {})
        self.known_hosts = known_hosts
        self.identity_file = identity_file
        self.start_grace = float(start_grace)  # options may come back from JSON as strings
        self.timeout = float(timeout)
        self._client = client
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DockerBackend({describe(self.docker_host)!r}, image={self.image!r})"

    # -- engine --------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The ``docker.DockerClient``, connected on first use."""
        with self._lock:
            if self._client is None:
                self._client = connect(
                    self.docker_host,
                    known_hosts=self.known_hosts,
                    identity_file=self.identity_file,
                    timeout=self.timeout,
                )
            return self._client

    def close(self) -> None:
        """Close the connection to the engine (it reopens on next use)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def __enter__(self) -> DockerBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        return translate(what, describe(self.docker_host))

    def container(self, ref: str) -> Any:
        """The container ``ref`` (id or name), or None when it does not exist."""
        client = self.client
        with self._errors("cannot inspect a container"):
            try:
                return client.containers.get(ref)
            except sdk().errors.NotFound:
                return None

    def remove(self, container: Any) -> None:
        """Remove ``container`` (running or not); no error when it is already gone."""
        gone = sdk().errors.NotFound
        with self._errors(f"cannot remove container {container.short_id}"), contextlib.suppress(gone):
            container.remove(force=True)

    # -- planning ------------------------------------------------------------------------

    def container_name(self, spec: InstanceSpec) -> str:
        """``workbench-<deployment>-<colour>``, then ``-<replica>`` for a colour's second, ..."""
        suffix = f"-{spec.replica}" if spec.replica else ""
        return f"workbench-{spec.deployment}-{spec.color}{suffix}"

    def labels(self, spec: InstanceSpec) -> dict[str, str]:
        """The labels of ``spec``'s container; :meth:`find` reads them back."""
        return {
            f"{LABEL}.{key}": str(value)
            for key, value in spec.to_dict().items()
            if not isinstance(value, list)
        }

    def plan(self, spec: InstanceSpec) -> tuple[list[str], dict[str, Any]]:
        """The container's command and the SDK's ``containers.create`` arguments."""
        gpu = _gpu_index(spec.device)
        repo = spec.repo
        if is_local(self.docker_host):
            repo = str(Path(repo).expanduser().resolve())
            if not Path(repo).is_dir():
                raise BackendError(f"model repository {repo} does not exist (or is not a directory)")
        elif not repo.startswith("/"):
            raise BackendError(f"model repository {repo!r} must be an absolute path on the Docker host")
        inside = dataclasses.replace(
            spec,
            repo=MODELS_DIR,
            host=spec.host if self.network == "host" else "0.0.0.0",
            device="cpu" if gpu is None else "gpu:0",  # the container sees only its GPU
        )
        command = inside.serve_args()  # ["serve", ...]: start.sh's serve mode
        env = {**self.env, **dict(spec.env), "WORKBENCH_REPO": MODELS_DIR}
        if spec.admin_token:
            env["WORKBENCH_ADMIN_TOKEN"] = spec.admin_token
        ready = f"http://{loopback(inside.host)}:{spec.port}/v2/health/ready"
        kwargs: dict[str, Any] = {
            "name": self.container_name(spec),
            "labels": self.labels(spec),
            "environment": env,
            "volumes": {repo: {"bind": MODELS_DIR, "mode": "ro"}},
            "healthcheck": {
                "test": ["CMD", "python", "-m", "workbench.health",
                         "--url", ready],
                "interval": 5_000_000_000,  # nanoseconds
                "timeout": 3_000_000_000,
                "retries": 3,
                "start_period": 60_000_000_000,
            },
            "log_config": {"type": "json-file", "config": {"max-size": "20m", "max-file": "3"}},
            "stop_signal": "SIGTERM",
            "detach": True,
        }
        if self.network == "host":
            kwargs["network_mode"] = "host"
        else:
            kwargs["ports"] = {f"{spec.port}/tcp": (spec.host, spec.port)}
        if self.user:
            kwargs["user"] = self.user
        if gpu is not None:
            kwargs["device_requests"] = [
                sdk().types.DeviceRequest(device_ids=[str(gpu)], capabilities=[["gpu"]])
            ]
        return command, kwargs

    # -- Backend -------------------------------------------------------------------------

    def start(self, spec: InstanceSpec) -> Instance:
        what = f"cannot start {spec.deployment}/{spec.color} ({spec.model} {spec.version})"
        command, kwargs = self.plan(spec)
        client = self.client
        with self._errors(what):
            try:
                client.images.get(self.image)
            except sdk().errors.ImageNotFound as exc:
                raise BackendError(
                    f"{what}: image {self.image!r} is not on the Docker engine at "
                    f"{describe(self.docker_host)}; build it (docker build -f docker/Dockerfile "
                    f"-t {self.image} .) or pull it, or pass image=..."
                ) from exc
        self._check_free(spec, what)
        logger.info("starting %s/%s from %s: %s", spec.deployment, spec.color, self.image,
                    " ".join(command))
        with self._errors(what):
            container = client.containers.create(self.image, command, **kwargs)
        try:
            with self._errors(what):
                container.start()
        except BackendError as exc:
            self.remove(container)
            if "address already in use" in str(exc) or "port is already allocated" in str(exc):
                raise BackendError(
                    f"{what}: port {spec.port} on {spec.host} is already in use"
                ) from exc.__cause__
            raise
        instance = Instance(spec=spec, backend=self.name, ref=container.id,
                            labels=dict(kwargs["labels"]))
        self._watch_start(instance, container, what)
        return instance

    def _check_free(self, spec: InstanceSpec, what: str) -> None:
        """Refuse a running instance of this colour or a taken port; clear a stopped one."""
        existing = self.container(self.container_name(spec))
        if existing is not None:
            if existing.labels.get(f"{LABEL}.deployment") != spec.deployment:
                raise BackendError(
                    f"{what}: a container named {existing.name} exists and is not a workbench "
                    "instance; rename or remove it"
                )
            if existing.status == "running":
                raise BackendError(
                    f"{what}: {spec.deployment}/{spec.color} already runs (container "
                    f"{existing.short_id}); stop it first"
                )
            self.remove(existing)  # a stopped instance of ours: its name is free again
        if is_local(self.docker_host) and _port_taken(spec.host, spec.port):
            raise BackendError(f"{what}: port {spec.port} on {spec.host} is already in use")
        for other in self._running({}):
            labels = other.labels
            if labels.get(f"{LABEL}.port") == str(spec.port) and labels.get(
                f"{LABEL}.host"
            ) in (spec.host, "0.0.0.0"):
                raise BackendError(
                    f"{what}: port {spec.port} is already used by container {other.name}"
                )

    def _watch_start(self, instance: Instance, container: Any, what: str) -> None:
        """Raise, with its last log lines, and remove it, if the container exits early."""
        spec = instance.spec
        deadline = time.monotonic() + self.start_grace
        while True:
            with self._errors(what):
                container.reload()
            state = container.attrs.get("State") or {}
            if container.status in ("exited", "dead"):
                logs = self._logs(container, _LOG_LINES).rstrip() or "(no output)"
                self.remove(container)
                raise BackendError(
                    f"{what}: the container exited with code {state.get('ExitCode')} during "
                    f"start; its last lines:\n{logs}"
                )
            if _accepts(spec.host, spec.port) or time.monotonic() >= deadline:
                return
            time.sleep(0.1)

    def _running(self, labels: dict[str, str]) -> list[Any]:
        """Running workbench containers (those with a deployment label) matching ``labels``."""
        wanted = [f"{LABEL}.deployment", *(f"{k}={v}" for k, v in labels.items())]
        client = self.client
        with self._errors("cannot list containers"):
            return list(client.containers.list(filters={"label": wanted, "status": "running"}))

    def stop(self, instance: Instance, timeout: float = 10.0) -> None:
        container = self.container(instance.ref)
        if container is None:
            return
        logger.info("stopping %s/%s (container %s)", instance.spec.deployment,
                    instance.spec.color, container.short_id)
        gone = sdk().errors.NotFound
        with self._errors(f"cannot stop container {container.short_id}"), contextlib.suppress(gone):
            # SIGTERM (the instance drains in-flight requests), SIGKILL after timeout.
            container.stop(timeout=max(0, math.ceil(timeout)))
        self.remove(container)

    def is_running(self, instance: Instance) -> bool:
        container = self.container(instance.ref)
        return container is not None and container.status == "running"

    def health(self, instance: Instance) -> str | None:
        """Docker's health status (``starting``, ``healthy``, ``unhealthy``), or None."""
        container = self.container(instance.ref)
        if container is None:
            return None
        status = ((container.attrs.get("State") or {}).get("Health") or {}).get("Status")
        return str(status) if status else None

    def _logs(self, container: Any, tail: int) -> str:
        with self._errors("cannot read container logs"):
            try:
                data = container.logs(stdout=True, stderr=True, tail=max(1, tail))
            except sdk().errors.NotFound:
                return ""
        return bytes(data).decode("utf-8", "replace")

    def logs(self, instance: Instance, tail: int = 200) -> str:
        container = self.container(instance.ref)
        return "" if container is None else self._logs(container, tail)

    def find(self, deployment: str) -> list[Instance]:
        check_deployment_name(deployment)
        found = []
        for container in self._running({f"{LABEL}.deployment": deployment}):
            try:
                found.append(self._from_labels(container))
            except (KeyError, ValueError) as exc:
                logger.warning("ignoring container %s: unreadable labels (%s)", container.name, exc)
        return sorted(found, key=lambda i: (COLORS.index(i.spec.color), i.spec.replica))

    def _from_labels(self, container: Any) -> Instance:
        labels: dict[str, str] = dict(container.labels)
        prefix = f"{LABEL}."
        spec = InstanceSpec.from_dict(
            {k[len(prefix):]: v for k, v in labels.items() if k.startswith(prefix)}
        )
        return Instance(spec=spec, backend=self.name, ref=container.id, labels=labels)
