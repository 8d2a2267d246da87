"""Synthetic traffic against a real instance: rate, bounds, stop, and what its metrics see."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests.deploy._serve import serving_colors
from tests.serving.conftest import ServeProcess, x_batch
from workbench.deploy.rollout.scrape import ScrapeSource
from workbench.deploy.rollout.synthetic import SyntheticTraffic

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(scope="module")
def instance(demo_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    colors = {"green": ["--version", "1.1.0", "--fault-error-rate", "0.5"]}
    with serving_colors(demo_repo, tmp_path_factory.mktemp("synthetic"), colors) as servers:
        yield servers["green"]


def test_bounded_by_count_and_seen_in_the_instances_metrics(instance: ServeProcess) -> None:
    source = ScrapeSource({"green": [instance.url]})
    source.scrape()
    traffic = SyntheticTraffic(instance.url, "digits", {"x": x_batch(3)}, rate=50,
                               max_requests=12).start()
    assert traffic.wait(30)
    assert traffic.counts["sent"] == 12
    assert traffic.counts["ok"] + traffic.counts["failed"] == 12
    assert traffic.counts["failed"] > 0  # the injected faults reach the sender too
    window = source.window("green", 60)
    assert window.requests == 12 and window.errors == traffic.counts["failed"]


def test_bounded_by_time_and_paced(instance: ServeProcess) -> None:
    started = time.monotonic()
    with SyntheticTraffic(instance.url, "digits", {"x": x_batch(2)}, rate=10,
                          max_seconds=1.0) as traffic:
        assert traffic.wait(30)
    assert time.monotonic() - started < 5
    assert 5 <= traffic.counts["sent"] <= 11  # 10 due within the second


def test_stop_ends_it_at_once(instance: ServeProcess) -> None:
    traffic = SyntheticTraffic(instance.url, "digits", {"x": x_batch(2)}, rate=5,
                               max_seconds=600).start()
    time.sleep(0.5)
    started = time.monotonic()
    traffic.stop()
    assert not traffic.running and time.monotonic() - started < 5
    sent = traffic.counts["sent"]
    time.sleep(0.5)
    assert traffic.counts["sent"] == sent <= 4
    with pytest.raises(RuntimeError, match="already started"):
        traffic.start()


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="rate"):
        SyntheticTraffic("http://x", "m", {"x": x_batch(1)}, rate=0)
    with pytest.raises(ValueError, match="row"):
        SyntheticTraffic("http://x", "m", {"x": np.zeros((0, 64))}, rate=1)
