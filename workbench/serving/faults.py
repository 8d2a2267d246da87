"""Fault injection for chaos testing: a serving instance that fails and slows on purpose.

``workbench serve --fault-error-rate 0.3 --fault-latency-ms 200`` makes 30% of the
inference requests answer 500 (counted as server errors in ``/metrics``, like any
real failure) and adds 200 ms to every inference request; ``--fault-version V``
limits both to the requests answered by version ``V``; ``--fault-segment x-tenant=b``
(or ``param:tenant=b``) limits them to the requests of one traffic segment (the header,
or the request parameter, with that value: :mod:`workbench.serving.segments`), to
rehearse a regression that only one tenant sees. It exists to rehearse what a
canary analysis, a router retry or a rollback does with a bad version, without
building a bad model. Health checks, metadata and ``/metrics`` are never touched.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from workbench.errors import WorkbenchError
from workbench.serving.segments import SegmentKey

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["FaultConfig", "InjectedFault"]


class InjectedFault(WorkbenchError):
    """A server error injected on purpose (``--fault-error-rate``); answered as 500."""


@dataclass(frozen=True)
class FaultConfig:
    """Which inference requests fail or slow down on purpose."""

    error_rate: float = 0.0  # share of requests answered 500, 0..1
    latency_ms: float = 0.0  # added to every request
    versions: tuple[str, ...] = ()  # only requests answered by these versions; () = all
    segment: str | None = None  # only requests of this segment: "x-tenant=b", "param:tenant=b"

    def __post_init__(self) -> None:
        if self.segment is not None:
            self.segment_rule  # noqa: B018 - validates
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"the fault error rate must be in 0..1, not {self.error_rate}")
        if not 0.0 <= self.latency_ms <= 600_000:
            raise ValueError(f"the fault latency must be 0..600000 ms, not {self.latency_ms}")

    @property
    def segment_rule(self) -> tuple[SegmentKey, str] | None:
        """The segment key and value faults are limited to (None: every request)."""
        if self.segment is None:
            return None
        key, sep, value = self.segment.rpartition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"a fault segment is NAME=VALUE (e.g. x-tenant=b), not {self.segment!r}")
        return SegmentKey.parse(key), value.strip()

    @property
    def active(self) -> bool:
        return self.error_rate > 0 or self.latency_ms > 0

    def serve_args(self) -> tuple[str, ...]:
        """The ``workbench serve`` options that inject these faults (``()`` when none)."""
        args: list[str] = []
        if self.error_rate > 0:
            args += ["--fault-error-rate", f"{self.error_rate:g}"]
        if self.latency_ms > 0:
            args += ["--fault-latency-ms", f"{self.latency_ms:g}"]
        for version in self.versions if args else ():
            args += ["--fault-version", version]
        if args and self.segment is not None:
            args += ["--fault-segment", self.segment]
        return tuple(args)

    def applies_to(self, version: str,
                   segments: Mapping[SegmentKey, str | None] | None = None) -> bool:
        if self.versions and version not in self.versions:
            return False
        rule = self.segment_rule
        return rule is None or (segments or {}).get(rule[0]) == rule[1]

    async def apply(self, version: str,
                    segments: Mapping[SegmentKey, str | None] | None = None) -> None:
        """Delay, then maybe fail, a request answered by ``version`` (of the segment,
        when faults are limited to one: ``segments`` holds the request's values)."""
        if not self.applies_to(version, segments):
            return
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000.0)
        if self.error_rate > 0 and random.random() < self.error_rate:
            raise InjectedFault(f"injected fault (--fault-error-rate {self.error_rate:g})")

    def __str__(self) -> str:
        scope = ", ".join(self.versions) if self.versions else "every version"
        if self.segment is not None:
            scope += f", segment {self.segment}"
        return f"{self.error_rate:.0%} errors, +{self.latency_ms:g} ms on {scope}"
