"""The side-by-side panel: pick versions and data, run, and see where versions differ.

Shows the summary table (accuracy, latency, agreement with the first version), the
pairwise agreement table, an agreement matrix of two chosen versions, latency
distributions per version, and the input rows on which versions disagree.
"""

from __future__ import annotations

import html
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench_ext import ops, plots
from workbench_ext.panels import Panel, html_table

if TYPE_CHECKING:
    from collections.abc import Mapping
    from concurrent.futures import Future

    from workbench import Comparison
    from workbench_ext.state import Session

log = logging.getLogger(__name__)
SAMPLE = "(manifest sample)"
NONE = "(none)"
MAX_DISAGREEMENTS = 25


class ComparePanel(Panel):
    """Run one batch of inputs through several versions of a model and compare."""

    def __init__(self, session: Session, model: str, *, namespace: Mapping[str, Any] | None = None) -> None:
        import ipywidgets as w

        super().__init__()
        session.repo.versions(model)
        self.session = session
        self.model = model
        self.namespace: Mapping[str, Any] = namespace if namespace is not None else {}
        self.result: Comparison | None = None
        self.versions = w.SelectMultiple(description="versions", rows=4, layout=w.Layout(width="240px"))
        self.data = w.Dropdown(description="data", layout=w.Layout(width="260px"))
        self.labels = w.Dropdown(description="labels", layout=w.Layout(width="260px"))
        self.batch_size = w.BoundedIntText(
            value=32, min=1, max=4096, description="batch", layout=w.Layout(width="160px")
        )
        self.pair_a = w.Dropdown(description="A", layout=w.Layout(width="160px"))
        self.pair_b = w.Dropdown(description="B", layout=w.Layout(width="160px"))
        self.pair_a.observe(lambda _c: self._draw_matrix(), names="value")
        self.pair_b.observe(lambda _c: self._draw_matrix(), names="value")
        self.summary = w.HTML("<i>pick versions and data, then Run</i>")
        self.agreement = w.HTML()
        self.disagreements = w.HTML()
        self.latency = plots.latency_plot()
        self.matrix = plots.matrix_plot()
        inputs = w.HBox(
            [
                self.versions,
                w.VBox([self.data, self.labels, self.batch_size]),
                w.VBox(
                    [
                        self._button("run", "Run", lambda: self.run(), style="primary", icon="play"),
                        self._button("refresh", "Refresh", lambda: self.refresh(), icon="refresh"),
                    ]
                ),
            ],
            layout=w.Layout(flex_flow="row wrap"),
        )
        self.widget = w.VBox(
            [
                w.HTML(f"<h3 style='margin:2px 0'>{html.escape(model)}: side by side</h3>"),
                inputs,
                w.HBox([self.progress, self.status]),
                self.summary,
                self.agreement,
                w.HBox(
                    [
                        w.VBox([w.HBox([self.pair_a, self.pair_b]), self.figure(self.matrix.figure)]),
                        self.figure(self.latency.figure),
                    ],
                    layout=w.Layout(flex_flow="row wrap"),
                ),
                w.HTML("<b>Inputs where versions disagree</b>"),
                self.disagreements,
            ],
            layout=w.Layout(border="1px solid #ddd", padding="8px"),
        )
        self.widget.add_class("workbench-compare-panel")
        self.refresh()

    def __repr__(self) -> str:
        return f"<ComparePanel {self.model}>"

    # -- choices ---------------------------------------------------------------------

    def _specs(self) -> Any:
        version = self.session.repo.resolve(self.model, None)
        return self.session.repo.manifest(self.model, version).inputs

    def candidates(self) -> tuple[list[str], list[str]]:
        """Names in the namespace that fit the model's input, and that look like labels."""
        specs = self._specs()
        data: list[str] = []
        labels: list[str] = []
        for name, value in list(self.namespace.items()):
            if name.startswith("_"):
                continue
            if isinstance(value, dict) and value and {s.name for s in specs} == set(value):
                data.append(name)
                continue
            if not isinstance(value, np.ndarray):
                continue
            if len(specs) == 1 and _fits(value.shape, specs[0].shape):
                data.append(name)
            elif value.ndim == 1 and np.issubdtype(value.dtype, np.integer):
                labels.append(name)
        return sorted(data), sorted(labels)

    def refresh(self) -> None:
        versions = [str(v) for v in self.session.repo.versions(self.model)]
        selected = [v for v in self.versions.value if v in versions]
        self.versions.options = versions
        if not selected:
            hub = self.session.hubs.get(self.model)
            loaded = [str(lv.version) for lv in hub.loaded] if hub is not None else []
            selected = loaded if len(loaded) >= 2 else versions[:2]
        self.versions.value = tuple(selected)
        data, labels = self.candidates()
        for dropdown, options in ((self.data, [SAMPLE, *data]), (self.labels, [NONE, *labels])):
            current = dropdown.value
            dropdown.options = options
            fallback = options[1] if dropdown is self.data and len(options) > 1 else options[0]
            dropdown.value = current if current in options else fallback
        if self.labels.value == NONE and labels:
            # the labels that fit the chosen data, when that is unambiguous
            data_value = self.namespace.get(self.data.value) if self.data.value != SAMPLE else None
            rows = len(data_value) if isinstance(data_value, np.ndarray) else None
            fitting = [n for n in labels if rows is None or len(self.namespace[n]) == rows]
            if len(fitting) == 1:
                self.labels.value = fitting[0]

    # -- running ---------------------------------------------------------------------

    def _value(self, name: str | None, sentinel: str) -> Any:
        if name is None or name == sentinel:
            return None
        return self.namespace[name]

    def run(self, versions: list[str] | None = None, *, data: Any = None, labels: Any = None) -> Future[Any]:
        """Compare (on the panel's thread); ``data``/``labels`` override the dropdowns."""
        chosen = list(versions or self.versions.value)
        if not chosen:
            raise ValueError("pick at least one version")
        inputs = data if data is not None else self._value(self.data.value, SAMPLE)
        truth = labels if labels is not None else self._value(self.labels.value, NONE)
        batch = int(self.batch_size.value)

        def progress(done: int, total: int) -> None:
            self.progress.max = max(1, total)
            self.progress.value = done

        return self.submit(
            f"comparing {', '.join(chosen)}",
            lambda: ops.run_compare(
                self.session,
                self.model,
                chosen,
                inputs,
                labels=truth,
                batch_size=batch,
                progress=False,
                on_progress=progress,
            ),
            done=self.show,
        )

    def show(self, result: Comparison) -> None:
        """Draw a comparison (called after a run; also usable with a result from %paddle compare)."""
        self.result = result
        # the form says what the result was made with (a result from %paddle compare too)
        self.batch_size.max = max(self.batch_size.max, result.batch_size)
        self.batch_size.value = result.batch_size
        if set(result.versions) <= set(self.versions.options):
            self.versions.value = tuple(result.versions)
        self.summary.value = (
            f"<p>{result.rows} rows, batch {result.batch_size}, "
            f"output <code>{html.escape(result.output)}</code></p>" + html_table(result.table())
        )
        self.agreement.value = "<b>Pairwise agreement</b>" + html_table(
            result.agreement.set_index(["a", "b"])
        )
        self.latency.update(result.latencies)
        names = list(result.versions)
        self.pair_a.options = names
        self.pair_b.options = names
        self.pair_a.value = names[0]
        self.pair_b.value = names[1] if len(names) > 1 else names[0]
        self._draw_matrix()
        self.disagreements.value = disagreements_html(result, self._value(self.labels.value, NONE))

    def _draw_matrix(self) -> None:
        if self.result is not None and self.pair_a.value and self.pair_b.value:
            self.matrix.update(self.result, self.pair_a.value, self.pair_b.value)


def _fits(shape: tuple[int, ...], spec: tuple[int, ...]) -> bool:
    if len(shape) != len(spec):
        return False
    return all(want in (-1, got) for got, want in zip(shape[1:], spec[1:], strict=True))


def disagreements_html(result: Comparison, labels: Any = None) -> str:
    rows = result.disagreements()
    if len(rows) == 0:
        return "<i>all versions agree on every row</i>"
    import pandas as pd

    predicted = result.predictions()
    shown = rows[:MAX_DISAGREEMENTS]
    frame = pd.DataFrame({"row": shown})
    if labels is not None and len(labels) == result.rows:
        frame["label"] = np.asarray(labels)[shown]
    for version, classes in predicted.items():
        frame[version] = classes[shown]
    note = f"<p>{len(rows)} of {result.rows} rows differ"
    note += f"; the first {MAX_DISAGREEMENTS}:</p>" if len(rows) > MAX_DISAGREEMENTS else ":</p>"
    return note + html_table(frame.set_index("row"), max_rows=MAX_DISAGREEMENTS)
