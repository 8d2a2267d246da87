"""The OCR side-by-side panel: pipeline versions reading the same images.

For the chosen image: one figure per version with the boxes it found over the image
(colours per version, axes linked), and the text each version read with what differs
from the reference marked (ground truth when given, else the first version). Above,
the scores over every image: CER with its interval, exact matches, latency per image.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from workbench_ext import ocr, ocr_plots
from workbench_ext.panels import Panel, html_table

if TYPE_CHECKING:
    from collections.abc import Sequence
    from concurrent.futures import Future

    from workbench_ext.ocr import OcrResult
    from workbench_ext.ocr_plots import OcrFigure
    from workbench_ext.state import Session


class OcrPanel(Panel):
    """Read ``images`` with several pipeline versions of ``model`` and show them side by side."""

    def __init__(self, session: Session, model: str, versions: Sequence[str], images: Any,
                 *, truth: Sequence[str] | None = None) -> None:
        import ipywidgets as w
        from bokeh.layouts import row

        super().__init__()
        self.session = session
        self.model = model
        self.versions = [str(session.repo.resolve(model, v)) for v in versions]
        for version in self.versions:
            ocr.stages(session, model, version)  # a model, not a pipeline: refused now
        self.images = ocr.as_images(images)
        self.truth = list(truth) if truth is not None else None
        self.result: OcrResult | None = None
        first = self.images[0].shape
        ranges = None
        self.views: dict[str, OcrFigure] = {}
        for index, version in enumerate(self.versions):
            view = ocr_plots.ocr_figure(f"{model}:{version}", index, size=(first[1], first[0]),
                                        ranges=ranges)
            ranges = (view.figure.x_range, view.figure.y_range)
            self.views[version] = view
        self.image = w.Dropdown(description="image", options=[(str(i), i) for i in range(len(self.images))],
                                value=0, layout=w.Layout(width="160px"))
        self.image.observe(lambda _c: self.draw(), names="value")
        self.summary = w.HTML("<i>Run reads every image with every version</i>")
        self.texts = w.HTML()
        self.widget = w.VBox(
            [
                w.HTML(f"<h3 style='margin:2px 0'>{html.escape(model)}: "
                       f"{' vs '.join(map(html.escape, self.versions))}</h3>"),
                w.HBox([self.image, self._button("run", "Run", lambda: self.run(), style="primary",
                                                 icon="play")]),
                w.HBox([self.progress, self.status]),
                self.summary,
                self.figure(row(*[v.figure for v in self.views.values()])),  # one document: linked axes
                self.texts,
            ],
            layout=w.Layout(border="1px solid #ddd", padding="8px"),
        )
        self.widget.add_class("workbench-ocr-panel")

    def __repr__(self) -> str:
        return f"<OcrPanel {self.model} {' '.join(self.versions)}>"

    def run(self) -> Future[Any]:
        """Read every image with every version (on the panel's thread), then draw."""

        def progress(done: int, total: int) -> None:
            self.progress.max = max(1, total)
            self.progress.value = done

        return self.submit(
            f"reading {len(self.images)} images with {', '.join(self.versions)}",
            lambda: ocr.run_ocr(self.session, self.model, self.versions, self.images, truth=self.truth,
                                progress=False, on_progress=progress),
            done=self.show,
        )

    def show(self, result: OcrResult) -> None:
        """Draw a result (after a run, or one from ``%paddle ocr``)."""
        self.result = result
        table = result.table()
        self.summary.value = (
            f"<p>{len(result.images)} images; CER and exact match against "
            f"<b>{html.escape(result.reference)}</b>, 95% interval; latency per image</p>"
            + html_table(table)
        )
        self.draw()

    def draw(self) -> None:
        """The chosen image: each version's boxes and its text, differences marked."""
        result = self.result
        if result is None:
            return
        index = int(self.image.value)
        reference = result.reference_texts()[index]
        rows = []
        if result.truth is not None:
            rows.append(("ground truth", html.escape(reference).replace("\n", "<br>")))
        for version in result.versions:
            if version in self.views:
                self.views[version].update(result.images[index], result.lines[version][index])
            text = result.texts(version)[index]
            rows.append((version, ocr.diff_html(reference, text)))
        cells = "".join(
            f"<tr><th style='text-align:left;padding:2px 8px'>{html.escape(name)}</th>"
            f"<td style='font-family:monospace;padding:2px 8px'>{body}</td></tr>"
            for name, body in rows
        )
        self.texts.value = (
            f"<b>Image {index}</b>: what each version read (<mark style='background:#ffe082'>read"
            f"</mark> where it differs from {html.escape(result.reference)}, "
            f"<del style='color:#c62828'>missed</del>)<table>{cells}</table>"
        )
