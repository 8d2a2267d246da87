"""Bokeh figures of OCR results: an image with the boxes one version found drawn over it.

The image travels as a small grayscale PNG in a data URL (rendered text on white
compresses to a few KB), never as an RGBA array, so a saved notebook stays small.
Figures of the same image share their ranges: panning one pans the others.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench_ext.plots import PALETTE, _figure

if TYPE_CHECKING:
    from collections.abc import Sequence

    from workbench.codecs.ocr import TextLine

MAX_WIDTH = 420  # figure pixels

Array = np.ndarray[Any, Any]


def png_url(image: Array) -> str:
    """A BGR (or gray) uint8 image as a grayscale PNG data URL."""
    from PIL import Image

    gray = image if image.ndim == 2 else image[:, :, ::-1].mean(axis=2)
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(gray, dtype=np.uint8)).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def boxes_data(lines: Sequence[TextLine]) -> dict[str, list[Any]]:
    """Patch coordinates (image pixels, y down) and hover texts of the lines' boxes."""
    return {
        "xs": [[float(x) for x in line.box[:, 0]] for line in lines],
        "ys": [[float(y) for y in line.box[:, 1]] for line in lines],
        "text": [line.text for line in lines],
        "score": [round(float(line.score), 3) for line in lines],
    }


@dataclass
class OcrFigure:
    """One version's view of one image: the image and its boxes."""

    figure: Any
    image: Any
    boxes: Any

    def update(self, image: Array, lines: Sequence[TextLine]) -> None:
        height, width = image.shape[:2]
        self.image.data = {"url": [png_url(image)], "w": [width], "h": [height]}
        self.boxes.data = boxes_data(lines)
        self.figure.x_range.start, self.figure.x_range.end = 0, width
        self.figure.y_range.start, self.figure.y_range.end = height, 0


def ocr_figure(version: str, index: int = 0, *, size: tuple[int, int] = (640, 320),
               ranges: tuple[Any, Any] | None = None) -> OcrFigure:
    """An empty figure for ``version`` (colour ``index`` of the palette); ``ranges`` shares axes."""
    from bokeh.models import ColumnDataSource, HoverTool, Range1d

    width, height = size
    # y down, as in the image
    x_range, y_range = ranges or (Range1d(start=0, end=width), Range1d(start=height, end=0))
    scale = min(1.0, MAX_WIDTH / max(1, width))
    fig = _figure(
        title=f"{version}", x_range=x_range, y_range=y_range,
        width=int(width * scale) + 40, height=int(height * scale) + 40,
        tools="pan,wheel_zoom,box_zoom,reset,save", match_aspect=True,
    )
    fig.axis.visible = False
    fig.grid.visible = False
    image = ColumnDataSource({"url": [], "w": [], "h": []})
    fig.image_url(url="url", x=0, y=0, w="w", h="h", anchor="top_left", source=image)
    boxes = ColumnDataSource({"xs": [], "ys": [], "text": [], "score": []})
    color = PALETTE[index % len(PALETTE)]
    patches = fig.patches("xs", "ys", source=boxes, fill_color=color, fill_alpha=0.15,
                          line_color=color, line_width=2)
    fig.add_tools(HoverTool(renderers=[patches], tooltips=[("text", "@text"), ("score", "@score")]))
    return OcrFigure(fig, image, boxes)
