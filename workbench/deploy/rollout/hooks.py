"""Where canary events go besides the log — delivered off the controller's path.

A hook is a command (it gets the event as JSON on stdin) or an http(s) URL (the event is
POSTed to it). :class:`Hooks` keeps one delivery queue and one worker thread per hook, so
:meth:`Hooks.send` returns at once: a rollback, and the next tick, never wait on a hook,
and a slow hook delays no other. Each delivery has a total deadline (``timeout``): an URL
from connect to the last byte of its answer (:func:`~workbench.deploy.http.request_within`),
a command until it exits — it runs in its own process group, killed as a group at the
deadline, so a ``sleep 600`` it started does not outlive it. A failed delivery (an error,
a non-2xx answer, a nonzero exit, the deadline) is retried ``retries`` times with
exponential backoff, then logged and dropped.

The one synchronous hook is the promotion gate (:meth:`Hooks.confirm`): every ``confirm``
hook must accept the promotion (2xx, exit 0) within ``timeout`` in all; anything else,
the deadline included, means "not confirmed" and the controller pauses the canary.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from workbench.deploy.http import request_within

__all__ = ["Hooks", "deliver"]

log = logging.getLogger(__name__)
events_log = logging.getLogger("workbench.deploy.events")
#: process groups of the hook commands running now (killed if this process exits first)
_RUNNING: set[int] = set()
_RUNNING_LOCK = threading.Lock()
#: every Hooks of this process, drained (bounded) when it exits
_ALL: weakref.WeakSet[Hooks] = weakref.WeakSet()


def deliver(target: str, body: str, seconds: float) -> tuple[bool, str]:
    """Deliver ``body`` to ``target`` once within ``seconds``: (accepted, what happened)."""
    started = time.monotonic()
    try:
        if target.startswith(("http://", "https://")):
            answer = request_within("POST", target, seconds, body=body.encode(),
                                    headers={"content-type": "application/json"})
            ok = 200 <= answer.status < 300
            return ok, f"answered {answer.status}"
        return _run(target, body, seconds)
    except Exception as exc:  # a broken hook is reported, never raised into the controller
        took = time.monotonic() - started
        return False, f"{type(exc).__name__}: {exc} (after {took:.1f} s)"


def _run(command: str, body: str, seconds: float) -> tuple[bool, str]:
    """Run the user's hook command in its own process group; kill the group at the deadline."""
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(  # the user's own hook command
            command, shell=True, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=errors, start_new_session=True,
        )
        with _RUNNING_LOCK:
            _RUNNING.add(process.pid)
        try:
            assert process.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                process.stdin.write(body.encode())
                process.stdin.close()
            code = process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid)
            process.wait()
            return False, f"killed with its process group after {seconds:g} s"
        finally:
            _kill_group(process.pid)  # whatever it left running in its group goes with it
            with _RUNNING_LOCK:
                _RUNNING.discard(process.pid)
        errors.seek(0)
        tail = errors.read()[-300:].decode(errors="replace").strip()
    if code == 0:
        return True, "exited 0"
    return False, f"exited {code}" + (f": {tail}" if tail else "")


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@atexit.register
def _at_exit() -> None:
    """A process that exits (a CLI command, a detached controller) first gives queued
    deliveries one deadline to go out, then leaves no hook command behind (daemon
    workers stop without their ``finally``)."""
    hooks = list(_ALL)
    end = time.monotonic() + max((h.timeout for h in hooks), default=0.0) + 1.0
    for each in hooks:
        each.drain(max(0.0, end - time.monotonic()))
    with _RUNNING_LOCK:
        for pgid in list(_RUNNING):
            _kill_group(pgid)


class Hooks:
    """The event hooks (``targets``) and promotion gates (``confirm``) of one canary."""

    def __init__(
        self,
        targets: Sequence[str] = (),
        *,
        confirm: Sequence[str] = (),
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.5,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"a hook timeout must be positive, not {timeout}")
        self.targets = tuple(targets)
        self.gates = tuple(confirm)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._queues: dict[str, queue.Queue[str | None]] = {}
        self._pending = 0
        self._idle = threading.Condition()
        self.failures: list[tuple[str, str]] = []  # (target, why) of dropped deliveries
        _ALL.add(self)

    def __repr__(self) -> str:
        return f"<Hooks {len(self.targets)} targets, {len(self.gates)} gates>"

    def send(self, event: Mapping[str, Any]) -> None:
        """Log ``event`` and queue it for every hook; returns at once."""
        body = json.dumps(event, sort_keys=True)
        events_log.info(body)
        for target in self.targets:
            with self._idle:
                self._pending += 1
            self._queue(target).put(body)

    def confirm(self, event: Mapping[str, Any]) -> tuple[bool, str]:
        """Ask every promotion gate, within ``timeout`` in all: (confirmed, why not)."""
        body = json.dumps(event, sort_keys=True)
        deadline = time.monotonic() + self.timeout
        for gate in self.gates:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, f"confirm hook {gate} got no time within {self.timeout:g} s"
            ok, what = deliver(gate, body, left)
            if not ok:
                return False, f"confirm hook {gate} {what}"
        return True, "confirmed" if self.gates else "no confirm hooks"

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the queued deliveries; whether all were done."""
        end = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self) -> None:
        """Stop the workers once their queues are done (a later send starts new ones)."""
        with self._idle:
            queues, self._queues = self._queues, {}
        for q in queues.values():
            q.put(None)

    # -- internals -----------------------------------------------------------------------

    def _queue(self, target: str) -> queue.Queue[str | None]:
        with self._idle:
            if target not in self._queues:
                self._queues[target] = queue.Queue()
                worker = threading.Thread(target=self._work,
                                          args=(target, self._queues[target]), daemon=True,
                                          name=f"hook {target[:40]}")
                worker.start()
            return self._queues[target]

    def _work(self, target: str, q: queue.Queue[str | None]) -> None:
        while True:
            body = q.get()
            if body is None:
                return
            try:
                self._deliver(target, body)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _deliver(self, target: str, body: str) -> None:
        what = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            ok, what = deliver(target, body, self.timeout)
            if ok:
                return
            log.info("event hook %s: attempt %d failed: %s", target, attempt + 1, what)
        log.warning("event hook %s failed %d times, dropped: %s", target, self.retries + 1, what)
        with self._idle:
            self.failures.append((target, what))
