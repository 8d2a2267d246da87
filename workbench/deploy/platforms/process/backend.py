"""The process backend: serving instances as local processes on loopback ports.

The embedded default; it needs no Docker. Each instance is ``python -m workbench
serve ...`` in a new session (so it outlives the shell or kernel that started it),
its output in a log file, and a small JSON record beside it (pid, process start
time, port, colour, version) so a new shell or a restarted kernel finds it again.
The start time guards against pid reuse: a pid whose process started at another
time is not ours.

::

    <home>/deployments/<name>/instances/<colour>.json   the record
    <home>/deployments/<name>/instances/<colour>.log    stdout and stderr
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from workbench._fs import write_atomic
from workbench.deploy.backend import Backend, Instance, InstanceSpec
from workbench.deploy.names import COLORS, check_deployment_name
from workbench.deploy.ports import port_in_use
from workbench.deploy.spawn import alive as _alive
from workbench.deploy.spawn import launch_detached, wait_gone
from workbench.errors import BackendError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from workbench._types import StrPath

log = logging.getLogger(__name__)

#: Overrides the program that runs ``serve ...`` (shell-quoted), e.g. ``/opt/venv/bin/workbench``.
SERVE_COMMAND_ENV = "WORKBENCH_SERVE_COMMAND"
#: How long a started process must survive before start() returns.
START_GRACE = 0.3


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines))
    except FileNotFoundError:
        return ""


class ProcessBackend(Backend):
    """Starts ``workbench serve`` as local processes and finds them again after a restart."""

    name = "process"

    def __init__(
        self,
        home: StrPath | None = None,
        *,
        command: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
        start_grace: float = START_GRACE,
    ) -> None:
        """``command`` replaces ``[sys.executable, "-m", "workbench"]``, the program that gets
        ``serve ...`` appended; the environment variable ``WORKBENCH_SERVE_COMMAND`` (a
        shell-quoted string) does the same for every backend (e.g. another venv's python)."""
        if home is None:
            from workbench.deploy.state import default_home

            home = default_home()
        self.home = Path(home)
        if not command and os.environ.get(SERVE_COMMAND_ENV, "").strip():
            command = shlex.split(os.environ[SERVE_COMMAND_ENV])
        self.command = list(command) if command else [sys.executable, "-m", "workbench"]
        self.env = dict(env or {})
        self.start_grace = start_grace

    def __repr__(self) -> str:
        return f"ProcessBackend(home={str(self.home)!r})"

    # -- files ---------------------------------------------------------------------------

    def directory(self, deployment: str) -> Path:
        return self.home / "deployments" / check_deployment_name(deployment) / "instances"

    def record_path(self, spec: InstanceSpec) -> Path:
        return self.directory(spec.deployment) / f"{spec.color}.json"

    def log_path(self, spec: InstanceSpec) -> Path:
        return self.directory(spec.deployment) / f"{spec.color}.log"

    # -- Backend -------------------------------------------------------------------------

    def start(self, spec: InstanceSpec) -> Instance:
        if port_in_use(spec.port, spec.host):
            raise BackendError(
                f"cannot start {spec.deployment}/{spec.color}: port {spec.port} on {spec.host} "
                "is in use"
            )
        for existing in self.find(spec.deployment):
            if existing.spec.color == spec.color:
                raise BackendError(
                    f"{spec.deployment}/{spec.color} already runs (pid {existing.ref}); "
                    "stop it first"
                )
        directory = self.directory(spec.deployment)
        directory.mkdir(parents=True, exist_ok=True)
        log_path = self.log_path(spec)
        argv = [*self.command, *spec.serve_args()]
        env = {**os.environ, **self.env, **dict(spec.env), "PYTHONUNBUFFERED": "1"}
        if spec.admin_token:
            env["WORKBENCH_ADMIN_TOKEN"] = spec.admin_token
        log.info("starting %s/%s: %s", spec.deployment, spec.color, " ".join(argv))
        with log_path.open("ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        try:
            pid, code = launch_detached(argv, env, log_path, self.start_grace)
        except OSError as exc:
            raise BackendError(f"cannot start {argv[0]}: {exc}") from exc
        if code is not None:
            raise BackendError(
                f"{spec.deployment}/{spec.color} ({spec.model} {spec.version}) exited with "
                f"code {code} during start; last lines of {log_path}:\n"
                f"{_tail(log_path, 20).rstrip()}"
            )
        try:
            created = psutil.Process(pid).create_time()
        except psutil.Error:
            created = 0.0
        instance = Instance(
            spec=spec,
            backend=self.name,
            ref=str(pid),
            labels={
                "create_time": repr(created),
                "log": str(log_path),
                "deployment": spec.deployment,
                "color": spec.color,
                "version": spec.version,
            },
        )
        self._write_record(instance)
        return instance

    def stop(self, instance: Instance, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to ``timeout`` (the drain time) for the pid to end, then SIGKILL
        its process group. Works from any process: instances are nobody's children."""
        proc = self._process(instance)
        if proc is not None and _alive(proc):
            log.info("stopping %s/%s (pid %s)", instance.spec.deployment, instance.spec.color,
                     instance.ref)
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGTERM)
            if not wait_gone(proc, timeout):
                log.warning("pid %s did not stop within %.0fs; killing it", instance.ref, timeout)
                self._kill_group(proc)
                wait_gone(proc, 5.0)
        record = self.record_path(instance.spec)
        current = self._read_record(record)
        if current is not None and current.get("pid") == instance.ref:
            record.unlink(missing_ok=True)

    def is_running(self, instance: Instance) -> bool:
        proc = self._process(instance)
        return proc is not None and _alive(proc)

    def logs(self, instance: Instance, tail: int = 200) -> str:
        path = Path(instance.labels.get("log", "")) if instance.labels.get("log") else None
        return _tail(path or self.log_path(instance.spec), tail)

    def find(self, deployment: str) -> list[Instance]:
        found = []
        for color in COLORS:
            path = self.directory(deployment) / f"{color}.json"
            data = self._read_record(path)
            if data is None:
                continue
            try:
                instance = self._from_record(data)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("ignoring unreadable instance record %s: %s", path, exc)
                continue
            if self.is_running(instance):
                found.append(instance)
        return found

    # -- helpers -------------------------------------------------------------------------

    def _process(self, instance: Instance) -> psutil.Process | None:
        """The live process of ``instance``, or None (gone, or the pid was reused)."""
        try:
            pid = int(instance.ref)
        except ValueError:
            return None
        try:
            proc = psutil.Process(pid)
            created = proc.create_time()
        except psutil.Error:
            return None
        expected = instance.labels.get("create_time")
        if expected is not None:
            try:
                if abs(float(expected) - created) > 1.0:
                    return None
            except ValueError:
                return None
        return proc

    def _kill_group(self, proc: psutil.Process) -> None:
        try:
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(psutil.Error):
                proc.kill()

    def _write_record(self, instance: Instance) -> None:
        spec = instance.spec
        data = {"pid": instance.ref, "labels": dict(instance.labels), "spec": spec.to_dict()}
        path = self.record_path(spec)
        write_atomic(path, json.dumps(data, indent=2) + "\n")

    @staticmethod
    def _read_record(path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s: %s", path, exc)
            return None
        return data if isinstance(data, dict) else None

    def _from_record(self, data: dict[str, Any]) -> Instance:
        spec = InstanceSpec.from_dict(data["spec"])
        labels = {str(k): str(v) for k, v in dict(data.get("labels", {})).items()}
        return Instance(spec=spec, backend=self.name, ref=str(data["pid"]), labels=labels)
