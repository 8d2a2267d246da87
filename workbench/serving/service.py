"""The state behind one serving instance: hub, runners, metrics, settings, startup.

:class:`Service` is what the HTTP layer calls. It knows nothing of HTTP: it resolves
which loaded version answers a request, sends decoded inputs to that version's runner
(batched or direct) and checks a version end to end for the deep health check. The
hub guarantees that a switch never loses a request; the service takes its lease at a
request's start and holds it until the response is encoded.

Under abuse it protects itself: large bodies are decoded in worker processes, a few at
a time (``max_large_bodies``, :mod:`workbench.serving.decoding`), so the event loop
keeps answering; a version's queue is bounded
(``batching.max_queue``, then :class:`~workbench.serving.batching.QueueFull`); and a
request whose client has gone leaves the queue before it is computed (``ClientGone``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from workbench.errors import WorkbenchError
from workbench.runtime.pipeline import LoadedPipeline
from workbench.serving.aliases import AliasCache
from workbench.serving.batching import (
    Batcher,
    BatchingConfig,
    DirectRunner,
    Runner,
    RunResult,
    stack,
)
from workbench.serving.decoding import BodyDecoder
from workbench.serving.metrics import ServingMetrics, Snapshot, VersionState
from workbench.serving.protocol import ProtocolError, datatype_of
from workbench.serving.segments import DEFAULT_MAX_SEGMENTS
from workbench.serving.statistics import InferenceStatistics, VersionStatistics

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from workbench._types import Tensors, TensorsIn
    from workbench.runtime.hub import HubEvent, VersionHub
    from workbench.runtime.loaded import LoadedVersion
    from workbench.serving.batching import AsyncPredictFn, PredictFn
    from workbench.serving.faults import FaultConfig
    from workbench.serving.segments import SegmentKey

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 64 * 2**20
LARGE_BODY = 256 * 2**10  # bodies from this size are decoded off the event loop
T = TypeVar("T")


@dataclass(frozen=True)
class ServingSettings:
    """How one instance serves; built by ``workbench serve`` from its options."""

    batching: BatchingConfig = field(default_factory=BatchingConfig)
    max_body_bytes: int = DEFAULT_MAX_BODY
    admin_token: str | None = None  # None: admin endpoints are off (404)
    reject_nonfinite: bool = False  # refuse NaN / inf inputs with 400 (Triton accepts them)
    large_body_bytes: int = LARGE_BODY  # from this size a body is decoded in a worker process
    max_large_bodies: int = field(default_factory=lambda: max(1, (os.cpu_count() or 2) // 2))
    # ^ large bodies read and decoded at once (each in its own process); others wait
    startup: tuple[str, ...] = ()  # refs loaded at startup; the first becomes active
    reload_ref: str = "latest"  # what /v2/admin/reload re-resolves by default
    access_log: bool = True
    faults: FaultConfig | None = None  # chaos testing (workbench.serving.faults)
    reservoir_size: int = 256  # request rows sampled for canary replay (workbench.serving.reservoir)
    segment_by: tuple[SegmentKey, ...] = ()  # per-segment metrics (workbench.serving.segments)
    max_segments: int = DEFAULT_MAX_SEGMENTS  # distinct values per key; the rest are "other"

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be at least 1024, not {self.max_body_bytes}")
        if self.reservoir_size < 0:
            raise ValueError(f"the reservoir size must be >= 0, not {self.reservoir_size}")
        if self.admin_token is not None and len(self.admin_token) < 8:
            raise ValueError("the admin token must be at least 8 characters")
        if self.max_large_bodies < 1:
            raise ValueError(f"max_large_bodies must be >= 1, not {self.max_large_bodies}")
        if self.max_segments < 1:
            raise ValueError(f"the segment bound must be at least 1, not {self.max_segments}")

    def __repr__(self) -> str:  # never print the token
        token = "set" if self.admin_token else "off"
        return (
            f"ServingSettings(batching={self.batching}, max_body_bytes={self.max_body_bytes}, "
            f"admin={token}, reject_nonfinite={self.reject_nonfinite}, startup={self.startup})"
        )


class Service:
    """One model's hub served over the Open Inference Protocol."""

    def __init__(self, hub: VersionHub, settings: ServingSettings | None = None) -> None:
        self.hub = hub
        self.model = hub.model
        self.settings = settings or ServingSettings()
        self.metrics = ServingMetrics(self.model, self.snapshot)
        self.metrics.segment_by(self.settings.segment_by, self.settings.max_segments)
        faulted = self.settings.faults.segment_rule if self.settings.faults else None
        # the segments a request is read for: those counted, and the one faults are limited to
        self.segment_keys = tuple(dict.fromkeys(
            (*self.settings.segment_by, *([faulted[0]] if faulted else []))))
        self.statistics = InferenceStatistics(self.model)
        self.aliases = AliasCache(hub.repository, self.model)
        self.decoder = BodyDecoder(self.settings.large_body_bytes, self.settings.max_large_bodies)
        self.started_at = time.time()
        self.startup_error: BaseException | None = None
        self.on_fatal: Callable[[BaseException], None] | None = None
        self._startup_done = not self.settings.startup
        # Every thread that touches Paddle lives as long as the service: Paddle's oneDNN
        # caches are per thread id, and a predictor warmed in a thread that has exited
        # fails once in a new thread that reuses that id. So loading (startup and admin)
        # runs on one long-lived control thread, inference on a fixed pool.
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, hub.workers), thread_name_prefix="workbench-infer"
        )
        self._control = ThreadPoolExecutor(max_workers=1, thread_name_prefix="workbench-control")
        self._runners: dict[int, tuple[LoadedVersion, Runner]] = {}
        self._stage_statistics: dict[str, InferenceStatistics] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], object] | None = None
        self._closing: set[asyncio.Future[None]] = set()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to the hub and load the startup versions in the background."""
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = self.hub.subscribe(self._on_event)
        for loaded in self.hub.loaded:
            self.metrics.loaded(str(loaded.version))
        if self.settings.startup:
            self._control.submit(self._load_startup)

    async def stop(self) -> None:
        """Close the runners and the hub (after uvicorn has drained the requests)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        for _, runner in list(self._runners.values()):
            await runner.close()
        self._runners.clear()
        await self.control(self.hub.close)
        self.decoder.close()
        self._executor.shutdown(wait=True)
        self._control.shutdown(wait=True)

    async def control(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking hub call (load, unload, use, ...) on the control thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._control, functools.partial(fn, *args, **kwargs))

    def _load_startup(self) -> None:
        refs = self.settings.startup
        try:
            for index, ref in enumerate(refs):
                self.hub.load(ref, activate=True if index == 0 else None)
        except BaseException as exc:
            self.startup_error = exc
            logger.error("could not load %s at startup: %s", self.model, exc)
            if self.on_fatal is not None:
                self.on_fatal(exc)
            return
        self._startup_done = True
        active = self.hub.active
        logger.info(
            "%s ready: active %s, loaded %s",
            self.model,
            active.version if active else None,
            ", ".join(str(lv.version) for lv in self.hub.loaded),
        )

    # -- state ---------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Startup finished and an active version is loaded and warmed."""
        active = self.hub.active
        return self._startup_done and active is not None and active.state.value == "ready"

    @property
    def startup_pending(self) -> bool:
        return not self._startup_done and self.startup_error is None

    def snapshot(self) -> Snapshot:
        loaded = self.hub.loaded
        active = self.hub.active
        return Snapshot(
            loaded=tuple(_version_state(lv) for lv in loaded),
            active=str(active.version) if active is not None else None,
        )

    def status(self) -> dict[str, Any]:
        """What the admin status endpoint reports."""
        active = self.hub.active
        return {
            "model": self.model,
            "ready": self.ready,
            "active": str(active.version) if active else None,
            "history": [str(v) for v in self.hub.history],
            "loaded": [describe(lv, active) for lv in self.hub.loaded],
            "device": str(self.hub.device),
            "workers": self.hub.workers,
            "batching": {
                "enabled": self.settings.batching.enabled,
                "max_batch_size": self.settings.batching.max_batch_size,
                "max_queue_delay_ms": self.settings.batching.max_queue_delay_ms,
            },
            "uptime_seconds": round(time.time() - self.started_at, 3),
        }

    # -- requests ------------------------------------------------------------------------

    @contextmanager
    def lease(self, ref: str | None) -> Iterator[LoadedVersion]:
        """Take the active version (or the pinned ``ref``) for the whole request."""
        loaded = self.take(ref)
        try:
            yield loaded
        finally:
            self.give_back(loaded)

    def take(self, ref: str | None) -> LoadedVersion:
        """:meth:`lease` without the context manager, for the request path: the caller
        must :meth:`give_back` what it took."""
        if ref is not None:
            ref = self.aliases.resolve(ref)
        loaded = self.hub.take(ref)
        self.metrics.version(loaded.version_label).inflight.inc()
        return loaded

    def give_back(self, loaded: LoadedVersion) -> None:
        self.metrics.version(loaded.version_label).inflight.dec()
        loaded.release()

    def check_inputs(
        self,
        loaded: LoadedVersion,
        inputs: TensorsIn,
        requested: Iterable[str] = (),
    ) -> Tensors:
        """Protocol datatypes must match the model's exactly; then the runtime validates.

        ``requested`` output names are checked too, so a typo costs no inference.
        """
        known = loaded.output_names
        for name in requested:
            if name not in known:
                raise ProtocolError(
                    f"unknown output {name!r}; {self.model}:{loaded.version} has {sorted(known)}"
                )
        for name, (spec, dtype, _, _) in loaded.expected_inputs.items():
            array = inputs.get(name)
            if array is not None and array.dtype != dtype:
                want = datatype_of(spec.dtype)
                got = datatype_of(array.dtype)
                raise ProtocolError(
                    f"input {spec.name!r} has datatype {got}; {self.model}:{loaded.version} "
                    f"expects {want} with shape {list(spec.shape)}"
                )
        return loaded.validate(inputs, allow_nonfinite=not self.settings.reject_nonfinite)

    async def offload(self, size: int, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(...)`` in a thread when it works on ``size`` >= large_body_bytes, else here
        (for work that lets go of the GIL, such as zlib)."""
        if size < self.settings.large_body_bytes:
            return fn(*args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def compute(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the inference threads (those that run Paddle, which live as long as
        the service), for work that calls a version's ``predict`` itself (a pipeline)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn)

    def check_batch(self, loaded: LoadedVersion, rows: int) -> None:
        """Refuse a batch over the ``max_batch_size`` the model's config advertises."""
        limit = self.settings.batching.max_batch_size
        if rows > limit and batched(loaded):
            raise ProtocolError(
                f"the batch has {rows} rows; {self.model} accepts at most {limit} per request "
                "(max_batch_size)"
            )

    async def run(
        self,
        loaded: LoadedVersion,
        inputs: TensorsIn,
        gone: Callable[[], bool] | None = None,
    ) -> RunResult:
        """Send validated inputs to the version's runner and record queue and batch metrics.

        ``gone()`` says whether the client has disconnected; it is asked when the
        request's batch forms, and a request whose client has gone is dropped unrun
        (:class:`~workbench.serving.batching.ClientGone`).
        """
        result = await self._runner(loaded).submit(inputs, gone)
        children = self.metrics.version(loaded.version_label)
        children.queue.observe(result.queue_seconds)
        children.inference.observe(result.compute_seconds)
        return result

    def _runner(self, loaded: LoadedVersion) -> Runner:
        entry = self._runners.get(id(loaded))
        if entry is not None and entry[0] is loaded:
            return entry[1]
        children = self.metrics.version(str(loaded.version))
        stats = self.statistics.version(str(loaded.version))

        def predict(inputs: TensorsIn) -> Tensors:
            return loaded.predict(inputs, validate=False)

        def on_batch(rows: int, seconds: float) -> None:
            children.batch.observe(rows)
            stats.executed(rows, seconds)

        config = self.settings.batching
        name = f"{self.model}:{loaded.version}"
        runner: Runner
        if config.enabled:
            runner = Batcher(
                predict,
                self._executor,
                BatchingConfig(
                    True, config.max_batch_size, config.max_queue_delay_ms, self.hub.workers,
                    config.max_queue,
                ),
                on_batch=on_batch,
                name=name,
                apredict=self._on_loop(loaded, predict),
            )
        else:
            runner = DirectRunner(predict, self._executor, on_batch=on_batch,
                                  max_queue=config.max_queue, max_concurrent=self.hub.workers,
                                  name=name)
        self._runners[id(loaded)] = (loaded, runner)
        return runner

    def stage_runner(self, stage: LoadedVersion, max_batch_size: int) -> Runner:
        """The runner of a pipeline's stage version, one for every pipeline naming it: a
        dynamic batcher (no queue delay) merging same-shape batches of concurrent requests
        up to ``max_batch_size`` rows (1: never), counted in the stage's statistics."""
        entry = self._runners.get(id(stage))
        if entry is not None and entry[0] is stage:
            return entry[1]
        stats = self.stage_statistics(stage)

        def predict(inputs: TensorsIn) -> Tensors:
            return stage.predict(inputs, validate=False)

        runner = Batcher(
            predict,
            self._executor,
            BatchingConfig(True, max_batch_size, 0.0, stage.workers, self.settings.batching.max_queue),
            on_batch=stats.executed,
            name=f"{stage.model}:{stage.version}",
            apredict=self._on_loop(stage, predict),
        )
        self._runners[id(stage)] = (stage, runner)
        return runner

    def stage_statistics(self, stage: LoadedVersion) -> VersionStatistics:
        """The statistics of a pipeline's stage version, under the stage's own model."""
        stats = self._stage_statistics.get(stage.model)
        if stats is None:
            stats = self._stage_statistics[stage.model] = InferenceStatistics(stage.model)
        return stats.version(stage.version_label)

    def stage_documents(self) -> list[dict[str, Any]]:
        """Triton's ``model_stats`` entries of the stage versions loaded now."""
        docs: list[dict[str, Any]] = []
        for stage in self.hub.stages.loaded():
            stats = self._stage_statistics.get(stage.model)
            if stats is not None:
                docs.extend(stats.document([stage.version_label])["model_stats"])
        return docs

    def _on_loop(self, loaded: LoadedVersion, predict: PredictFn) -> AsyncPredictFn | None:
        """In process isolation, batches go to an idle worker from the event loop (no
        thread hop); when another caller (deep health, compare, a switch's priming)
        holds every worker, the batch waits for one in the pool as before."""
        start = getattr(loaded, "start_predict", None)
        if start is None:
            return None
        executor = self._executor

        async def apredict(parts: list[TensorsIn]) -> Tensors:
            future = start(parts)
            if future is None:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(executor, predict, stack(parts))
            outputs: Tensors = await future
            return outputs

        return apredict

    def _on_event(self, event: HubEvent) -> None:
        if event.kind == "loaded":
            self.metrics.loaded(event.version)
        elif event.kind == "unloaded":
            self.metrics.unloaded(event.version)
        if event.kind != "unloaded" or self._loop is None:
            return
        dead = [key for key, (lv, _) in self._runners.items() if lv.state.value == "unloaded"]

        def close() -> None:
            for key in dead:
                entry = self._runners.pop(key, None)
                if entry is not None:
                    task = asyncio.ensure_future(entry[1].close())
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)

        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self._loop.call_soon_threadsafe(close)

    # -- deep health ---------------------------------------------------------------------

    async def deep_check(self, ref: str | None = None) -> dict[str, Any]:
        """Run the manifest's sample through a version; check output names, shapes, finiteness.

        Returns ``{"ok": True, "model", "version", "seconds", "outputs"}``; raises
        :class:`HealthCheckFailed` with the reason otherwise.
        """
        with self.lease(ref) as loaded:
            if isinstance(loaded, LoadedPipeline):
                return await self._deep_check_stages(loaded)
            try:
                sample = await asyncio.to_thread(loaded.warmup_inputs)
                started = time.perf_counter()
                result = await self.run(loaded, sample)
                seconds = time.perf_counter() - started
            except HealthCheckFailed:
                raise
            except Exception as exc:
                raise HealthCheckFailed(
                    f"{self.model}:{loaded.version}: inference on the sample failed: {exc}",
                    version=str(loaded.version),
                ) from exc
            rows = next(iter(sample.values())).shape[0] if sample else 1
            check_outputs(loaded, result.outputs, rows)
            return {
                "ok": True,
                "model": self.model,
                "version": str(loaded.version),
                "seconds": round(seconds, 6),
                "outputs": {name: list(np.shape(out)) for name, out in result.outputs.items()},
            }


    async def _deep_check_stages(self, pipeline: LoadedPipeline) -> dict[str, Any]:
        """A pipeline's deep check: each stage's sample through that stage, outputs checked."""
        label = f"{self.model}:{pipeline.version}"
        started = time.perf_counter()
        outputs: dict[str, Any] = {}
        for role, stage in list(pipeline.stages.items()):

            def run(stage: LoadedVersion = stage) -> tuple[Tensors, int]:
                sample = stage.warmup_inputs()
                rows = next(iter(sample.values())).shape[0] if sample else 1
                return stage.predict(sample, validate=False), rows

            try:
                result, rows = await self.compute(run)
            except Exception as exc:
                raise HealthCheckFailed(
                    f"{label}: its {role} stage {stage.model}:{stage.version} failed on its sample: {exc}",
                    version=str(pipeline.version),
                ) from exc
            check_outputs(stage, result, rows)
            outputs[role] = {name: list(np.shape(out)) for name, out in result.items()}
        return {
            "ok": True,
            "model": self.model,
            "version": str(pipeline.version),
            "seconds": round(time.perf_counter() - started, 6),
            "outputs": outputs,
        }


