"""Bokeh figures of the workbench: latency distributions, agreement matrices, memory, live traffic.

Each builder returns a small object holding the figure and its data sources, with
an ``update`` method: panels build a figure once, wrap it in
``jupyter_bokeh.BokehModel`` and then change only the data (``source.data`` for
snapshots, ``source.stream`` for time series), so the browser redraws in place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench_ext import bokehjs

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from workbench import Comparison

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
COLOR_HEX = {"blue": "#1f77b4", "green": "#2ca02c"}
WINDOW = 300  # points kept in live series


def _figure(**kwargs: Any) -> Any:
    from bokeh.plotting import figure

    options: dict[str, Any] = {
        "height": 260,
        "width": 460,
        "tools": "pan,wheel_zoom,box_zoom,reset,save,hover",
        "toolbar_location": "right",
    }
    options.update(kwargs)
    fig: Any = figure(**options)
    fig.title.text_font_size = "11pt"
    return fig


def histogram(values: Sequence[float], bins: int = 30) -> tuple[Any, Any]:
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return np.zeros(0), np.zeros(1)
    counts, edges = np.histogram(data, bins=bins)
    return counts, edges


# -- latency distributions ------------------------------------------------------------


@dataclass
class LatencyPlot:
    """Per-version latency histograms (ms) on one axis."""

    figure: Any
    source: Any

    def update(self, latencies: Mapping[str, Sequence[float]]) -> None:
        self.source.data = latency_data(latencies)


def latency_data(latencies: Mapping[str, Sequence[float]], bins: int = 30) -> dict[str, list[Any]]:
    """Histogram quads for each version (seconds in, milliseconds out), on shared bin edges."""
    every = [np.asarray(v, dtype=float) * 1000 for v in latencies.values() if len(v)]
    data: dict[str, list[Any]] = {"left": [], "right": [], "top": [], "version": [], "color": []}
    if not every:
        return data
    joined = np.concatenate(every)
    hi = float(np.percentile(joined, 99.5))
    lo = float(joined.min())
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-3, bins + 1)
    for index, (version, seconds) in enumerate(latencies.items()):
        ms = np.clip(np.asarray(seconds, dtype=float) * 1000, lo, edges[-1])
        counts, _ = np.histogram(ms, bins=edges)
        share = counts / max(1, counts.sum())
        data["left"] += edges[:-1].tolist()
        data["right"] += edges[1:].tolist()
        data["top"] += share.tolist()
        data["version"] += [version] * len(counts)
        data["color"] += [PALETTE[index % len(PALETTE)]] * len(counts)
    return data


def latency_plot(latencies: Mapping[str, Sequence[float]] | None = None, *, title: str = "") -> LatencyPlot:
    from bokeh.models import ColumnDataSource

    data: dict[str, Any] = latency_data(latencies or {})
    source = ColumnDataSource(data)
    fig = _figure(
        title=title or "batch latency per version", x_axis_label="ms", y_axis_label="share of batches"
    )
    fig.quad(
        left="left",
        right="right",
        top="top",
        bottom=0,
        source=source,
        fill_color="color",
        line_color="color",
        fill_alpha=0.35,
        legend_field="version",
    )
    fig.legend.location = "top_right"
    fig.legend.click_policy = "hide"
    return LatencyPlot(fig, source)


# -- agreement matrix -----------------------------------------------------------------


@dataclass
class MatrixPlot:
    """Class-by-class counts: rows predicted by version A, columns by version B."""

    figure: Any
    source: Any

    def update(self, comparison: Comparison, a: str, b: str) -> None:
        self.source.data = matrix_data(comparison, a, b)
        self.figure.xaxis.axis_label = f"{b} predicts"
        self.figure.yaxis.axis_label = f"{a} predicts"


def matrix_data(comparison: Comparison | None, a: str = "", b: str = "") -> dict[str, list[Any]]:
    data: dict[str, list[Any]] = {"x": [], "y": [], "count": [], "label": [], "alpha": [], "agree": []}
    if comparison is None or a not in comparison.outputs or b not in comparison.outputs:
        return data
    predicted = comparison.predictions()
    pa, pb = predicted[a], predicted[b]
    classes = int(max(pa.max(initial=0), pb.max(initial=0))) + 1
    counts = np.zeros((classes, classes), dtype=int)
    np.add.at(counts, (pa, pb), 1)
    peak = max(1, int(counts.max()))
    for i in range(classes):
        for j in range(classes):
            data["y"].append(str(i))
            data["x"].append(str(j))
            data["count"].append(int(counts[i, j]))
            data["label"].append(str(counts[i, j]) if counts[i, j] else "")
            data["alpha"].append(0.08 + 0.92 * counts[i, j] / peak if counts[i, j] else 0.0)
            data["agree"].append("#2ca02c" if i == j else "#d62728")
    return data


def matrix_plot(comparison: Comparison | None = None, a: str = "", b: str = "") -> MatrixPlot:
    from bokeh.models import ColumnDataSource

    classes = 10
    if comparison is not None and comparison.outputs:
        classes = next(iter(comparison.outputs.values())).reshape(comparison.rows, -1).shape[1]
    factors = [str(i) for i in range(classes)]
    data: dict[str, Any] = matrix_data(comparison, a, b)
    source = ColumnDataSource(data)
    fig = _figure(
        title="agreement matrix (green: same class)",
        x_range=factors,
        y_range=list(reversed(factors)),
        width=380,
        height=360,
        tools="hover,save",
        tooltips=[("A", "@y"), ("B", "@x"), ("rows", "@count")],
    )
    fig.rect(
        x="x",
        y="y",
        width=0.95,
        height=0.95,
        source=source,
        fill_color="agree",
        fill_alpha="alpha",
        line_color=None,
    )
    fig.text(
        x="x",
        y="y",
        text="label",
        source=source,
        text_align="center",
        text_baseline="middle",
        text_font_size="8pt",
    )
    fig.grid.visible = False
    fig.xaxis.axis_label = f"{b} predicts" if b else "B predicts"
    fig.yaxis.axis_label = f"{a} predicts" if a else "A predicts"
    return MatrixPlot(fig, source)


# -- loaded versions ------------------------------------------------------------------


@dataclass
class MemoryPlot:
    """What each loaded version holds: its worker processes' resident memory (MiB).

    Only a version in process isolation has memory of its own; one loaded in the
    kernel shares the kernel's memory (what grew while it loaded is not what it holds:
    the first one also carries Paddle's start-up), so it gets no bar and its axis
    label says so.
    """

    figure: Any
    source: Any

    def update(self, versions: Sequence[str], mib: Sequence[float | None], active: str | None) -> None:
        """``mib[i]``: what version ``i``'s worker processes hold, None for a version in the kernel."""
        labels = [v if m is not None else f"{v} (in kernel)" for v, m in zip(versions, mib, strict=True)]
        self.figure.x_range.factors = labels
        self.source.data = {
            "version": list(versions),
            "label": labels,
            "mib": [float(m) if m is not None else 0.0 for m in mib],
            "color": [PALETTE[2] if v == active else PALETTE[0] for v in versions],
        }
        in_kernel = bool(versions) and all(m is None for m in mib)
        self.figure.title.text = MEMORY_IN_KERNEL if in_kernel else MEMORY_TITLE


