"""Latency percentiles: the one p50/p90/p99 every report of the workbench uses.

``np.percentile`` with its default (linear) interpolation, so a version's stats in the
kernel, a side-by-side comparison and the notebook's load test agree on the same samples.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["PERCENTILES", "percentiles"]

#: The percentiles reported, by key.
PERCENTILES: dict[str, float] = {"p50": 50.0, "p90": 90.0, "p99": 99.0}


def percentiles(values: Iterable[float], *, scale: float = 1.0) -> dict[str, float | None]:
    """``{"p50": ..., "p90": ..., "p99": ...}`` of ``values`` times ``scale`` (1000: seconds
    to milliseconds); every value None when there are none."""
    array = np.asarray(list(values), dtype=float)
    if not array.size:
        return dict.fromkeys(PERCENTILES)
    points = np.percentile(array, list(PERCENTILES.values())) * scale
    return {key: float(point) for key, point in zip(PERCENTILES, points, strict=True)}