class HealthCheckFailed(WorkbenchError):
    """The deep health check found a problem; the message says which."""

    def __init__(self, message: str, *, version: str | None = None) -> None:
        super().__init__(message)
        self.version = version


def check_outputs(loaded: LoadedVersion, outputs: TensorsIn, rows: int) -> None:
    """Raise HealthCheckFailed unless ``outputs`` match the manifest's signature and are finite."""
    label = f"{loaded.model}:{loaded.version}"
    for spec in loaded.outputs:
        if spec.name not in outputs:
            raise HealthCheckFailed(f"{label}: output {spec.name!r} is missing",
                                    version=str(loaded.version))
        array = np.asarray(outputs[spec.name])
        expected = [rows if axis == 0 and dim == -1 else dim for axis, dim in enumerate(spec.shape)]
        fits = array.ndim == len(expected) and all(
            want == -1 or got == want for got, want in zip(array.shape, expected, strict=True)
        )
        if not fits:
            raise HealthCheckFailed(
                f"{label}: output {spec.name!r} has shape {list(array.shape)}, expected "
                f"{['?' if d == -1 else d for d in expected]}",
                version=str(loaded.version),
            )
        if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            raise HealthCheckFailed(
                f"{label}: output {spec.name!r} has {bad} non-finite value(s)",
                version=str(loaded.version),
            )


