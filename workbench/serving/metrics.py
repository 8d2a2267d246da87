"""Prometheus metrics of one serving instance, labelled by model and version.

Each app owns its :class:`~prometheus_client.CollectorRegistry` (several apps can live
in one test process). The request path's series are plain numbers updated on the event
loop (no lock; a histogram is one bisect), read into metric families at scrape time, so
recording a request costs about a microsecond; gauges that describe state (loaded versions, memory)
are collected at scrape time from a snapshot callback, so they are never stale.

Names (the deploy layer's analysis reads these):

- ``workbench_requests_total{model,version,outcome}`` outcome = ok | client_error | server_error
- ``workbench_request_duration_seconds{model,version}`` histogram, whole request
- with ``workbench serve --segment-by KEY`` (:mod:`workbench.serving.segments`), also
  ``workbench_segment_requests_total{model,version,segment_by,segment,outcome}`` and
  ``workbench_segment_request_duration_seconds{model,version,segment_by,segment}``: the
  same two per segment of the traffic, at most ``--max-segments`` values per key (the
  rest pooled as ``other``); a segment's series appear with its first request
- ``workbench_replayed_requests_total{model,version,outcome}``: requests marked
  ``x-workbench-replay`` (a canary analysis replaying inputs to compare outputs), kept out
  of the two above so that replays never pass for live traffic
- ``workbench_queue_duration_seconds{model,version}`` histogram, waiting for a predictor
- ``workbench_inference_duration_seconds{model,version}`` histogram, predict() of the batch
- ``workbench_batch_size{model,version}`` histogram, rows per executed batch
- ``workbench_inflight_requests{model,version}`` gauge
- ``workbench_loaded_versions{model}`` gauge; ``workbench_active_version_info{model,version}``
- ``workbench_process_resident_memory_bytes{model}``; ``workbench_gpu_memory_bytes{model,version}``
- ``workbench_version_ready{model,version}``; in process isolation also
  ``workbench_worker_resident_memory_bytes{model,version}`` and
  ``workbench_worker_restarts_total{model,version}``
- the standard ``process_*`` families, less its resident memory (ours above has the model)

A version's request-path series exist from the moment it is loaded, at zero, so that
Prometheus' ``increase()`` and ``rate()`` count its very first requests (a counter that
appears at 1 has no earlier sample to increase from); they are removed when it is
unloaded. Requests that never reached a version (a malformed body, an unknown version)
are counted with ``version=""``, in their outcome's counter and the latency histogram
only, so no always-zero series appear. No ``*_created`` samples are exported.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from workbench.serving.segments import DEFAULT_MAX_SEGMENTS, SegmentBook

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from prometheus_client import Metric

    from workbench.serving.segments import SegmentKey

OUTCOMES = ("ok", "client_error", "server_error")
#: Request latency buckets (seconds): no bound more than 1.67 times the one below it, so a
#: canary's comparison of mean log latency with stable's (rollout.sequential.log_moments)
#: sees a 50% slowdown move requests across a bound wherever the latency lies. The
#: earlier bounds (0.05, 0.1, 0.25, …) are all kept.
LATENCY_BUCKETS = (
    0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035,
    0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 3.5, 5.0, 7.5, 10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
UNRESOLVED = ""  # version label of requests that never reached a version


@dataclass(frozen=True)
class VersionState:
    """What the metrics need to know about one loaded version at scrape time."""

    version: str
    gpu_bytes: int | None = None
    worker_rss_bytes: int | None = None  # process isolation: the version's worker processes
    worker_restarts: int | None = None
    ready: bool = True


@dataclass(frozen=True)
class Snapshot:
    """The instance's state at scrape time."""

    loaded: tuple[VersionState, ...] = ()
    active: str | None = None
    rss_bytes: int | None = None


class _Count:
    """A counter or gauge touched only from the event loop: no lock."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class _Histogram:
    """A histogram touched only from the event loop: one bisect, no lock."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # le: value <= bound
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs, as the exposition format wants them."""
        out = []
        running = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            out.append((floatToGoString(bound), float(running)))  # type: ignore[no-untyped-call]
        return out


@dataclass
class _Children:
    ok: _Count = field(default_factory=_Count)
    client_error: _Count = field(default_factory=_Count)
    server_error: _Count = field(default_factory=_Count)
    duration: _Histogram = field(default_factory=lambda: _Histogram(LATENCY_BUCKETS))
    queue: _Histogram = field(default_factory=lambda: _Histogram(LATENCY_BUCKETS))
    inference: _Histogram = field(default_factory=lambda: _Histogram(LATENCY_BUCKETS))
    batch: _Histogram = field(default_factory=lambda: _Histogram(BATCH_BUCKETS))
    inflight: _Count = field(default_factory=_Count)
    by_outcome: dict[str, _Count] = field(init=False)

    def __post_init__(self) -> None:
        self.by_outcome = {
            "ok": self.ok, "client_error": self.client_error, "server_error": self.server_error,
        }


class _Segment:
    """One segment's requests by outcome and their latency."""

    __slots__ = ("by_outcome", "duration")

    def __init__(self) -> None:
        self.by_outcome = {outcome: _Count() for outcome in OUTCOMES}
        self.duration = _Histogram(LATENCY_BUCKETS)


