"""The deploy panel's live figures and the notebook progress bars, without a deployment."""

from __future__ import annotations

import time

import pytest


def test_traffic_axes_start_at_zero_and_follow_the_data() -> None:
    from workbench_ext.plots import traffic_plot

    plot = traffic_plot()
    rps, errors, p99 = plot.figures
    plot.stream({"blue": {"rps": 0.0, "error_rate": 0.0, "p99_ms": None}}, at=1.0)
    assert (errors.y_range.start, errors.y_range.end) == (0, 0.01)  # not -1..1 on a flat zero line
    plot.stream({"blue": {"rps": 40.0, "error_rate": 0.2, "p99_ms": 12.0}}, at=2.0)
    assert rps.y_range.start == 0 and rps.y_range.end == pytest.approx(46.0)
    assert errors.y_range.end == pytest.approx(0.23)
    assert p99.y_range.end == pytest.approx(13.8)
    plot.stream({"green": {"error_rate": 1.0}}, at=3.0)
    assert errors.y_range.end == 1.0  # a share never goes above 1
    assert list(plot.sources[1].data["t"]) == [1000.0, 2000.0, 3000.0]


def test_traffic_legends_sit_below_the_lines() -> None:
    from bokeh.models import Legend
    from workbench_ext.plots import traffic_plot

    for fig in traffic_plot().figures:
        assert not any(isinstance(r, Legend) for r in fig.center)
        assert [type(r) for r in fig.below].count(Legend) == 1
        assert fig.xaxis[0].ticker.desired_num_ticks <= 4


def test_step_progress_shows_a_total_and_the_step(capsys: pytest.CaptureFixture[str]) -> None:
    from workbench_ext.progress import run_with_progress

    assert run_with_progress(lambda: time.sleep(1.2) or 7, desc="create demo", interval=0.1) == 7
    steps = ["start green", "wait until ready"]
    state = {"done": 0}

    def work() -> None:
        time.sleep(0.8)
        state["done"] = 1
        time.sleep(0.8)

    run_with_progress(work, desc="update demo", steps=steps, done=lambda: state["done"], interval=0.1)
    err = capsys.readouterr().err
    assert "create demo: 1/1 steps" in err and "?" not in err and "s/s" not in err
    assert "update demo: 0/2 steps" in err and "start green" in err
    assert "update demo: 1/2 steps" in err and "wait until ready" in err
    assert "update demo: 2/2 steps" in err