def batched(loaded: LoadedVersion) -> bool:
    """Every input has a dynamic first (batch) axis."""
    return all(spec.shape and spec.shape[0] == -1 for spec in loaded.inputs)


def describe(loaded: LoadedVersion, active: LoadedVersion | None = None) -> dict[str, Any]:
    """A loaded version as JSON-ready data (admin status)."""
    memory = loaded.memory
    return {
        "version": str(loaded.version),
        "active": loaded is active,
        "state": loaded.state.value,
        "device": loaded.device,
        "inflight": loaded.inflight,
        "load_seconds": round(loaded.load_seconds, 3),
        "memory": {
            "rss_bytes": memory.rss_bytes, "gpu_bytes": memory.gpu_bytes, "scope": memory.scope,
            "weights_bytes": memory.weights_bytes,
        },
        **_isolation(loaded),
        "inputs": [spec_json(spec) for spec in loaded.inputs],
        "outputs": [spec_json(spec) for spec in loaded.outputs],
    }


def _version_state(loaded: LoadedVersion) -> VersionState:
    memory = loaded.memory
    worker = memory.scope == "worker"
    return VersionState(
        str(loaded.version),
        memory.gpu_bytes,
        worker_rss_bytes=memory.rss_bytes if worker else None,
        worker_restarts=loaded.stats().get("worker_restarts") if worker else None,
        ready=loaded.state.value == "ready",
    )


def _isolation(loaded: LoadedVersion) -> dict[str, Any]:
    """How the version runs; in process isolation, its worker processes and restarts."""
    workers_info = getattr(loaded, "workers_info", None)
    if workers_info is None:
        return {"isolation": loaded.isolation}
    return {"isolation": loaded.isolation, "workers": workers_info(),
            "worker_restarts": loaded.stats()["worker_restarts"]}


def spec_json(spec: Any) -> dict[str, Any]:
    """A TensorSpec as protocol metadata: name, datatype, shape (-1 dynamic)."""
    return {"name": spec.name, "datatype": datatype_of(spec.dtype), "shape": list(spec.shape)}

