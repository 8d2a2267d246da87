"""LocalNginx: the router's nginx as a local process (the process backend's router).

An :class:`~workbench.deploy.router.NginxRunner`: ``nginx -c <conf> -p <workdir>/`` in
its own session, so it outlives the Python process that started it; a later runner
finds it again through the pid file in the workdir.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import psutil

from workbench.deploy._nginx import size, tail, wait_reloaded
from workbench.deploy.routing import ERROR_LOG, PID_FILE
from workbench.deploy.spawn import alive, launch_detached, wait_gone
from workbench.errors import RouterError

if TYPE_CHECKING:
    from workbench._types import StrPath

__all__ = ["LocalNginx"]

logger = logging.getLogger(__name__)

OUTPUT_FILE = "nginx.out"  # in the workdir: stderr of a locally started master


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class LocalNginx:
    """Runs nginx as a local process: ``nginx -c <workdir>/nginx.conf -p <workdir>/``.

    The binary is ``binary``, else ``nginx`` on PATH, else ``/usr/sbin/nginx``
    (needs nginx >= 1.19.5 for ``-e``). The master runs in its own session, so it
    outlives the Python process that started it; a later :class:`LocalNginx` finds
    it again through the pid file in the workdir.
    """

    name: ClassVar[str] = "process"

    def __init__(
        self,
        binary: StrPath | None = None,
        *,
        start_timeout: float = 10.0,
        reload_timeout: float = 10.0,
    ) -> None:
        self._binary = str(binary) if binary is not None else None
        self.start_timeout = start_timeout
        self.reload_timeout = reload_timeout
        euid = os.geteuid()
        self.worker_user: str | None = pwd.getpwuid(euid).pw_name if euid == 0 else None

    def __repr__(self) -> str:
        return f"LocalNginx(binary={self._binary!r})"

    @property
    def binary(self) -> str:
        """Path of the nginx executable; RouterError when nginx is not installed."""
        if self._binary is None:
            candidates = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
            found = shutil.which("nginx") or next((c for c in candidates if Path(c).exists()), None)
            if found is None:
                raise RouterError(
                    "nginx is not installed (not on PATH nor in /usr/sbin): install it "
                    "(e.g. `apt-get install nginx-light`) or use the docker router"
                )
            self._binary = found
        return self._binary

    def _args(self, conf: Path) -> list[str]:
        return [self.binary, "-e", "stderr", "-p", f"{conf.parent}/", "-c", str(conf)]

    def check(self, conf: Path) -> None:
        try:
            proc = subprocess.run([*self._args(conf), "-t", "-q"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RouterError(f"could not run `nginx -t`: {exc}") from exc
        if proc.returncode != 0:
            message = (proc.stderr + proc.stdout).strip() or f"exit status {proc.returncode}"
            raise RouterError(f"nginx rejected the configuration:\n{message}")

    def _master(self, conf: Path) -> psutil.Process | None:
        pid = _read_pid(conf.parent / PID_FILE)
        if pid is None:
            return None
        try:
            master = psutil.Process(pid)
            if master.status() == psutil.STATUS_ZOMBIE or "nginx" not in master.name():
                return None
            if str(conf) not in " ".join(master.cmdline()):  # a stale pid file, reused pid
                return None
        except psutil.Error:
            return None
        return master

    def is_running(self, conf: Path) -> bool:
        return self._master(conf) is not None

    def start(self, conf: Path) -> None:
        if self.is_running(conf):
            return
        workdir = conf.parent
        (workdir / PID_FILE).unlink(missing_ok=True)
        out_path = workdir / OUTPUT_FILE
        offset = size(out_path)
        try:
            pid, code = launch_detached(self._args(conf), dict(os.environ), out_path, 0.0)
        except OSError as exc:
            raise RouterError(f"could not start nginx: {exc}") from exc
        if code is not None:
            raise RouterError(f"nginx exited with status {code} while starting:\n" + tail(out_path, offset))
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                master: psutil.Process | None = psutil.Process(pid)
            except psutil.NoSuchProcess:
                master = None
            if master is None or not alive(master):
                raise RouterError("nginx exited while starting:\n" + tail(out_path, offset))
            if _read_pid(workdir / PID_FILE) == pid:
                with contextlib.suppress(psutil.Error):
                    if master.children():
                        logger.debug("nginx master %d started in %s", pid, workdir)
                        return
            if time.monotonic() > deadline:
                self._kill(pid)
                raise RouterError(
                    f"nginx did not start within {self.start_timeout:g} s:\n" + tail(out_path, offset)
                )
            time.sleep(0.01)

    def reload(self, conf: Path) -> None:
        master = self._master(conf)
        if master is None:
            raise RouterError(f"nginx is not running in {conf.parent}; start it first")
        try:
            old = {p.pid for p in master.children()}
        except psutil.Error as exc:
            raise RouterError(f"nginx master {master.pid} went away: {exc}") from exc
        log = conf.parent / ERROR_LOG
        offset = size(log)
        master.send_signal(signal.SIGHUP)

        def workers() -> dict[int, bool]:  # only an old worker's title is worth reading
            try:
                children = master.children()
            except psutil.Error as exc:
                raise RouterError(f"nginx master {master.pid} exited during reload") from exc
            return {c.pid: c.pid in old and _shutting_down(c) for c in children}

        wait_reloaded(workers, old, log, offset, self.reload_timeout, poll=0.002)

    def stop(self, conf: Path, timeout: float = 10.0) -> None:
        """SIGQUIT the master and wait; kill it after ``timeout``. Then kill whatever is
        left of its process group: workers orphaned by a master that died (``kill -9``)
        keep the port until they are killed."""
        master = self._master(conf)
        if master is not None:
            with contextlib.suppress(psutil.Error):
                master.send_signal(signal.SIGQUIT)
            if not wait_gone(master, timeout):
                logger.warning("nginx master %d did not quit in %g s; killing", master.pid, timeout)
                self._kill(master.pid)
        self._kill_orphans(conf)

    @staticmethod
    def _kill_orphans(conf: Path) -> None:
        """Kill the nginx processes left in the process group of this workdir's master.

        The master runs in its own session, so its pid (in ``nginx.pid``, which a killed
        master leaves behind) is the process group of every worker it forked.
        """
        group = _read_pid(conf.parent / PID_FILE)
        if group is None:
            return
        orphans = []
        for proc in psutil.process_iter(["name"]):
            with contextlib.suppress(psutil.Error, OSError):
                if proc.info["name"] == "nginx" and os.getpgid(proc.pid) == group and alive(proc):
                    orphans.append(proc)
        for proc in orphans:
            logger.warning("killing orphaned nginx process %d of %s", proc.pid, conf.parent)
            with contextlib.suppress(psutil.Error):
                proc.kill()
        for proc in orphans:
            wait_gone(proc, 5.0)

    @staticmethod
    def _kill(pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            master = psutil.Process(pid)
            procs = [*master.children(), master]
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            for p in procs:
                wait_gone(p, 5.0)


def _shutting_down(worker: psutil.Process) -> bool:
    """An old worker that closed its listening sockets (nginx retitles it first)."""
    try:
        return "shutting down" in " ".join(worker.cmdline())
    except psutil.Error:  # gone (or a zombie): not accepting either
        return True
