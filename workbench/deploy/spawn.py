"""Processes that belong to nobody: serving instances and nginx masters.

A process started by a notebook kernel must not be the kernel's child: when it exits,
nobody waits for it (a zombie), and another process (a shell running ``workbench deploy
delete``) could only watch its pid linger. :func:`launch_detached` starts it through a
short-lived helper, in its own session; :func:`wait_gone` waits for a pid to end, from
any process, counting a zombie as ended.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from pathlib import Path

#: Runs in a short-lived helper process: starts the instance in its own session, waits
#: the start grace (reaping an instance that exits at once, to report its exit code),
#: prints ``pid <n>`` or ``exit <code>`` and exits. The instance is then nobody's child
#: (its parent is init or the nearest subreaper), so no caller leaves a zombie behind.
_LAUNCHER = r"""
import json, os, subprocess, sys, time
job = json.loads(sys.stdin.read())
with open(job["log"], "ab") as out:
    try:
        proc = subprocess.Popen(job["argv"], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=job["env"],
                                start_new_session=True, close_fds=True)
    except OSError as exc:
        print("error", exc, flush=True)
        os._exit(0)
deadline = time.monotonic() + job["grace"]
while time.monotonic() < deadline:
    code = proc.poll()
    if code is not None:
        print("exit", code, flush=True)
        os._exit(0)
    time.sleep(0.02)
print("pid", proc.pid, flush=True)
os._exit(0)
"""


def launch_detached(
    argv: list[str], env: dict[str, str], log_path: Path, grace: float
) -> tuple[int, int | None]:
    """Start ``argv`` detached; ``(pid, None)`` once it survived ``grace``, else ``(0, code)``.

    OSError when it cannot be run at all.
    """
    job = json.dumps({"argv": argv, "env": env, "log": str(log_path), "grace": grace})
    try:
        helper = subprocess.run(
            [sys.executable, "-c", _LAUNCHER], input=job, capture_output=True, text=True,
            timeout=grace + 60, env={"PATH": os.environ.get("PATH", "")},
        )
    except subprocess.TimeoutExpired as exc:
        raise OSError(f"the launcher of {argv[0]} did not answer: {exc}") from exc
    kind, _, value = helper.stdout.strip().partition(" ")
    if kind == "pid":
        return int(value), None
    if kind == "exit":
        return 0, int(value)
    detail = value or "".join(helper.stderr.strip().splitlines()[-1:]) or "no output"
    raise OSError(f"cannot run {argv[0]}: {detail}")


def alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (an exited instance whose parent has not reaped it)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_gone(proc: psutil.Process, timeout: float) -> bool:
    """Wait until ``proc`` ended (gone or a zombie); False if it still runs after ``timeout``."""
    deadline = time.monotonic() + timeout
    while alive(proc):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True
