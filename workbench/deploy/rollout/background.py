"""A slow read kept off the controller's looks: :class:`BackgroundRead`.

The output check (a replay of recent requests to both colours) takes from a fraction of
a second to several on a busy host. Run on the controller's thread at the end of an
interval, it blinded the controller for that long: no scrape, no sequential test, no
rollback of a candidate failing meanwhile. :class:`BackgroundRead` runs it on a thread of
its own and lets each look ask whether it is done, waiting at most a little::

    reader = BackgroundRead(output_check)
    done, check, error = reader.poll(key=step_began, wait=0.25)

A result is handed out once, and only to a poll with the ``key`` it was started for (the
step it belongs to): one started before an advance, a pause or a rollback is dropped and
the next poll starts afresh.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["BackgroundRead"]


class BackgroundRead:
    """``read()`` run on a daemon thread, one call at a time (see the module docstring)."""

    def __init__(self, read: Callable[[], Any]) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._key: Hashable = None
        self._outcome: tuple[Any, BaseException | None] | None = None

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def poll(self, key: Hashable, wait: float = 0.0) -> tuple[bool, Any, BaseException | None]:
        """``(done, value, error)``: the outcome of the read started for ``key`` once it is
        done (``error``: what it raised), else ``(False, None, None)`` with the read
        started (if none for ``key`` runs) and waited for at most ``wait`` seconds."""
        with self._lock:
            if self._key != key:  # a read for another step: its outcome will not be used
                self._outcome = None
                if not self.running:
                    self._thread = None
            if self._thread is None:
                self._key, self._outcome = key, None
                self._thread = threading.Thread(target=self._run, args=(key,), daemon=True,
                                                name="canary-output-check")
                self._thread.start()
            thread = self._thread
        thread.join(max(wait, 0.0))
        with self._lock:
            outcome = self._outcome
            if outcome is None or self._key != key:
                return False, None, None
            self._thread, self._outcome = None, None  # handed out once
            return True, outcome[0], outcome[1]

    def _run(self, key: Hashable) -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (self._read(), None)
        except Exception as exc:  # the caller counts a failed read, never dies of it
            outcome = (None, exc)
        with self._lock:
            if self._key == key:
                self._outcome = outcome
