"""Synthetic traffic: sample inputs sent at a steady rate, so a quiet canary can be judged.

:class:`SyntheticTraffic` sends one row at a time of its inputs (the reservoir or the
manifest sample, cycled) to an instance or a router from a background thread, at
``rate`` requests per second, until it has sent ``max_requests``, ``max_seconds`` have
passed or :meth:`~SyntheticTraffic.stop` is called — whichever comes first. Requests
carry ``x-workbench-synthetic: 1``, so logs can tell them from users'. One request is in
flight at a time: the rate reached is at most one over the instance's latency::

    with SyntheticTraffic(candidate_url, "digits", sample, rate=20, max_seconds=60) as traffic:
        ...                     # the analysis window fills
    traffic.counts              # {"sent": 1200, "ok": 1187, "failed": 13}
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import ServingError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from workbench._types import Array

__all__ = ["SYNTHETIC_HEADER", "SyntheticTraffic"]

log = logging.getLogger(__name__)
SYNTHETIC_HEADER = "x-workbench-synthetic"


class SyntheticTraffic:
    """Bounded, stoppable synthetic requests to ``url`` (an instance or a router)."""

    def __init__(
        self,
        url: str,
        model: str,
        inputs: Mapping[str, Array],
        *,
        rate: float,
        max_requests: int = 10_000,
        max_seconds: float = 600.0,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not 0 < rate <= 1000:
            raise ValueError(f"the synthetic rate must be in (0, 1000] requests/s, not {rate}")
        if max_requests < 1 or max_seconds <= 0:
            raise ValueError("max_requests and max_seconds must be positive")
        rows = {np.asarray(a).shape[0] if np.ndim(a) else 0 for a in inputs.values()}
        if len(rows) != 1 or not rows.pop():
            raise ValueError("synthetic inputs need at least one row, the same in every input")
        self.url = url.rstrip("/")
        self.model = model
        self.inputs = {name: np.asarray(array) for name, array in inputs.items()}
        self.rate = rate
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.timeout = timeout
        self.headers = {SYNTHETIC_HEADER: "1", **(headers or {})}
        self.counts = {"sent": 0, "ok": 0, "failed": 0}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SyntheticTraffic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> SyntheticTraffic:
        if self._thread is not None:
            raise RuntimeError("synthetic traffic was already started; make a new one")
        self._thread = threading.Thread(target=self._run, name="workbench-synthetic",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop sending and wait for the request in flight (at most ``timeout`` + its own)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 1.0 if timeout is None else timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until it stops by itself; True if it did."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def _run(self) -> None:
        from workbench.deploy.client import ServingClient

        rows = next(iter(self.inputs.values())).shape[0]
        started = time.monotonic()
        interval = 1.0 / self.rate
        with ServingClient(self.url, timeout=self.timeout, headers=self.headers) as client:
            for i in range(self.max_requests):
                due = started + i * interval
                if due - started >= self.max_seconds:
                    break
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    break
                row = i % rows
                batch: dict[str, Any] = {n: a[row : row + 1] for n, a in self.inputs.items()}
                self.counts["sent"] += 1
                try:
                    client.infer(self.model, batch)
                    self.counts["ok"] += 1
                except ServingError as exc:
                    self.counts["failed"] += 1
                    log.debug("synthetic request failed: %s", exc)
        log.info("synthetic traffic to %s stopped: %s", self.url, self.counts)
