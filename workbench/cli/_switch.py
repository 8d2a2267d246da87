"""The brake's first move: all traffic to stable, with the standard library only.

:mod:`workbench.deploy.prepared` keeps, beside a deployment's router, the state revision
a rollback was prepared for and the name of the router configuration's brake file
(:func:`workbench.deploy.routing.brake_file`): while that file exists, the running
configuration sends every request to the stable colour, as the rollback will, with no
reload. :func:`switch` takes the deployment's lock (``flock`` on the file FileLock
uses) and, when the state file still has that revision and the router's master runs on
the configuration that checks for that file, creates it: the next request goes to
stable. The lock stays held: the caller runs the ordinary rollback inside it
(:meth:`~workbench.deploy.state.StateStore.held`), which installs the rolled-back
configuration and records the rest. Whenever anything does not match, the lock is let
go and nothing has changed: the ordinary path does it all.

Imports stay few (``os``, ``fcntl``, ``json``, ``time``): their cost is paid before the
switch, on the busy host where a rollback is typed.
"""

from __future__ import annotations

import fcntl
import json
import os
import time

__all__ = ["Switched", "switch"]

_LOCK_WAIT = 2.0  # longer than that, and the ordinary path waits (with its own message)


class Switched:
    """The deployment's lock, held by this process: :meth:`release` it when done."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def release(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        except OSError:
            pass
        os.close(self.fd)


def _home() -> str:
    value = os.environ.get("WORKBENCH_HOME", "").strip()  # as workbench.settings reads it
    return os.path.expanduser(value or "~/.workbench")


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as file:
        return file.read()


def _flock(path: str) -> int | None:
    """A descriptor of ``path`` holding its exclusive ``flock``, or None after ``_LOCK_WAIT``."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError:
        return None
    deadline = time.monotonic() + _LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_nlink:  # not a lock file removed meanwhile
                return fd
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            pass
        if time.monotonic() > deadline:
            os.close(fd)
            return None
        time.sleep(0.002)


def _master(pid_file: str, conf: str) -> int | None:
    """The pid of the nginx master running on ``conf``, or None."""
    try:
        pid = int(_read(pid_file).strip())
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            cmdline = file.read().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return None
    return pid if conf in cmdline else None


def switch(name: str) -> Switched | None:
    """Pull ``name``'s brake: the deployment's lock, still held, or None when the
    prepared rollback does not apply (nothing changed, lock let go)."""
    if not name or name.startswith(".") or "/" in name:
        return None
    directory = os.path.join(_home(), "deployments", name)
    try:
        prepared = json.loads(_read(os.path.join(directory, "router", "rollback.json")))
        state_lock = str(prepared["state_lock"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    fd = _flock(state_lock)
    if fd is None:
        return None
    held = Switched(fd)
    try:
        if _pull(directory, prepared):
            return held
    except (OSError, ValueError, KeyError, TypeError):
        pass
    held.release()
    return None


def _pull(directory: str, prepared: dict[str, object]) -> bool:
    """Under the deployment's lock: create the brake file, if it is for this state and
    the configuration the router runs."""
    state = json.loads(_read(os.path.join(directory, "state.json")))
    if state.get("revision") != prepared["state_revision"]:
        return False  # stale: the state moved on since
    conf, brake = str(prepared["conf"]), str(prepared["brake"])
    router_lock = _flock(str(prepared["router_lock"]))
    if router_lock is None:
        return False
    try:  # the router's files do not change meanwhile
        text = _read(conf)
        heading = text.partition("\n")[0]
        if (f"(revision {prepared['router_revision']})" not in heading
                or f"if (-f {brake}) {{" not in text
                or _master(str(prepared["pid_file"]), conf) is None):
            return False
        os.close(os.open(brake, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
    finally:
        fcntl.flock(router_lock, fcntl.LOCK_UN)
        os.close(router_lock)
    return True
