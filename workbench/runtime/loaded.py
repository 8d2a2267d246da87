"""A version loaded into memory: a pool of predictor clones, validated and warmed."""

from __future__ import annotations

import enum
import functools
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import HubError, InputError, ModelLoadError, RepositoryError
from workbench.model import formats
from workbench.runtime.latency import percentiles
from workbench.runtime.memory import MemoryUsage, gpu_memory_used, process_rss
from workbench.runtime.warmup import batch_sizes, describe, plan

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from workbench._types import Tensors, TensorsIn
    from workbench.model.manifest import Manifest, TensorSpec
    from workbench.model.version import Version
    from workbench.runtime.base import Predictor
    from workbench.runtime.device import Device

log = logging.getLogger(__name__)
WARMUP_RUNS = 2
# Batches run on each predictor right before its version is made active (see prime()):
# one brings most of the working set back, a few more settle it; a slow model stops
# after the first batch that ends past PRIME_SECONDS.
PRIME_RUNS = 3
PRIME_SECONDS = 0.05


class _Lane:
    """One predictor clone and the one long-lived thread that makes every Paddle call on it.

    Paddle Inference keeps per-thread state for what a predictor prepares on a run
    (kernels, buffers for a new input shape). Driven from threads that come and go,
    a predictor fails with ``std::exception`` once such a thread is gone, so each
    clone is created, warmed, run and released on its own thread.
    """

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._predictor: Predictor | None = None

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._executor.submit(fn, *args).result()

    def create(self, factory: Callable[[], Predictor]) -> Predictor:
        self._predictor = self.call(factory)
        return self._predictor

    @property
    def predictor(self) -> Predictor:
        if self._predictor is None:
            raise HubError("predictor released")
        return self._predictor

    def run(self, inputs: TensorsIn) -> Tensors:
        result: Tensors = self.call(self.predictor.run, inputs)
        return result

    def close(self) -> None:
        if self._predictor is not None:
            self.call(self._predictor.release)
            self._predictor = None
        self._executor.shutdown(wait=True)


class LoadState(str, enum.Enum):
    """Lifecycle of a loaded version."""

    LOADING = "loading"  # predictors being created
    WARMING = "warming"  # running the sample so the first real request is fast
    READY = "ready"  # offered for requests
    DOWN = "down"  # a worker process died; restarting (process isolation)
    DRAINING = "draining"  # unloading: no new leases, in-flight requests finishing
    UNLOADED = "unloaded"  # predictors released