class ServingMetrics:
    """The metrics of one instance serving ``model``."""

    def __init__(
        self,
        model: str,
        snapshot: Callable[[], Snapshot] | None = None,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # process-wide: the *_created series are noise here
        self.model = model
        self.registry = registry if registry is not None else CollectorRegistry()
        labels = ("model", "version")
        self._replayed = Counter(
            "workbench_replayed_requests", "Replayed inference requests (canary analysis) by outcome.",
            (*labels, "outcome"), registry=self.registry,
        )
        # The request path's series: updated on the event loop only (every request
        # touches about ten of them), exported by _RequestCollector at scrape time.
        self._children: dict[str, _Children] = {}
        self._unresolved: dict[str, _Count] = {}  # outcome -> requests that reached no version
        self._unresolved_duration: _Histogram | None = None
        # (version, segment key, segment) -> its outcome counts and latency histogram
        self.segment_keys: tuple[SegmentKey, ...] = ()
        self._books: dict[SegmentKey, SegmentBook] = {}
        self._segments: dict[tuple[str, str, str], _Segment] = {}
        self.registry.register(_RequestCollector(self))
        if snapshot is not None:
            self.registry.register(_StateCollector(model, snapshot))
        with contextlib.suppress(ValueError, OSError):  # pragma: no cover - non-Linux
            _ProcessCollector(registry=self.registry)

    def version(self, version: str) -> _Children:
        """The series of one version (created on first use)."""
        children = self._children.get(version)
        if children is None:
            children = self._children[version] = _Children()
        return children

    def loaded(self, version: str) -> None:
        """Create a freshly loaded version's series at zero (replays included)."""
        self.version(version)
        for outcome in OUTCOMES:
            self._replayed.labels(self.model, version, outcome)

    def segment_by(self, keys: Sequence[SegmentKey],
                   limit: int = DEFAULT_MAX_SEGMENTS) -> None:
        """Also count requests per segment of ``keys``, ``limit`` values each at most."""
        self.segment_keys = tuple(keys)
        self._books = {key: SegmentBook(limit) for key in keys}

    def segment_label(self, key: SegmentKey, value: str | None) -> str:
        """The label ``value`` of ``key`` is counted under (bounded: see SegmentBook)."""
        return self._books[key].label(value)

    def segment_request(self, version: str, status: int, seconds: float,
                        values: Mapping[SegmentKey, str | None]) -> None:
        """Count one finished request in its segments (after :meth:`request`; live
        traffic of a loaded version only)."""
        if version not in self._children:
            return
        outcome = "ok" if status < 400 else "client_error" if status < 500 else "server_error"
        for key, book in self._books.items():
            index = (version, str(key), book.label(values.get(key)))
            series = self._segments.get(index)
            if series is None:
                series = self._segments[index] = _Segment()
            series.by_outcome[outcome].inc()
            series.duration.observe(seconds)

    def unloaded(self, version: str) -> None:
        """Remove an unloaded version's series."""
        self._children.pop(version, None)
        for index in [i for i in self._segments if i[0] == version]:
            del self._segments[index]
        for outcome in OUTCOMES:
            self._replayed.remove(self.model, version, outcome)

    def request(self, version: str, status: int, seconds: float, *, replay: bool = False) -> None:
        """Count one finished inference request and its latency (a replay only by outcome).

        A request that finishes after its version was unloaded (it drained, then the
        response was still being sent) is not counted: counting it would bring back the
        series of a version that is gone.
        """
        outcome = "ok" if status < 400 else "client_error" if status < 500 else "server_error"
        if version == UNRESOLVED:
            if replay:
                self._replayed.labels(self.model, version, outcome).inc()
                return
            self._unresolved.setdefault(outcome, _Count()).inc()
            if self._unresolved_duration is None:
                self._unresolved_duration = _Histogram(LATENCY_BUCKETS)
            self._unresolved_duration.observe(seconds)
            return
        children = self._children.get(version)
        if children is None:
            return
        if replay:
            self._replayed.labels(self.model, version, outcome).inc()
            return
        children.by_outcome[outcome].inc()
        children.duration.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _RequestCollector(Collector):
    """The request path's families, read from :class:`ServingMetrics`' loop-only series."""

    def __init__(self, metrics: ServingMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        model = metrics.model
        versions = list(metrics._children.items())
        requests = CounterMetricFamily(
            "workbench_requests", "Inference requests by outcome.",
            labels=["model", "version", "outcome"],
        )
        for version, children in versions:
            for outcome, count in children.by_outcome.items():
                requests.add_metric([model, version, outcome], count.value)
        for outcome, count in list(metrics._unresolved.items()):
            requests.add_metric([model, UNRESOLVED, outcome], count.value)
        yield requests
        histograms = (
            ("workbench_request_duration_seconds", "Inference request latency, end to end.",
             "duration"),
            ("workbench_queue_duration_seconds", "Time a request waited for a predictor.",
             "queue"),
            ("workbench_inference_duration_seconds", "Predictor time of the batch that "
             "carried a request.", "inference"),
            ("workbench_batch_size", "Rows per executed batch.", "batch"),
        )
        for name, documentation, attribute in histograms:
            family = HistogramMetricFamily(name, documentation, labels=["model", "version"])
            for version, children in versions:
                series: _Histogram = getattr(children, attribute)
                family.add_metric([model, version], series.buckets(), series.total)
            unresolved = metrics._unresolved_duration
            if attribute == "duration" and unresolved is not None:
                family.add_metric([model, UNRESOLVED], unresolved.buckets(), unresolved.total)
            yield family
        inflight = GaugeMetricFamily(
            "workbench_inflight_requests", "Inference requests being served.",
            labels=["model", "version"],
        )
        for version, children in versions:
            inflight.add_metric([model, version], children.inflight.value)
        yield inflight
        if metrics.segment_keys:
            yield from _segment_families(model, list(metrics._segments.items()))


def _segment_families(model: str, segments: list[tuple[tuple[str, str, str], _Segment]],
                      ) -> Iterator[Metric]:
    labels = ["model", "version", "segment_by", "segment"]
    requests = CounterMetricFamily(
        "workbench_segment_requests", "Inference requests by traffic segment and outcome.",
        labels=[*labels, "outcome"],
    )
    duration = HistogramMetricFamily(
        "workbench_segment_request_duration_seconds",
        "Inference request latency by traffic segment, end to end.", labels=labels,
    )
    for (version, key, segment), series in segments:
        for outcome, count in series.by_outcome.items():
            requests.add_metric([model, version, key, segment, outcome], count.value)
        duration.add_metric([model, version, key, segment], series.duration.buckets(),
                            series.duration.total)
    yield requests
    yield duration


class _ProcessCollector(ProcessCollector):
    """The standard process metrics, less the resident memory our own gauge reports."""

    def collect(self) -> Iterator[Metric]:
        for family in super().collect():
            if family.name != "process_resident_memory_bytes":
                yield family


class _StateCollector(Collector):
    def __init__(self, model: str, snapshot: Callable[[], Snapshot]) -> None:
        self._model = model
        self._snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self._snapshot()
        loaded = GaugeMetricFamily(
            "workbench_loaded_versions", "Versions loaded in this instance.", labels=["model"]
        )
        loaded.add_metric([self._model], len(state.loaded))
        yield loaded
        active = GaugeMetricFamily(
            "workbench_active_version_info", "The version answering unpinned requests.",
            labels=["model", "version"],
        )
        if state.active is not None:
            active.add_metric([self._model, state.active], 1)
        yield active
        rss = state.rss_bytes if state.rss_bytes is not None else _rss()
        memory = GaugeMetricFamily(
            "workbench_process_resident_memory_bytes", "Resident memory of the process.",
            labels=["model"],
        )
        if rss is not None:
            memory.add_metric([self._model], rss)
        yield memory
        gpu = GaugeMetricFamily(
            "workbench_gpu_memory_bytes", "GPU memory held by a loaded version.",
            labels=["model", "version"],
        )
        for item in state.loaded:
            if item.gpu_bytes is not None:
                gpu.add_metric([self._model, item.version], item.gpu_bytes)
        yield gpu
        yield from _worker_families(self._model, state.loaded)


def _worker_families(model: str, loaded: tuple[VersionState, ...]) -> Iterator[Any]:
    """Process isolation: the workers' memory, their restarts, and each version's readiness."""
    rss = GaugeMetricFamily(
        "workbench_worker_resident_memory_bytes", "Resident memory of a version's worker processes.",
        labels=["model", "version"],
    )
    restarts = CounterMetricFamily(
        "workbench_worker_restarts", "Worker processes of a version that died and were restarted.",
        labels=["model", "version"],
    )
    ready = GaugeMetricFamily(
        "workbench_version_ready", "1 when a loaded version is ready to serve.", labels=["model", "version"]
    )
    for item in loaded:
        if item.worker_rss_bytes is not None:
            rss.add_metric([model, item.version], item.worker_rss_bytes)
        if item.worker_restarts is not None:
            restarts.add_metric([model, item.version], item.worker_restarts)
        ready.add_metric([model, item.version], 1 if item.ready else 0)
    yield rss
    yield restarts
    yield ready


def _rss() -> int | None:
    try:
        import psutil

        return int(psutil.Process(os.getpid()).memory_info().rss)
    except Exception:  # pragma: no cover - psutil is a dependency, but be safe
        return None
