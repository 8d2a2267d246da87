"""A loaded version whose predictors run in worker processes, one per ``workers``.

Same interface as :class:`~workbench.runtime.loaded.LoadedVersion` (the hub, serving,
compare and the watcher use it unchanged). What differs:

- each worker is a spawned process owning one predictor on the version's device, so
  ``workers`` scale CPU throughput with cores and the front never imports Paddle;
- ``close`` drains, then stops the workers: their memory returns to the system;
- a worker that dies fails only the batch it was running (:class:`WorkerDiedError`,
  naming the version), the version goes ``down`` (not ready) and the worker restarts
  with backoff (0, 1, 1, 2, 3, 5 ... s), reloads, warms, and the version is ready again;
- ``memory`` is what the workers hold now (their RSS; GPU memory per process via NVML).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from workbench.errors import HubError, WorkerDiedError
from workbench.runtime.loaded import LoadedVersion, LoadState
from workbench.runtime.memory import MemoryUsage, gpu_memory_used, process_rss
from workbench.runtime.worker import STOP_TIMEOUT, WorkerPredictor, backoff_delays, wait_for_exit

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from workbench._types import Tensors, TensorsIn
    from workbench.model.manifest import Manifest
    from workbench.model.version import Version
    from workbench.runtime.device import Device

log = logging.getLogger(__name__)
MONITOR_INTERVAL = 0.5


class _WorkerLane:
    """One worker process; the lane interface :class:`LoadedVersion` drives."""

    def __init__(self, worker: WorkerPredictor) -> None:
        self.worker = worker
        self.state = "ready"  # ready | down
        # set while no event loop waits on this worker's channel (see start_predict):
        # a restart must not close a descriptor a loop still watches
        self.loop_idle = threading.Event()
        self.loop_idle.set()

    def run(self, inputs: TensorsIn) -> Tensors:
        return self.worker.run(inputs)

    def close(self) -> None:
        self.worker.release()


class ProcessLoadedVersion(LoadedVersion):
    """A version served by ``workers`` worker processes; thread-safe like its parent."""

    isolation = "process"

    def __init__(
        self,
        *,
        model: str,
        version: Version,
        manifest: Manifest,
        path: Path,
        device: Device,
        workers: int = 1,
        cpu_threads: int = 1,
        warmup_batch_sizes: tuple[int, ...] = (),
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:
        # no ``factory``: each worker process builds its own predictor from ``path``
        super().__init__(
            model=model,
            version=version,
            manifest=manifest,
            path=path,
            device=device,
            workers=workers,
            cpu_threads=cpu_threads,
            warmup_batch_sizes=warmup_batch_sizes,
        )
        self._on_event = on_event
        self._cond = threading.Condition()
        self._free: list[_WorkerLane] = []
        self._worker_lanes: list[_WorkerLane] = []
        self._closing = threading.Event()
        self._monitor: threading.Thread | None = None
        self.restarts = 0

    def __repr__(self) -> str:
        return (
            f"<ProcessLoadedVersion {self.model}:{self.version} on {self.device} "
            f"x{self.workers} ({self.state.value})>"
        )

    @property
    def label(self) -> str:
        return f"{self.model}:{self.version}"

    def _emit(self, kind: str, message: str) -> None:
        log.warning("%s %s: %s", kind, self.label, message)
        if self._on_event is not None:
            self._on_event(kind, message)

    def _new_worker(self) -> WorkerPredictor:
        return WorkerPredictor(
            label=self.label,
            path=self.path,
            device=self._device,
            cpu_threads=self._cpu_threads,
            input_names=[spec.name for spec in self.manifest.inputs],
        ).start()

    # -- lifecycle -------------------------------------------------------------------

    def open(self, *, warmup: bool = True) -> ProcessLoadedVersion:
        """Start the workers in parallel, warm each one; then the version is READY."""
        started = time.perf_counter()
        # read now: the version's files may go once it is loaded
        log.debug("%s: weights %d bytes", self.label, self.weights_bytes)
        with ThreadPoolExecutor(self.workers) as pool:
            futures = [pool.submit(self._new_worker) for _ in range(self.workers)]
        lanes: list[_WorkerLane] = []
        failure: BaseException | None = None
        for future in futures:
            try:
                lanes.append(_WorkerLane(future.result()))
            except BaseException as exc:
                failure = failure or exc
        self._worker_lanes = lanes
        self._lanes = lanes  # type: ignore[assignment]
        try:
            if failure is not None:
                raise failure
            if warmup:
                self.state = LoadState.WARMING
                self._warm_up()
        except BaseException:
            for lane in lanes:
                lane.close()
            self._lanes = []
            self._worker_lanes = []
            raise
        self._free = list(lanes)
        self.load_seconds = time.perf_counter() - started
        self.loaded_at = time.time()
        self.state = LoadState.READY
        self._monitor = threading.Thread(
            target=self._watch_workers, name=f"workbench-monitor-{self.label}", daemon=True
        )
        self._monitor.start()
        log.info(
            "%s ready on %s in %.2fs, %d worker process(es) %s (%s)",
            self.label, self.device, self.load_seconds, self.workers, self.worker_pids, self.memory,
        )
        return self

    def close(self, timeout: float | None = 30.0) -> None:
        """Drain in-flight requests, then stop every worker process (its memory returns)."""
        with self._lock:
            if not self._drain(timeout):
                return
            self._closing.set()  # before the workers stop: their exit is no death
        with self._cond:
            lanes, self._worker_lanes, self._free, self._lanes = self._worker_lanes, [], [], []
            self._cond.notify_all()
        if self._monitor is not None:
            self._monitor.join(timeout=5)
        for lane in lanes:
            if lane.state == "ready":  # a restarting lane is released by its restart thread
                lane.close()
        log.info("%s unloaded; %d worker process(es) stopped", self.label, len(lanes))

    # -- requests --------------------------------------------------------------------

    def predict(self, inputs: TensorsIn, *, validate: bool = True) -> Tensors:
        """Run one batch on an idle worker; thread-safe."""
        arrays = self.validate(inputs) if validate else dict(inputs)
        self.acquire()
        try:
            lane = self._take()
            started = time.perf_counter()
            try:
                outputs = lane.run(arrays)
            except WorkerDiedError:
                self._failed += 1
                self._worker_exited(lane)
                raise
            except Exception:
                self._failed += 1
                self._give(lane)
                raise
            self._give(lane)
            self._latencies.append(time.perf_counter() - started)
            self._served += 1
            return outputs
        finally:
            self.release()

    def start_predict(self, parts: Sequence[TensorsIn]) -> asyncio.Future[Tensors] | None:
        """Send ``parts`` (validated, stacked along the batch axis) to an idle worker from
        the running event loop; a future for the outputs, or None when no worker is idle.

        No thread hop: the tensors go straight into the worker's shared memory (one copy,
        no concatenation), the control message goes out from the loop, and the reply is
        read when the loop sees the channel readable. Cancelling the future does not
        cancel the batch: the worker is taken back only once its reply is read, so a
        late reply is never mistaken for the next batch's.
        """
        loop = asyncio.get_running_loop()
        with self._cond:
            if not self._free:
                return None
            lane = self._free.pop()
        try:
            self.acquire()
        except HubError:
            self._give(lane)
            raise
        started = time.perf_counter()
        future: asyncio.Future[Tensors] = loop.create_future()
        try:
            conn = lane.worker.send(parts)
        except BaseException:
            self._failed += 1
            if lane.worker.broken:
                self._worker_exited(lane)
            else:
                self._give(lane)
            self.release()
            raise
        fd = conn.fileno()
        lane.loop_idle.clear()

        def on_reply() -> None:
            loop.remove_reader(fd)
            os.set_blocking(fd, True)  # libuv (uvloop) made it non-blocking; replies are read whole
            try:
                outputs = lane.worker.receive(conn)
            except BaseException as exc:
                self._failed += 1
                lane.loop_idle.set()
                if isinstance(exc, WorkerDiedError):
                    self._worker_exited(lane)
                else:
                    self._give(lane)
                if not future.done():
                    future.set_exception(exc)
            else:
                lane.loop_idle.set()
                self._give(lane)
                self._latencies.append(time.perf_counter() - started)
                self._served += 1
                if not future.done():
                    future.set_result(outputs)
            finally:
                self.release()

        loop.add_reader(fd, on_reply)
        return future

    def _prime_idle(self) -> int:
        """Every idle worker, through the front's shared memory and control channel."""
        with self._cond:
            lanes, self._free = self._free, []
        primed = 0
        for lane in lanes:
            primed += self._prime_lane(lane)
            if lane.worker.broken:
                self._worker_exited(lane)
            else:
                self._give(lane)
        return primed

    def _take(self) -> _WorkerLane:
        with self._cond:
            while not self._free:
                if self._closing.is_set():
                    raise HubError(f"{self.label} is unloaded")
                if all(lane.state == "down" for lane in self._worker_lanes):
                    raise WorkerDiedError(
                        f"{self.label} is down: its worker process died and is restarting"
                    )
                self._cond.wait(0.5)
            return self._free.pop()

    def _give(self, lane: _WorkerLane) -> None:
        with self._cond:
            if lane.state == "ready":
                self._free.append(lane)
                self._cond.notify()

    # -- death and restart -----------------------------------------------------------

    def _watch_workers(self) -> None:
        while not self._closing.is_set():
            with self._cond:
                watched = {
                    lane.worker.sentinel: lane
                    for lane in self._worker_lanes
                    if lane.state == "ready" and lane.worker.sentinel is not None
                }
            for sentinel in wait_for_exit([s for s in watched if s is not None], MONITOR_INTERVAL):
                if not self._closing.is_set():
                    self._worker_exited(watched[sentinel])

    def _worker_exited(self, lane: _WorkerLane) -> None:
        """Take a dead worker out of service, mark the version down, restart it in the background."""
        with self._cond:
            if lane.state == "down" or self._closing.is_set():
                return
            lane.state = "down"
            lane.worker.broken = True
            if lane in self._free:
                self._free.remove(lane)
            self.restarts += 1
            if self.state is LoadState.READY:
                self.state = LoadState.DOWN
            self._cond.notify_all()
        self._emit("worker_died", f"worker pid {lane.worker.pid} exited; restarting")
        threading.Thread(
            target=self._restart, args=(lane,), name=f"workbench-restart-{self.label}", daemon=True
        ).start()

    def _restart(self, lane: _WorkerLane) -> None:
        lane.loop_idle.wait(STOP_TIMEOUT)  # an event loop reads the dead channel's end first
        for attempt, delay in enumerate(backoff_delays(), start=1):
            if self._closing.wait(delay):
                lane.worker.release()
                return
            lane.worker.release()
            try:
                lane.worker.start()
                self._warm_lane(lane)
            except Exception as exc:
                self._emit("worker_restart_failed", f"attempt {attempt}: {exc}")
                continue
            with self._cond:
                if self._closing.is_set():
                    lane.worker.release()
                    return
                lane.state = "ready"
                self._free.append(lane)
                if self.state is LoadState.DOWN and all(
                    other.state == "ready" for other in self._worker_lanes
                ):
                    self.state = LoadState.READY
                self._cond.notify_all()
            self._emit("worker_restarted", f"worker pid {lane.worker.pid} ready after {attempt} attempt(s)")
            return

    # -- inspection ------------------------------------------------------------------

    @property
    def worker_pids(self) -> list[int]:
        return [lane.worker.pid for lane in self._worker_lanes if lane.worker.pid is not None]

    def workers_info(self) -> list[dict[str, Any]]:
        """Per worker: pid, state (ready/down) and resident memory."""
        return [
            {"pid": lane.worker.pid, "state": lane.state,
             "rss_bytes": process_rss(lane.worker.pid) if lane.worker.pid else 0}
            for lane in self._worker_lanes
        ]

    @property
    def memory(self) -> MemoryUsage:
        """What the worker processes hold now (RSS; GPU per process where NVML is present)."""
        pids = self.worker_pids if self.state is not LoadState.UNLOADED else []
        rss = sum(process_rss(pid) for pid in pids)
        gpu: int | None = None
        if self._device.is_gpu:
            used = [gpu_memory_used(self._device.index, pid) for pid in pids]
            gpu = None if any(u is None for u in used) else sum(u or 0 for u in used)
        return MemoryUsage(rss, gpu, scope="worker", weights_bytes=self.weights_bytes)

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "worker_restarts": self.restarts}