class LoadedVersion:
    """One version of a model in memory, with ``workers`` predictor clones in this process.

    ``predict`` is thread-safe: each call borrows an idle clone (waiting for one
    when all are busy), so at most ``workers`` batches run at once.
    """

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
        factory: Callable[[], Predictor] | None = None,
        warmup_batch_sizes: tuple[int, ...] = (),
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.model = model
        self.version = version
        self.version_label = str(version)  # str(version), once: the request path asks often
        self.manifest = manifest
        self.path = path
        self.device = str(device)
        self.workers = workers
        self.state = LoadState.LOADING
        self.loaded_at = time.time()
        self.load_seconds = 0.0
        self._device = device
        self._cpu_threads = cpu_threads
        self._factory = factory
        self.warmup_batch_sizes = warmup_batch_sizes
        self._idle: queue.LifoQueue[_Lane] = queue.LifoQueue()
        self._lanes: list[_Lane] = []
        self._lock = threading.Condition()
        self._inflight = 0
        self._served = 0
        self._failed = 0
        self._latencies: deque[float] = deque(maxlen=2048)
        self._memory = MemoryUsage(0)
        self._prime_inputs: Tensors | None = None
        # what the last warm-up ran: one {input: shape} per batch (workbench.runtime.warmup)
        self.warmup_shapes: list[dict[str, tuple[int, ...]]] = []
        self.primed = 0  # batches run by prime(), counted apart from served requests

    isolation = "thread"

    def __repr__(self) -> str:
        return f"<LoadedVersion {self.model}:{self.version} on {self.device} ({self.state.value})>"

    # -- lifecycle -------------------------------------------------------------------

    def open(self, *, warmup: bool = True) -> LoadedVersion:
        """Create the predictor pool and warm every clone; then the version is READY."""
        started = time.perf_counter()
        if self._factory is None:
            from workbench._paddle import import_inference

            import_inference()  # the runtime's own memory is not this version's
        rss_before = process_rss()
        gpu_before = gpu_memory_used(self._device.index) if self._device.is_gpu else None
        name = f"{self.model}-{self.version}"
        self._lanes = [_Lane(f"{name}-{index}") for index in range(self.workers)]
        try:
            first = self._lanes[0].create(self._factory or self._open_paddle)
            for lane in self._lanes[1:]:
                lane.create(first.clone)
            if warmup:
                self.state = LoadState.WARMING
                self._warm_up()
        except BaseException:
            for lane in self._lanes:
                lane.close()
            self._lanes = []
            raise
        for lane in self._lanes:
            self._idle.put(lane)
        gpu_after = gpu_memory_used(self._device.index) if self._device.is_gpu else None
        gpu = None if gpu_after is None or gpu_before is None else max(0, gpu_after - gpu_before)
        # In-process, a version's memory cannot be told apart from the process's: this is
        # the growth during its load, and the first version also pays Paddle's start-up.
        self._memory = MemoryUsage(
            max(0, process_rss() - rss_before), gpu, scope="load growth",
            weights_bytes=self.weights_bytes,
        )
        self.load_seconds = time.perf_counter() - started
        self.loaded_at = time.time()
        self.state = LoadState.READY
        log.info(
            "%s:%s ready on %s in %.2fs (%s)",
            self.model, self.version, self.device, self.load_seconds, self._memory,
        )
        return self

    @functools.cached_property
    def weights_bytes(self) -> int:
        """The size of the version's parameter file: the floor of what it holds loaded."""
        return _params_size(self.path)

    def _open_paddle(self) -> Predictor:
        from workbench.runtime.paddle import PaddlePredictor

        files = formats.detect(self.path)
        predictor = PaddlePredictor.open(
            files, self._device, cpu_threads=self._cpu_threads, settings=self.manifest.runtime
        )
        expected = {spec.name for spec in self.manifest.inputs}
        if set(predictor.input_names) != expected:
            raise ModelLoadError(
                f"{self.model}:{self.version}: the model's inputs {predictor.input_names} differ "
                f"from the manifest's {sorted(expected)}"
            )
        return predictor

    def _warm_up(self) -> None:
        # Paddle prepares kernels and buffers per input shape on its first run, so
        # every clone runs each batch size a request is likely to bring, within a
        # size budget (workbench.runtime.warmup).
        for lane in self._lanes:
            self._warm_lane(lane)

    def _warm_lane(self, lane: Any) -> None:
        sample = self.warmup_inputs()
        rows = next(iter(sample.values())).shape[0] if sample else 1
        sizes = self.warmup_batch_sizes or batch_sizes(rows)
        batches = plan(sample, sizes, self.manifest.inputs)
        self.warmup_shapes = [{n: a.shape for n, a in batch.items()} for batch in batches]
        if batches:
            self._prime_inputs = batches[0]
        log.info("%s:%s warms up with batches %s", self.model, self.version, describe(batches))
        for batch in batches:
            for _ in range(WARMUP_RUNS):
                outputs = lane.run(batch)
            for name, array in outputs.items():
                if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
                    raise ModelLoadError(
                        f"{self.model}:{self.version}: warm-up output {name!r} is not finite"
                    )

    def prime(self) -> int:
        """Run a few small warm-up batches on every idle predictor; the hub calls it right
        before it makes this version active. Returns the predictors primed.

        Warm-up makes the first request fast only while the caches it filled are still
        there: a loaded version that waits (a second, an hour) while other work runs
        comes back cold (the first digits request after an idle second took ~1 ms
        against ~0.15 ms steady). Batches just before the switch bring the version's
        working set back, so the first request after the switch is nearly as fast as
        the rest.
        Best effort: a failure is logged and left to the requests to report.
        """
        if self.state is not LoadState.READY:
            return 0
        try:
            self.acquire()  # counted in flight: an unload waits for it
        except HubError:  # unloaded meanwhile
            return 0
        try:
            return self._prime_idle()
        finally:
            self.release()

    def _prime_idle(self) -> int:
        lanes: list[_Lane] = []
        try:
            while True:
                try:
                    lanes.append(self._idle.get_nowait())
                except queue.Empty:
                    break
            return sum(self._prime_lane(lane) for lane in lanes)
        finally:
            for lane in lanes:
                self._idle.put(lane)

    def _prime_lane(self, lane: Any) -> bool:
        """Up to PRIME_RUNS small batches on ``lane`` (at least one, then within PRIME_SECONDS);
        False (logged) if one failed."""
        if self._prime_inputs is None:
            self._prime_inputs = {n: a[:1] for n, a in self.warmup_inputs().items()}
        started = time.perf_counter()
        for _ in range(PRIME_RUNS):
            try:
                lane.run(self._prime_inputs)
            except Exception as exc:
                log.warning("%s:%s: priming before the switch failed: %s", self.model, self.version, exc)
                return False
            self.primed += 1
            if time.perf_counter() - started > PRIME_SECONDS:
                break
        return True

    def warmup_inputs(self) -> Tensors:
        """The manifest's sample, or a one-row batch of zeros shaped by the signature."""
        sample = self.manifest.load_sample(self.path)
        if sample:
            return self.validate(sample)
        return {
            spec.name: np.zeros([1 if d == -1 else d for d in spec.shape], dtype=spec.dtype)
            for spec in self.manifest.inputs
        }

    def close(self, timeout: float | None = 30.0) -> None:
        """Wait for in-flight requests to finish, then release every predictor."""
        with self._lock:
            if not self._drain(timeout):
                return
            lanes, self._lanes = self._lanes, []
        while not self._idle.empty():
            self._idle.get_nowait()
        for lane in lanes:
            lane.close()
        log.info("%s:%s unloaded", self.model, self.version)

    def _drain(self, timeout: float | None) -> bool:
        """DRAINING until no request is in flight, then UNLOADED; False if it was already.

        Called with ``self._lock`` held; raises HubError (and stays DRAINING) on timeout.
        """
        if self.state is LoadState.UNLOADED:
            return False
        self.state = LoadState.DRAINING
        if not self._lock.wait_for(lambda: self._inflight == 0, timeout=timeout):
            raise HubError(
                f"{self.model}:{self.version} still has {self._inflight} request(s) in flight "
                f"after {timeout}s; not unloaded"
            )
        self.state = LoadState.UNLOADED
        return True

    # -- requests --------------------------------------------------------------------

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.manifest.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.manifest.outputs

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def memory(self) -> MemoryUsage:
        return self._memory

    def acquire(self) -> None:
        """Count one request in flight; refused once the version is unloaded."""
        with self._lock:
            if self.state is LoadState.UNLOADED:
                raise HubError(f"{self.model}:{self.version} is unloaded")
            self._inflight += 1

    def release(self) -> None:
        with self._lock:
            self._inflight -= 1
            if self._inflight == 0:
                self._lock.notify_all()

    def validate(self, inputs: TensorsIn, *, allow_nonfinite: bool = False) -> Tensors:
        """Check names, dtypes, ranks and fixed dimensions; return arrays in the model's dtypes.

        Values are cast only within their kind (float64 → float32, int32 → int64);
        a cast across kinds (float → int) is refused.
        """
        expected = self.expected_inputs
        if len(inputs) != len(expected) or any(name not in expected for name in inputs):
            unknown = sorted(set(inputs) - expected.keys())
            if unknown:
                raise InputError(
                    f"unknown input {unknown[0]!r}; {self.model} expects "
                    + ", ".join(str(s) for s in self.manifest.inputs)
                )
            for name, (spec, *_) in expected.items():
                if name not in inputs:
                    raise InputError(f"missing input {name!r} ({spec})")
        result: dict[str, np.ndarray[Any, Any]] = {}
        batch: int | None = None
        for name, (spec, target, shape, batched) in expected.items():
            array = np.asarray(inputs[name])
            if array.dtype != target:
                if not np.can_cast(array.dtype, target, casting="same_kind"):
                    raise InputError(
                        f"input {name!r} has dtype {array.dtype}, expected {spec.dtype} ({spec})"
                    )
                array = array.astype(target)
            got = array.shape
            if len(got) != len(shape):
                raise InputError(
                    f"input {name!r} has rank {array.ndim} (shape {list(got)}), "
                    f"expected rank {len(shape)} ({spec})"
                )
            for axis, want in enumerate(shape):
                if want != -1 and got[axis] != want:
                    raise InputError(
                        f"input {name!r} has shape {list(got)}: dimension {axis} is "
                        f"{got[axis]}, expected {want} ({spec})"
                    )
            if batched:
                if got[0] == 0:
                    raise InputError(f"input {name!r} is an empty batch")
                if batch is not None and got[0] != batch:
                    raise InputError(f"inputs disagree on the batch size ({batch} vs {got[0]})")
                batch = got[0]
            if not allow_nonfinite and array.dtype.kind == "f" and not np.isfinite(array).all():
                raise InputError(f"input {name!r} contains NaN or infinity")
            result[name] = array
        return result

    @functools.cached_property
    def output_names(self) -> frozenset[str]:
        return frozenset(spec.name for spec in self.manifest.outputs)

    @functools.cached_property
    def expected_inputs(self) -> dict[str, tuple[TensorSpec, np.dtype[Any], tuple[int, ...], bool]]:
        """Each input's spec, dtype, shape and whether its first axis is the batch."""
        return {
            spec.name: (spec, np.dtype(spec.dtype), tuple(spec.shape),
                        bool(spec.shape) and spec.shape[0] == -1)
            for spec in self.manifest.inputs
        }

    def predict(self, inputs: TensorsIn, *, validate: bool = True) -> Tensors:
        """Run one batch on an idle clone; thread-safe."""
        arrays = self.validate(inputs) if validate else dict(inputs)
        self.acquire()
        try:
            lane = self._idle.get()
            started = time.perf_counter()
            try:
                outputs = lane.run(arrays)
            except Exception:
                self._failed += 1
                raise
            finally:
                self._idle.put(lane)
            self._latencies.append(time.perf_counter() - started)
            self._served += 1
            return outputs
        finally:
            self.release()

    def stats(self) -> dict[str, Any]:
        """Served and failed counts, and latency percentiles (seconds) of recent batches."""
        return {"served": self._served, "failed": self._failed, "inflight": self._inflight,
                **percentiles(self._latencies)}


def _params_size(path: Path) -> int:
    """The size of the parameter file of the export in ``path`` (0 where it has none)."""
    try:
        params = formats.detect(path).params
        return params.stat().st_size if params is not None else 0
    except (OSError, RepositoryError):
        return 0
