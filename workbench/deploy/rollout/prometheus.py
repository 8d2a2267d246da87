"""A :class:`~workbench.deploy.rollout.signals.MetricsSource` over an existing Prometheus.

Where the serving instances are already scraped by a Prometheus, the canary analysis
asks it instead of scraping them itself (``--prometheus URL``). Each figure of a
:class:`~workbench.deploy.rollout.signals.ColorWindow` is one PromQL instant query rendered
from a :class:`PromQLTemplates` template: ``$selector`` becomes the color's label
selector and ``$window`` the window as a PromQL duration. The defaults read the
serving instance's own metric names; a team whose Prometheus relabels them gives its
own templates (they are plain strings, reusable across deployments)::

    source = PrometheusSource("http://prometheus:9090",
                              {"blue": 'deployment="web",color="blue"',
                               "green": 'deployment="web",color="green"'})
    source.window("green", 60.0)

:func:`instance_selector` selects instances by address (Prometheus' default
``instance`` label is ``host:port``) where there are no color labels.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from http.client import HTTPException
from string import Template
from typing import Any
from urllib.parse import urlencode

from workbench.deploy.http import request_within
from workbench.deploy.rollout.signals import ColorWindow
from workbench.errors import MetricsError

__all__ = ["PromQLTemplates", "PrometheusSource", "Selectors", "instance_selector"]

#: color -> PromQL label matchers (without braces), or a callable giving the current ones
Selectors = Mapping[str, str] | Callable[[], Mapping[str, str]]


@dataclass(frozen=True)
class PromQLTemplates:
    """One PromQL query per figure; ``$selector`` and ``$window`` are filled in."""

    requests: str = "sum(increase(workbench_requests_total{$selector}[$window]))"
    errors: str = (
        'sum(increase(workbench_requests_total{$selector,outcome="server_error"}[$window]))'
    )
    p99: str = (
        "histogram_quantile(0.99, sum by (le) "
        "(rate(workbench_request_duration_seconds_bucket{$selector}[$window])))"
    )
    memory: str = "sum(workbench_process_resident_memory_bytes{$selector})"
    # per traffic segment (rollout.segments), one series per (segment_by, segment)
    segment_requests: str = (
        "sum by (segment_by, segment) "
        "(increase(workbench_segment_requests_total{$selector}[$window]))"
    )
    segment_errors: str = (
        "sum by (segment_by, segment) (increase(workbench_segment_requests_total"
        '{$selector,outcome="server_error"}[$window]))'
    )
    segment_p99: str = (
        "histogram_quantile(0.99, sum by (segment_by, segment, le) "
        "(rate(workbench_segment_request_duration_seconds_bucket{$selector}[$window])))"
    )

    def __post_init__(self) -> None:
        for item in fields(self):
            text = getattr(self, item.name)
            if not isinstance(text, str) or "$selector" not in text:
                raise ValueError(f"the {item.name} PromQL template must use $selector: {text!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromQLTemplates:
        """Templates from an analysis file's ``[prometheus.queries]`` table (missing: defaults)."""
        known = {item.name for item in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown PromQL templates {sorted(unknown)}; known: {sorted(known)}")
        return cls(**dict(data))

    def render(self, name: str, selector: str, seconds: float) -> str:
        """The query of figure ``name`` for ``selector`` over ``seconds``."""
        text: str = getattr(self, name)
        return Template(text).substitute(selector=selector, window=duration(seconds))


def duration(seconds: float) -> str:
    """A PromQL duration, in whole milliseconds (at least 1 ms)."""
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def instance_selector(urls: Sequence[str]) -> str:
    """Label matchers picking instances by address: ``instance=~"127.0.0.1:9001|..."``."""
    addresses = [re.sub(r"^[a-z]+://", "", url).rstrip("/").split("/")[0] for url in urls]
    if not addresses:
        raise ValueError("need at least one instance URL")
    return 'instance=~"' + "|".join(re.escape(a).replace("\\", "\\\\") for a in addresses) + '"'


class PrometheusSource:
    """Per-color traffic windows queried from the Prometheus at ``url``."""

    def __init__(
        self,
        url: str,
        selectors: Selectors,
        *,
        templates: PromQLTemplates | None = None,
        timeout: float = 5.0,
        segments: bool = False,
    ) -> None:
        if not re.match(r"^https?://", url):
            raise ValueError(f"the Prometheus URL must start with http:// or https://, not {url!r}")
        self.url = url.rstrip("/")
        self._selectors = selectors
        self.templates = templates or PromQLTemplates()
        self.timeout = timeout
        self.segments = segments  # also query the per-segment figures (three more queries)

    def selector(self, color: str) -> str:
        found = self._selectors() if callable(self._selectors) else self._selectors
        if color not in found or not found[color].strip():
            raise MetricsError(f"no Prometheus selector for {color}")
        return found[color]

    def window(self, color: str, seconds: float) -> ColorWindow:
        """``color``'s traffic over the last ``seconds``, from four instant queries."""
        if seconds <= 0:
            raise ValueError(f"a window must last more than 0 seconds, not {seconds}")
        selector = self.selector(color)
        values = {
            name: self.query(self.templates.render(name, selector, seconds))
            for name in ("requests", "errors", "p99", "memory")
        }
        requests = values["requests"] or 0.0
        p99 = values["p99"] if requests > 0 else None
        return ColorWindow(
            color=color,
            seconds=seconds,
            requests=requests,
            errors=values["errors"] or 0.0,
            p99_ms=None if p99 is None else p99 * 1000.0,
            memory_bytes=values["memory"],
            segments=self._segments(color, selector, seconds) if self.segments else None,
        )

    def _segments(self, color: str, selector: str,
                  seconds: float) -> dict[str, dict[str, ColorWindow]] | None:
        """Segment key -> segment -> window (no histogram: the p99 alone); None if none."""
        found = {name: self.vector(self.templates.render(name, selector, seconds))
                 for name in ("segment_requests", "segment_errors", "segment_p99")}
        if not found["segment_requests"]:
            return None
        windows: dict[str, dict[str, ColorWindow]] = {}
        for (key, segment), requests in found["segment_requests"].items():
            p99 = found["segment_p99"].get((key, segment)) if requests > 0 else None
            windows.setdefault(key, {})[segment] = ColorWindow(
                color=color, seconds=seconds, requests=requests,
                errors=found["segment_errors"].get((key, segment), 0.0),
                p99_ms=None if p99 is None else p99 * 1000.0, memory_bytes=None)
        return windows

    def vector(self, promql: str) -> dict[tuple[str, str], float]:
        """An instant query's series by their ``segment_by`` and ``segment`` labels (NaN left out)."""
        out: dict[tuple[str, str], float] = {}
        try:
            for series in self._result(promql):
                labels = series.get("metric", {})
                value = float(series["value"][1])
                if not math.isnan(value):
                    out[(str(labels.get("segment_by", "")), str(labels.get("segment", "")))] = value
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise MetricsError(f"Prometheus at {self.url}: unexpected answer to {promql!r}") from exc
        return out

    def query(self, promql: str) -> float | None:
        """The value of an instant query's single result; None for no result or NaN.

        The query has ``timeout`` seconds in all (connect to last byte); every failure —
        unreachable, hanging, refused, not JSON, not one series — is a MetricsError.
        """
        try:
            result = self._result(promql)
            if not result:
                return None
            if len(result) > 1:
                raise MetricsError(f"{promql!r} gave {len(result)} series; aggregate it to one")
            value = float(result[0]["value"][1])
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise MetricsError(f"Prometheus at {self.url}: unexpected answer to {promql!r}") from exc
        return None if math.isnan(value) else value

    def _result(self, promql: str) -> list[Any]:
        """An instant query's result list (a scalar as one series)."""
        url = f"{self.url}/api/v1/query?" + urlencode({"query": promql})
        try:
            answer = request_within("GET", url, self.timeout)
            doc = json.loads(answer.body)
        except (OSError, HTTPException, ValueError) as exc:
            raise MetricsError(f"Prometheus at {self.url}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(doc, dict):
            raise MetricsError(f"Prometheus at {self.url} answered {type(doc).__name__}, not an object")
        if answer.status != 200 or doc.get("status") != "success":
            raise MetricsError(
                f"Prometheus at {self.url} refused {promql!r}: {doc.get('error', answer.status)}"
            )
        try:
            data = doc.get("data", {})
            result = data.get("result")
            if data.get("resultType") == "scalar":
                result = [{"value": result}]
        except AttributeError as exc:
            raise MetricsError(f"Prometheus at {self.url}: unexpected answer to {promql!r}") from exc
        if result is None:
            return []
        if not isinstance(result, list):
            raise MetricsError(f"Prometheus at {self.url}: unexpected answer to {promql!r}")
        return result