MEMORY_TITLE = "worker process RSS per loaded version (green: active)"
MEMORY_IN_KERNEL = "versions in the kernel share its memory: load with isolation=process"


def memory_plot() -> MemoryPlot:
    from bokeh.models import ColumnDataSource

    source = ColumnDataSource({"version": [], "label": [], "mib": [], "color": []})
    fig = _figure(
        title=MEMORY_TITLE,
        x_range=[],
        height=220,
        width=520,
        y_axis_label="MiB (worker RSS)",
        tools="hover,save",
        tooltips=[("version", "@version"), ("worker RSS MiB", "@mib")],
    )
    fig.title.text_font_size = "9pt"  # the longer title fits the figure's width
    fig.vbar(x="label", top="mib", width=0.6, source=source, fill_color="color", line_color=None)
    fig.y_range.start = 0
    return MemoryPlot(fig, source)


# -- live traffic ---------------------------------------------------------------------


#: The live series: key, title, axis label, the y-axis top while nothing was seen, its ceiling.
TRAFFIC_SERIES = (
    ("rps", "requests/s", "req/s", 1.0, None),
    ("error_rate", "error rate", "share of requests", 0.01, 1.0),
    ("p99_ms", "p99 latency", "ms", 1.0, None),
)


def axis_top(values: Sequence[float], floor: float, ceiling: float | None = None) -> float:
    """The top of a y-axis that starts at 0: headroom over the largest finite value."""
    finite = [v for v in values if v == v and v not in (float("inf"), float("-inf"))]
    top = max([floor, *(v * 1.15 for v in finite)])
    return top if ceiling is None else min(top, ceiling)


