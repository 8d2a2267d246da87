"""A :class:`~workbench.deploy.rollout.signals.MetricsSource` that scrapes the instances itself.

No Prometheus needed: :class:`ScrapeSource` reads each instance's ``/metrics``
(``workbench_requests_total``, the ``workbench_request_duration_seconds`` histogram,
``workbench_process_resident_memory_bytes``), keeps a short history of those
cumulative counters per color and instance, and answers :meth:`ScrapeSource.window`
from the difference between the newest scrape and the last one at least ``seconds``
older — the way Prometheus' ``increase()`` and ``histogram_quantile()`` do, counter
resets included. Each ``window`` call scrapes the color first, so a controller that
calls it once per interval gets exact per-interval figures; call :meth:`scrape` at the
start of a step so the first window already has a base::

    source = ScrapeSource({"blue": ["http://127.0.0.1:9001"], "green": [...]})
    source.scrape()
    ...
    window = source.window("green", 30.0)   # ColorWindow(requests, errors, p99_ms, memory)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.client import HTTPException

from workbench.deploy.http import request_within
from workbench.deploy.rollout.segments import SegmentCounters, segment_counters, segment_windows
from workbench.deploy.rollout.signals import ColorWindow
from workbench.deploy.traffic import Counters, parse_metrics, quantile
from workbench.errors import MetricsError

__all__ = ["Scrape", "ScrapeSource", "Targets"]

log = logging.getLogger(__name__)

#: color -> base URLs of its serving instances (or a callable giving the current ones)
Targets = Mapping[str, Sequence[str]] | Callable[[], Mapping[str, Sequence[str]]]
MEMORY = "workbench_process_resident_memory_bytes"


@dataclass(frozen=True)
class Scrape:
    """One instance's cumulative counters and resident memory at one (monotonic) moment."""

    counters: Counters
    memory_bytes: float | None
    segments: SegmentCounters = field(default_factory=dict)  # --segment-by instances only

    @classmethod
    def parse(cls, text: str, at: float) -> Scrape:
        samples = parse_metrics(text)
        memory = [value for _, value in samples.get(MEMORY, [])]
        return cls(Counters.from_samples(samples, at), sum(memory) if memory else None,
                   segment_counters(samples, at))

    @property
    def at(self) -> float:
        return self.counters.at


def _increase(before: float, after: float) -> float:
    """Counter increase, a reset (restarted instance) counting from zero."""
    return after - before if after >= before else after


def _bucket_increase(before: Scrape, after: Scrape) -> dict[float, float]:
    earlier = dict(before.counters.buckets)
    return {bound: _increase(earlier.get(bound, 0.0), count) for bound, count in after.counters.buckets}


class ScrapeSource:
    """Per-color traffic windows from the instances' own ``/metrics``.

    ``targets`` maps color to instance base URLs (a callable is asked afresh on each
    scrape, so instances that come and go are followed). ``keep`` is how many seconds
    of history are kept per instance. ``fetch`` returns an URL's metrics text (default:
    an HTTP GET finished within ``timeout`` in all, connect to last byte, so a hanging or
    trickling instance costs a look no more than that); ``clock`` is a monotonic clock.
    Thread-safe.
    """

    def __init__(
        self,
        targets: Targets,
        *,
        keep: float = 900.0,
        timeout: float = 2.0,
        fetch: Callable[[str], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._targets = targets
        self.keep = keep
        self.timeout = timeout
        self._fetch = fetch or self._http_get
        self._clock = clock
        self._history: dict[tuple[str, str], deque[Scrape]] = {}
        self._lock = threading.Lock()
        self.errors: dict[str, str] = {}  # color -> why its last scrape failed

    def targets(self) -> dict[str, list[str]]:
        """Colour -> instance URLs, right now."""
        found = self._targets() if callable(self._targets) else self._targets
        return {color: [url.rstrip("/") for url in urls] for color, urls in found.items()}

    def scrape(self, color: str | None = None) -> dict[str, int]:
        """Scrape every instance (of ``color``, or of all colors) once; color -> instances read."""
        read: dict[str, int] = {}
        for name, urls in self.targets().items():
            if color is not None and name != color:
                continue
            read[name] = 0
            problems: list[str] = []
            for url in urls:
                try:
                    text = self._fetch(f"{url}/metrics")
                    scrape = Scrape.parse(text, self._clock())
                except (OSError, ValueError, MetricsError) as exc:
                    log.warning("%s: cannot scrape %s/metrics: %s", name, url, exc)
                    problems.append(f"{url}/metrics: {_why(exc)}")
                    continue
                self._remember(name, url, scrape)
                read[name] += 1
            if problems:
                self.errors[name] = "; ".join(problems)
            else:
                self.errors.pop(name, None)
        return read

    def window(self, color: str, seconds: float) -> ColorWindow:
        """``color``'s traffic over the last ``seconds`` (shorter while history is young).

        Raises :class:`~workbench.errors.MetricsError` if ``color`` has no instance or
        none of them answered its scrape.
        """
        if seconds <= 0:
            raise ValueError(f"a window must last more than 0 seconds, not {seconds}")
        read = self.scrape(color)
        if not read.get(color):
            why = self.errors.get(color, "it has no instance")
            raise MetricsError(f"no instance of {color} answered its metrics scrape ({why})")
        urls = self.targets()[color]
        now = self._clock()
        requests = errors = 0.0
        span = 0.0
        buckets: dict[float, float] = {}
        memory: list[float] = []
        pairs: list[tuple[SegmentCounters, SegmentCounters]] = []
        with self._lock:
            for url in urls:
                history = self._history.get((color, url))
                if not history or now - history[-1].at > self.timeout + 1.0:
                    continue  # never read, or not in this scrape: its data is stale
                last = history[-1]
                if last.memory_bytes is not None:
                    memory.append(last.memory_bytes)
                base = next((s for s in reversed(history) if s.at <= last.at - seconds), history[0])
                span = max(span, last.at - base.at)
                pairs.append((base.segments, last.segments))
                requests += _increase(base.counters.requests, last.counters.requests)
                errors += _increase(base.counters.errors, last.counters.errors)
                for bound, count in _bucket_increase(base, last).items():
                    buckets[bound] = buckets.get(bound, 0.0) + count
        p99 = quantile(tuple(sorted(buckets.items())), 0.99) if requests > 0 else None
        return ColorWindow(
            color=color,
            seconds=span,
            requests=requests,
            errors=errors,
            p99_ms=None if p99 is None else p99 * 1000.0,
            memory_bytes=sum(memory) if memory else None,
            buckets=tuple(sorted(buckets.items())) if buckets else None,
            segments=segment_windows(color, span, pairs),
        )

    def history(self, color: str) -> dict[str, list[Scrape]]:
        """Instance URL -> the scrapes kept for ``color`` (oldest first)."""
        with self._lock:
            return {url: list(h) for (c, url), h in self._history.items() if c == color}

    def _remember(self, color: str, url: str, scrape: Scrape) -> None:
        with self._lock:
            history = self._history.setdefault((color, url), deque())
            history.append(scrape)
            while len(history) > 2 and scrape.at - history[1].at >= self.keep:
                history.popleft()  # history[1] alone still covers `keep` seconds

    def _http_get(self, url: str) -> str:
        try:
            answer = request_within("GET", url, self.timeout)
        except (OSError, HTTPException) as exc:
            raise MetricsError(f"{url}: {_why(exc)}") from exc
        if answer.status != 200:
            raise MetricsError(f"{url} answered {answer.status}")
        return answer.body.decode("utf-8", errors="replace")


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
