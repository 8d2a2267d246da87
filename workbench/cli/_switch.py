"""The brake's first move: install the prepared rollback with the standard library only.

:mod:`workbench.deploy.prepared` keeps, beside a deployment's router configuration, the
checked configuration its rollback would install and the state revision it was made
for. :func:`switch` takes the deployment's lock (``flock`` on the file FileLock uses),
and when the state file still has that revision and the router's master runs on that
configuration, renames the prepared file over it, signals the master (SIGHUP) and waits
until ``/router/table`` shows the new revision. The lock stays held: the caller runs
the ordinary rollback inside it (:meth:`~workbench.deploy.state.StateStore.held`), which
finds the router switched and records the rest. Whenever anything does not match, the
lock is let go and nothing has changed: the ordinary path does it all.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import time
from pathlib import Path

__all__ = ["Switched", "switch"]

_LOCK_WAIT = 2.0  # longer than that, and the ordinary path waits (with its own message)
_SHOW_WAIT = 5.0  # as NginxRouter.ready_timeout


class Switched:
    """The deployment's lock, held by this process: :meth:`release` it when done."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _home() -> Path:
    value = os.environ.get("WORKBENCH_HOME", "").strip()  # as workbench.settings reads it
    return Path(value).expanduser() if value else Path.home() / ".workbench"


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
        pid = int(Path(pid_file).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return None
    return pid if conf in cmdline else None


def _shows(url: str, revision: str, deadline: float) -> bool:
    """Whether ``GET url/router/table`` (fresh connections) shows ``revision`` by ``deadline``."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    host = host.strip("[]")
    request = f"GET /router/table HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=1.0) as sock:
                sock.sendall(request)
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
            if head.startswith(b"HTTP/1.1 200") and json.loads(body).get("revision") == revision:
                return True
        except (OSError, ValueError, AttributeError):
            pass
        time.sleep(0.003)
    return False


def switch(name: str) -> Switched | None:
    """Install ``name``'s prepared rollback; the deployment's lock, still held, or None
    when the prepared rollback does not apply (nothing changed, lock let go)."""
    if not name or name.startswith(".") or "/" in name:
        return None
    directory = _home() / "deployments" / name
    try:
        prepared = json.loads((directory / "router" / "rollback.json").read_text())
        state_lock = str(prepared["state_lock"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    fd = _flock(state_lock)
    if fd is None:
        return None
    held = Switched(fd)
    try:
        if _install(directory, prepared):
            return held
    except (OSError, ValueError, KeyError, TypeError):
        pass
    held.release()
    return None


def _install(directory: Path, prepared: dict[str, object]) -> bool:
    """Under the deployment's lock: the switch, if the prepared file is for this state."""
    state = json.loads((directory / "state.json").read_text())
    if state.get("revision") != prepared["state_revision"]:
        return False  # stale: the state moved on since
    conf, source = str(prepared["conf"]), str(prepared["prepared"])
    pid = _master(str(prepared["pid_file"]), conf)
    if pid is None or not Path(source).exists():
        return False
    router_lock = _flock(str(prepared["router_lock"]))
    if router_lock is None:
        return False
    try:
        workdir = Path(conf).parent
        table = workdir / "table.json"
        fresh = workdir / ".table.json.brake"
        fresh.write_text(json.dumps(prepared["table"], indent=2))
        fresh.chmod(0o600)
        os.replace(source, conf)  # the switch: checked by nginx -t when prepared
        os.replace(fresh, table)
        (directory / "router" / "rollback.json").unlink(missing_ok=True)
        os.kill(pid, signal.SIGHUP)
        _shows(str(prepared["url"]), str(prepared["revision"]), time.monotonic() + _SHOW_WAIT)
    finally:
        fcntl.flock(router_lock, fcntl.LOCK_UN)
        os.close(router_lock)
    return True  # switched or not yet shown, the ordinary rollback applies the same table
