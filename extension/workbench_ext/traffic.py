"""Live traffic per colour from the serving instances' Prometheus metrics.

Each scrape is turned into a rate against the previous one: requests/s, the share
of server errors, and the p99 latency of the requests in between (from the
histogram's bucket deltas).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

Samples = "Mapping[str, list[tuple[dict[str, str], float]]]"
REQUESTS = "workbench_requests_total"
BUCKETS = "workbench_request_duration_seconds_bucket"


@dataclass(frozen=True)
class Counters:
    """Cumulative counters of one instance at one moment."""

    at: float
    requests: float
    errors: float
    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count), ascending

    @classmethod
    def from_samples(
        cls, samples: Mapping[str, list[tuple[dict[str, str], float]]], at: float | None = None
    ) -> Counters:
        requests = errors = 0.0
        for labels, value in samples.get(REQUESTS, []):
            requests += value
            if labels.get("outcome") == "server_error":
                errors += value
        merged: dict[float, float] = {}
        for labels, value in samples.get(BUCKETS, []):
            bound = float(labels.get("le", "inf"))
            merged[bound] = merged.get(bound, 0.0) + value
        return cls(time.time() if at is None else at, requests, errors, tuple(sorted(merged.items())))


def quantile(buckets: tuple[tuple[float, float], ...], q: float) -> float | None:
    """The ``q`` quantile from cumulative histogram buckets (Prometheus' histogram_quantile)."""
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = bound, count
    return lower


def rates(before: Counters, after: Counters) -> dict[str, float | None]:
    """requests/s, error rate and p99 (ms) between two scrapes of one instance."""
    seconds = after.at - before.at
    requests = after.requests - before.requests
    if seconds <= 0 or requests < 0:  # restarted instance: counters went back
        return {"rps": None, "error_rate": None, "p99_ms": None}
    errors = after.errors - before.errors
    earlier = dict(before.buckets)
    delta = tuple((bound, count - earlier.get(bound, 0.0)) for bound, count in after.buckets)
    p99 = quantile(delta, 0.99)
    return {
        "rps": requests / seconds,
        "error_rate": errors / requests if requests > 0 else 0.0,
        "p99_ms": None if p99 is None else p99 * 1000,
    }


@dataclass
class TrafficSampler:
    """Remembers the last counters per (colour, instance url) and yields rates."""

    previous: dict[tuple[str, str], Counters] = field(default_factory=dict)

    def add(self, color: str, url: str, counters: Counters) -> dict[str, float | None]:
        key = (color, url)
        before = self.previous.get(key)
        self.previous[key] = counters
        if before is None:
            return {"rps": None, "error_rate": None, "p99_ms": None}
        return rates(before, counters)
