"""Triton's statistics extension: cumulative per-version counts and durations.

``GET /v2/models/{m}[/versions/{v}]/stats`` answers in Triton's JSON shape, so
``tritonclient``'s ``get_inference_statistics`` and ``perf_analyzer`` show the server's
side of a request::

    {"model_stats": [{"name", "version", "last_inference", "inference_count",
                      "execution_count", "inference_stats": {"success", "fail", "queue",
                      "compute_input", "compute_infer", "compute_output", "cache_hit",
                      "cache_miss"}, "batch_stats": [...], "memory_usage": []}]}

Every duration is ``{"count": n, "ns": total nanoseconds}``. ``compute_input`` is the
time spent decoding and checking a request's tensors, ``compute_infer`` the predictor
run of the batch that carried it, ``compute_output`` encoding the response, ``queue``
the wait for a predictor; ``success`` and ``fail`` the whole request. ``inference_count``
counts rows, ``execution_count`` predictor runs. Updates happen on the event loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Duration:
    """A count and a cumulative duration in nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.ns += max(0, int(seconds * 1e9))

    def json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class _Batch:
    compute_infer: Duration = field(default_factory=Duration)


@dataclass
class VersionStatistics:
    """The counters of one version."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batches: dict[int, _Batch] = field(default_factory=dict)

    def executed(self, rows: int, seconds: float) -> None:
        """One predictor run of ``rows`` rows."""
        self.execution_count += 1
        self.batches.setdefault(rows, _Batch()).compute_infer.add(seconds)

    def succeeded(self, rows: int, total: float, queue: float, compute_input: float,
                  compute_infer: float, compute_output: float) -> None:
        """One successful request and where its time went."""
        self.success.add(total)
        self.queue.add(queue)
        self.compute_input.add(compute_input)
        self.compute_infer.add(compute_infer)
        self.compute_output.add(compute_output)
        self.inference_count += rows
        self.last_inference_ms = int(time.time() * 1000)

    def failed(self, total: float) -> None:
        self.fail.add(total)
        self.last_inference_ms = int(time.time() * 1000)

    def json(self, model: str, version: str) -> dict[str, Any]:
        empty = Duration().json()
        return {
            "name": model,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.json(),
                "fail": self.fail.json(),
                "queue": self.queue.json(),
                "compute_input": self.compute_input.json(),
                "compute_infer": self.compute_infer.json(),
                "compute_output": self.compute_output.json(),
                "cache_hit": empty,
                "cache_miss": empty,
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": empty,
                    "compute_infer": batch.compute_infer.json(),
                    "compute_output": empty,
                }
                for size, batch in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }


class InferenceStatistics:
    """The statistics of one served model, per version."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._versions: dict[str, VersionStatistics] = {}

    def version(self, version: str) -> VersionStatistics:
        stats = self._versions.get(version)
        if stats is None:
            stats = self._versions[version] = VersionStatistics()
        return stats

    def document(self, versions: list[str]) -> dict[str, Any]:
        """Triton's ``{"model_stats": [...]}`` for ``versions`` (zeros for unseen ones)."""
        return {
            "model_stats": [
                self._versions.get(v, VersionStatistics()).json(self.model, v) for v in versions
            ]
        }
