"""DockerNginx: the router's nginx in a container of the workbench image.

An :class:`~workbench.deploy.router.NginxRunner`. The router's workdir is
bind-mounted at the same path and the container uses host networking, so the
rendered configuration means the same thing inside as outside; the engine must
therefore be local (it sees this machine's paths and ports): a unix socket,
``DOCKER_HOST``, or a ``tcp://``/``ssh://`` address of this machine. The container is
named after the workdir, so a runner in another process finds the router an
earlier one started. Signals go through tini (PID 1) to nginx's process group:
HUP reloads (workers ignore it), QUIT stops gracefully.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from workbench.deploy._nginx import size, tail, wait_reloaded
from workbench.deploy.platforms.docker.engine import connect, default_image, describe, sdk, translate
from workbench.deploy.routing import ERROR_LOG, PID_FILE
from workbench.errors import BackendError, RouterError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from workbench._types import StrPath

__all__ = ["DockerNginx"]

logger = logging.getLogger(__name__)

LABEL = "workbench"


class DockerNginx:
    """Runs nginx for a router workdir in a container of the workbench image.

    ``docker_host``: a local engine (None: ``DOCKER_HOST`` or the local socket).
    ``image``: the workbench image (env ``WORKBENCH_IMAGE``, else
    ``paddle-workbench:latest``). ``user``: who nginx runs as, default this
    process's ``uid:gid`` (the owner of the workdir); as root, workers run as root.
    ``known_hosts`` / ``identity_file``: for an ``ssh://`` address of this machine,
    as for :class:`~workbench.deploy.platforms.docker.backend.DockerBackend`.
    """

    name: ClassVar[str] = "docker"

    def __init__(
        self,
        docker_host: str | None = None,
        *,
        image: str | None = None,
        user: str | None = None,
        known_hosts: StrPath | None = None,
        identity_file: StrPath | None = None,
        client: Any = None,
        start_timeout: float = 20.0,
        reload_timeout: float = 10.0,
    ) -> None:
        self.docker_host = docker_host
        self.image = image or default_image()
        self.user = user or f"{os.getuid()}:{os.getgid()}"
        #: nginx's ``user`` directive: only when the master runs as root.
        self.worker_user: str | None = (
            "root" if self.user.split(":", 1)[0] in ("0", "root") else None
        )
        self.known_hosts = known_hosts
        self.identity_file = identity_file
        self.start_timeout = start_timeout
        self.reload_timeout = reload_timeout
        self._client = client
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DockerNginx({describe(self.docker_host)!r}, image={self.image!r})"

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            with translate(what, describe(self.docker_host)):
                yield
        except BackendError as exc:
            raise RouterError(str(exc)) from exc.__cause__

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                with self._errors("cannot run nginx in a container"):
                    self._client = connect(
                        self.docker_host, known_hosts=self.known_hosts, identity_file=self.identity_file
                    )
            return self._client

    @staticmethod
    def container_name(conf: Path) -> str:
        """The router container's name: derived from the workdir (``conf``'s directory)."""
        digest = hashlib.sha256(str(Path(conf).parent).encode()).hexdigest()[:12]
        return f"workbench-router-{digest}"

    def _container(self, conf: Path) -> Any:
        client = self.client
        with self._errors("cannot inspect the router container"):
            try:
                return client.containers.get(self.container_name(conf))
            except sdk().errors.NotFound:
                return None

    def _remove(self, container: Any) -> None:
        with self._errors("cannot remove the router container"), contextlib.suppress(sdk().errors.NotFound):
            container.remove(force=True)

    def _output(self, container: Any) -> str:
        gone = sdk().errors.NotFound
        with self._errors("cannot read the router container's logs"), contextlib.suppress(gone):
            return bytes(container.logs(stdout=True, stderr=True)).decode("utf-8", "replace")
        return ""

    @staticmethod
    def _nginx(conf: Path, *extra: str) -> list[str]:
        return ["nginx", *extra, "-p", f"{conf.parent}/", "-c", str(conf)]

    def _volumes(self, conf: Path) -> dict[str, dict[str, str]]:
        return {str(conf.parent): {"bind": str(conf.parent), "mode": "rw"}}

    def _run_once(self, command: Sequence[str], conf: Path) -> tuple[int, str]:
        """Run ``command`` in a throwaway container; its exit code and output."""
        client = self.client
        with self._errors("cannot run nginx in a container"):
            container = client.containers.create(
                self.image, list(command), network_mode="host", user=self.user,
                volumes=self._volumes(conf), labels={f"{LABEL}.role": "router-check"},
                healthcheck={"test": ["NONE"]},
            )
        try:
            with self._errors("cannot run nginx in a container"):
                container.start()
                code = int(container.wait(timeout=self.start_timeout).get("StatusCode", 1))
            return code, self._output(container)
        finally:
            self._remove(container)

    # -- NginxRunner -----------------------------------------------------------------------

    def check(self, conf: Path) -> None:
        conf = Path(conf)
        args = self._nginx(conf, "-t", "-q")
        running = self._container(conf)
        if running is not None and running.status == "running":
            with self._errors("cannot run `nginx -t`"):
                result = running.exec_run(args, user=self.user)
            code = result.exit_code
            output = bytes(result.output or b"").decode("utf-8", "replace")
        else:
            code, output = self._run_once(args, conf)
        if code != 0:
            raise RouterError(
                "nginx rejected the configuration:\n" + (output.strip() or f"exit status {code}")
            )

    def is_running(self, conf: Path) -> bool:
        container = self._container(Path(conf))
        return container is not None and container.status == "running"

    def _workers(self, container: Any) -> dict[str, bool]:
        """nginx worker pids in ``container`` -> whether each is shutting down."""
        with self._errors("cannot list the router's processes"):
            top = container.top(ps_args="-eo pid,args")
        titles = [str(t).upper() for t in top.get("Titles") or []]
        pid_col = titles.index("PID") if "PID" in titles else 0
        workers = {}
        for row in top.get("Processes") or []:
            cmd = " ".join(row[pid_col + 1:])
            if "nginx: worker process" in cmd:
                workers[str(row[pid_col])] = "shutting down" in cmd
        return workers

    def start(self, conf: Path) -> None:
        conf = Path(conf)
        existing = self._container(conf)
        if existing is not None:
            if existing.status == "running":
                return
            self._remove(existing)  # a stopped router of this workdir
        workdir = conf.parent
        (workdir / PID_FILE).unlink(missing_ok=True)
        client = self.client
        with self._errors("cannot start the router container"):
            container = client.containers.run(
                self.image,
                ["router", str(conf)],
                name=self.container_name(conf),
                detach=True,
                network_mode="host",
                user=self.user,
                volumes=self._volumes(conf),
                labels={f"{LABEL}.role": "router", f"{LABEL}.router": str(workdir)},
                log_config={"type": "json-file", "config": {"max-size": "10m", "max-file": "2"}},
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            with self._errors("cannot watch the router container"):
                container.reload()
            if container.status in ("exited", "dead"):
                code = (container.attrs.get("State") or {}).get("ExitCode")
                output = "\n".join(
                    filter(None, (self._output(container).strip(), tail(workdir / ERROR_LOG)))
                )
                self._remove(container)
                raise RouterError(
                    f"nginx exited with status {code} while starting:\n"
                    + "\n".join(output.splitlines()[-20:])
                )
            if (workdir / PID_FILE).exists() and self._workers(container):
                logger.debug("router container %s runs for %s", container.short_id, workdir)
                return
            if time.monotonic() > deadline:
                output = self._output(container)
                self._remove(container)
                raise RouterError(
                    f"nginx did not start within {self.start_timeout:g} s:\n{output.strip()}"
                )
            time.sleep(0.05)

    def reload(self, conf: Path) -> None:
        conf = Path(conf)
        container = self._container(conf)
        if container is None or container.status != "running":
            raise RouterError(f"nginx is not running for {conf.parent}; start it first")
        old = set(self._workers(container))
        log = conf.parent / ERROR_LOG
        offset = size(log)
        with self._errors("cannot signal nginx"):
            container.kill(signal="SIGHUP")
        wait_reloaded(lambda: self._workers(container), old, log, offset, self.reload_timeout, poll=0.02)

    def stop(self, conf: Path, timeout: float = 10.0) -> None:
        container = self._container(Path(conf))
        if container is None:
            return
        if container.status == "running":
            try:
                with self._errors("cannot stop nginx"), contextlib.suppress(sdk().errors.NotFound):
                    container.kill(signal="SIGQUIT")  # graceful: requests in flight finish
                    container.wait(timeout=timeout)
            except RouterError as exc:
                logger.warning("router container %s did not stop gracefully (%s); removing it",
                               container.short_id, exc)
        self._remove(container)
