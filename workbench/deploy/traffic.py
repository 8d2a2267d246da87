"""Live traffic of a serving instance from its Prometheus metrics: pure maths, no I/O.

A scrape (``GET /metrics`` text) is parsed into samples, reduced to cumulative
:class:`Counters`, and turned into rates against the previous scrape: requests/s,
the share of server errors, and the p99 latency of the requests in between (from
the histogram's bucket deltas, as Prometheus' ``histogram_quantile`` does).
The CLI's ``status --watch`` and the notebook's deploy panel both use it; only
:meth:`TrafficSampler.scrape` talks to the instances.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from workbench.deploy.client import ServingClient
from workbench.deploy.exposition import Samples as Samples
from workbench.deploy.exposition import parse_metrics as parse_metrics
from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

Rates: TypeAlias = "dict[str, float | None]"
REQUESTS = "workbench_requests_total"
BUCKETS = "workbench_request_duration_seconds_bucket"
NO_RATES: Rates = {"rps": None, "error_rate": None, "p99_ms": None}

log = logging.getLogger(__name__)


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

    @classmethod
    def combined(cls, counters: Iterable[Counters]) -> Counters:
        """The counters of several instances of one colour as one (at the latest moment)."""
        items = list(counters)
        return cls(
            max(c.at for c in items),
            sum(c.requests for c in items),
            sum(c.errors for c in items),
            _sum_buckets(items),
        )


def _sum_buckets(counters: Iterable[Counters]) -> tuple[tuple[float, float], ...]:
    merged: dict[float, float] = {}
    for each in counters:
        for bound, count in each.buckets:
            merged[bound] = merged.get(bound, 0.0) + count
    return tuple(sorted(merged.items()))


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


def rates(before: Counters, after: Counters) -> Rates:
    """requests/s, error rate and p99 (ms) between two scrapes of one instance."""
    seconds = after.at - before.at
    requests = after.requests - before.requests
    if seconds <= 0 or requests < 0:  # restarted instance: counters went back
        return dict(NO_RATES)
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

    def add(self, color: str, url: str, counters: Counters) -> Rates:
        key = (color, url)
        before = self.previous.get(key)
        self.previous[key] = counters
        if before is None:
            return dict(NO_RATES)
        return rates(before, counters)

    def scrape(self, urls: Mapping[str, str | Sequence[str]], timeout: float = 1.0) -> dict[str, Rates]:
        """GET ``/metrics`` of each colour's instances (colour -> url, or urls when the colour
        spans several) and add their sum; colours none of whose instances answer are left out.

        The rates are over the instances that answered both times (a set that changed
        starts afresh), so an instance that stops answering never makes them negative.
        """
        point: dict[str, Rates] = {}
        for color, where in urls.items():
            read: dict[str, Counters] = {}
            for url in [where] if isinstance(where, str) else where:
                try:
                    with ServingClient(url, timeout=timeout) as client:
                        read[url] = Counters.from_samples(client.metrics())
                except WorkbenchError as exc:
                    log.debug("scraping %s failed: %s", url, exc)
            if read:
                point[color] = self.add(color, " ".join(sorted(read)), Counters.combined(read.values()))
        return point
