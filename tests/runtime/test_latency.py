"""The one latency percentile function (runtime.latency) the stats and comparisons share."""

from __future__ import annotations

import pytest

from workbench.runtime.latency import percentiles


def test_percentiles_interpolate_linearly_between_samples() -> None:
    # ranks: p50 at 1.5 -> 2.5, p90 at 2.7 -> 3.7, p99 at 2.97 -> 3.97
    assert percentiles([4.0, 1.0, 3.0, 2.0]) == pytest.approx({"p50": 2.5, "p90": 3.7, "p99": 3.97})


def test_percentiles_scale_seconds_to_milliseconds() -> None:
    assert percentiles([0.010, 0.020], scale=1000) == pytest.approx({"p50": 15.0, "p90": 19.0, "p99": 19.9})


def test_no_samples_gives_no_percentiles() -> None:
    assert percentiles([]) == {"p50": None, "p90": None, "p99": None}
