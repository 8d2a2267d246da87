"""A deployment's canary controller as a process: one at a time, and which one runs.

:func:`controller_lock` is held by the process that runs a deployment's controller (a
detached ``deploy canary-run``, a notebook thread, a foreground ``deploy update``); the
lock file names its pid. :func:`controller_process` tells ``deploy status`` which
controller is the latest and whether it still runs.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workbench.errors import StateError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = [
    "SPAWNED_PID",
    "ControllerProcess",
    "controller_lock",
    "controller_process",
    "controller_running",
]

SPAWNED_PID = "controller.pid"  # written by whoever starts a detached controller


@contextlib.contextmanager
def controller_lock(directory: Path) -> Iterator[Path]:
    """Hold the deployment's controller lock (StateError when another controller runs).

    The lock file records the pid of the holder, for ``deploy status``.
    """
    import fcntl

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "controller.lock"
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateError(
                f"a canary controller already runs for this deployment (pid {_pid(path)})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield path
    finally:
        handle.close()


def controller_running(directory: Path) -> int | None:
    """The pid of the controller that holds the lock, or None when none runs."""
    process = controller_process(directory)
    return process.pid if process.alive else None


@dataclass(frozen=True)
class ControllerProcess:
    """A deployment's canary controller: the pid of the latest one, and whether it runs."""

    pid: int | None  # None: no controller ever started here
    alive: bool  # it holds the controller lock

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "alive": self.alive}


def controller_process(directory: Path) -> ControllerProcess:
    """The deployment's controller as seen now.

    The lock file names its latest holder; a detached start also writes
    ``controller.pid``, which names a controller that has not taken the lock yet (or died
    before it could): the newer of the two files is the latest controller.
    """
    import fcntl

    path = directory / "controller.lock"
    if path.exists():
        with path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return ControllerProcess(_pid(path), True)
            fcntl.flock(handle, fcntl.LOCK_UN)
    candidates = [p for p in (path, directory / SPAWNED_PID) if p.exists()]
    latest = max(candidates, key=lambda p: p.stat().st_mtime_ns, default=None)
    return ControllerProcess(None if latest is None else _pid(latest), False)


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None