@dataclass
class TrafficPlot:
    """Requests/s, error rate and p99 latency per colour, streamed; one figure per series.

    Each figure is its own widget (Bokeh ties a data source to one document), so a
    panel can lay them out in a wrapping row that fits any notebook width. The
    y-axes start at 0 and grow with what the window holds.
    """

    figures: tuple[Any, Any, Any]
    sources: tuple[Any, Any, Any]

    @property
    def source(self) -> Any:
        """The requests/s series (every source has the same time column)."""
        return self.sources[0]

    def stream(self, sample: Mapping[str, Mapping[str, float | None]], at: float | None = None) -> None:
        """Append one point: ``sample[color] = {"rps", "error_rate", "p99_ms"}``."""
        t = (at if at is not None else time.time()) * 1000
        for (key, _, _, floor, ceiling), fig, source in zip(
            TRAFFIC_SERIES, self.figures, self.sources, strict=True
        ):
            point: dict[str, list[Any]] = {"t": [t]}
            for color in ("blue", "green"):
                value = sample.get(color, {}).get(key)
                point[color] = [float("nan") if value is None else float(value)]
            source.stream(point, rollover=WINDOW)
            seen = [*source.data["blue"], *source.data["green"]]
            fig.y_range.end = axis_top(seen, floor, ceiling)


def traffic_plot() -> TrafficPlot:
    from bokeh.models import ColumnDataSource, DatetimeTickFormatter, Range1d

    figures = []
    sources = []
    for _key, title, unit, floor, _ceiling in TRAFFIC_SERIES:
        source = ColumnDataSource({"t": [], "blue": [], "green": []})
        fig = _figure(
            title=title,
            x_axis_type="datetime",
            y_range=Range1d(start=0, end=floor),
            height=230,
            width=305,  # three side by side in a notebook next to JupyterLab's sidebar
            y_axis_label=unit,
            tools="pan,wheel_zoom,reset,save",
            toolbar_location="above",
        )
        fig.xaxis.ticker.desired_num_ticks = 3  # HH:MM:SS labels never run into each other
        fig.xaxis.formatter = DatetimeTickFormatter(
            milliseconds="%H:%M:%S", seconds="%H:%M:%S", minsec="%H:%M:%S", minutes="%H:%M", hours="%H:%M"
        )
        for color in ("blue", "green"):
            fig.line(
                x="t", y=color, source=source, line_color=COLOR_HEX[color], line_width=2, legend_label=color
            )
            fig.scatter(  # single samples between gaps (no traffic) are visible too
                x="t", y=color, source=source, color=COLOR_HEX[color], size=4, legend_label=color
            )
        legend = fig.legend[0]
        legend.orientation = "horizontal"
        legend.label_text_font_size = "8pt"
        legend.padding = legend.margin = 2
        fig.center = [r for r in fig.center if r is not legend]
        fig.add_layout(legend, "below")  # under the plot, never over the lines
        figures.append(fig)
        sources.append(source)
    return TrafficPlot((figures[0], figures[1], figures[2]), (sources[0], sources[1], sources[2]))


_WIDGET_CLASS: Any = None


def _widget_class() -> Any:
    """``BokehModel`` that re-serializes its figure each time it is displayed.

    jupyter_bokeh sends later changes as patches to views that exist; changes made
    before the first view (a panel filled before its cell's output is shown) would
    be lost, so the render bundle is taken afresh at display time.
    """
    global _WIDGET_CLASS
    if _WIDGET_CLASS is None:
        from jupyter_bokeh.widgets import BokehModel

        class Figure(BokehModel):  # type: ignore[misc]
            def resync(self) -> None:
                self.update_from_model(self._model)

            def _repr_mimebundle_(self, **kwargs: Any) -> Any:
                self.resync()
                return super()._repr_mimebundle_(**kwargs)

        _WIDGET_CLASS = Figure
    return _WIDGET_CLASS


def widget(fig: Any) -> Any:
    """An ipywidget showing a Bokeh figure or layout (synced both ways by jupyter_bokeh)."""
    bokehjs.ensure_loaded()
    return _widget_class()(fig)


def show(fig: Any) -> Any:
    """Wrap a figure so a notebook cell displays it as a widget."""
    return widget(fig)
