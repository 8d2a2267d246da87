"""Text detection post-processing: DB probability maps -> quadrilaterals (``DBPostProcess``).

Differentiable Binarization (Liao et al., 2020) predicts, per pixel, the probability
of text. Boxes come from the map thresholded at ``thresh`` (optionally dilated): each
contour's minimum-area rectangle, scored by the mean probability inside it (``fast``)
or inside the contour (``slow``), kept above ``box_thresh``, grown back by
``unclip_ratio`` (the network learns shrunk text kernels: the offset distance is
``area * unclip_ratio / perimeter``, applied with pyclipper), and mapped to the
source image. As in PaddleOCR's detector, each box is then ordered clockwise from the
top-left corner, clipped to the image, and dropped when a side is 3 pixels or less.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.codecs._deps import cv2, pyclipper
from workbench.errors import CodecError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from workbench._types import Array

MIN_SIZE = 3


@dataclass(frozen=True)
class TextBoxes:
    """The text found in one image: ``boxes`` (N, 4, 2) float32 corners in source pixels,
    clockwise from the top-left; ``scores`` (N,) float32."""

    boxes: Array
    scores: Array


class DBPostProcess:
    """``DBPostProcess`` with PaddleOCR's parameters and defaults."""

    def __init__(self, thresh: float = 0.3, box_thresh: float = 0.7, max_candidates: int = 1000,
                 unclip_ratio: float = 2.0, use_dilation: bool = False, score_mode: str = "fast",
                 box_type: str = "quad", **_: Any) -> None:
        if score_mode not in {"fast", "slow"}:
            raise CodecError(f"DBPostProcess: score_mode must be fast or slow, not {score_mode!r}")
        if box_type != "quad":
            raise CodecError(f"DBPostProcess: box_type {box_type!r} is not supported (quad is)")
        self.thresh = float(thresh)
        self.box_thresh = float(box_thresh)
        self.max_candidates = int(max_candidates)
        self.unclip_ratio = float(unclip_ratio)
        self.use_dilation = bool(use_dilation)
        self.score_mode = score_mode

    def __call__(self, output: Array, metas: Sequence[Mapping[str, Any]]) -> list[TextBoxes]:
        """``output``: (B, 1, H, W) probabilities; ``metas[i]["shape"]``: [src_h, src_w, ...]."""
        if output.ndim != 4:
            raise CodecError(f"DBPostProcess expects a (batch, 1, H, W) map, got shape {list(output.shape)}")
        results = []
        for index, meta in enumerate(metas):
            prob = output[index, 0]
            mask = (prob > self.thresh).astype(np.uint8)
            if self.use_dilation:
                mask = cv2().dilate(mask, np.ones((2, 2), dtype=np.uint8))
            src_h, src_w = int(meta["shape"][0]), int(meta["shape"][1])
            boxes, scores = self._boxes(prob, mask, src_w, src_h)
            results.append(_filter(boxes, scores, src_h, src_w))
        return results

    def _boxes(self, prob: Array, mask: Array, dest_w: int, dest_h: int) -> tuple[list[Array], list[float]]:
        height, width = mask.shape
        found = cv2().findContours(mask * 255, cv2().RETR_LIST, cv2().CHAIN_APPROX_SIMPLE)
        contours = found[0] if len(found) == 2 else found[1]
        boxes: list[Array] = []
        scores: list[float] = []
        for contour in contours[: self.max_candidates]:
            points, short_side = _mini_box(contour)
            if short_side < MIN_SIZE:
                continue
            if self.score_mode == "fast":
                score = _mean_inside(prob, points)
            else:
                score = _mean_inside(prob, contour.reshape(-1, 2).astype(np.float32))
            if score < self.box_thresh:
                continue
            grown = _unclip(points, self.unclip_ratio)
            if grown is None:
                continue
            box, short_side = _mini_box(grown)
            if short_side < MIN_SIZE + 2:
                continue
            box[:, 0] = np.clip(np.round(box[:, 0] / width * dest_w), 0, dest_w)
            box[:, 1] = np.clip(np.round(box[:, 1] / height * dest_h), 0, dest_h)
            boxes.append(box)
            scores.append(score)
        return boxes, scores


def _mini_box(contour: Array) -> tuple[Array, float]:
    """The contour's minimum-area rectangle as 4 corners (top-left, top-right,
    bottom-right, bottom-left by x then y) and its short side."""
    rect = cv2().minAreaRect(contour)
    points = sorted(cv2().boxPoints(rect).tolist(), key=lambda p: p[0])
    left = (points[0], points[1]) if points[1][1] > points[0][1] else (points[1], points[0])
    right = (points[2], points[3]) if points[3][1] > points[2][1] else (points[3], points[2])
    box = np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)
    return box, float(min(rect[1]))


def _mean_inside(prob: Array, polygon: Array) -> float:
    """Mean probability inside ``polygon`` (x, y points), over its bounding box's pixels."""
    h, w = prob.shape
    xmin = int(np.clip(np.floor(polygon[:, 0].min()), 0, w - 1))
    xmax = int(np.clip(np.ceil(polygon[:, 0].max()), 0, w - 1))
    ymin = int(np.clip(np.floor(polygon[:, 1].min()), 0, h - 1))
    ymax = int(np.clip(np.ceil(polygon[:, 1].max()), 0, h - 1))
    mask = np.zeros((ymax - ymin + 1, xmax - xmin + 1), dtype=np.uint8)
    shifted = polygon - np.array([xmin, ymin], dtype=polygon.dtype)
    cv2().fillPoly(mask, shifted.reshape(1, -1, 2).astype(np.int32), 1)
    return float(cv2().mean(prob[ymin : ymax + 1, xmin : xmax + 1], mask)[0])


def _unclip(box: Array, ratio: float) -> Array | None:
    """``box`` offset outwards by ``area * ratio / perimeter`` (round joins)."""
    contour = box.reshape(-1, 1, 2).astype(np.float32)
    area = abs(float(cv2().contourArea(contour)))
    perimeter = float(cv2().arcLength(contour, True))
    if perimeter == 0:
        return None
    clipper = pyclipper()
    offset = clipper.PyclipperOffset()
    offset.AddPath(box.tolist(), clipper.JT_ROUND, clipper.ET_CLOSEDPOLYGON)
    expanded = offset.Execute(area * ratio / perimeter)
    if len(expanded) != 1:
        return None
    return np.array(expanded[0], dtype=np.float32).reshape(-1, 1, 2)


def _filter(boxes: list[Array], scores: list[float], src_h: int, src_w: int) -> TextBoxes:
    kept: list[Array] = []
    kept_scores: list[float] = []
    for box, score in zip(boxes, scores, strict=True):
        ordered = _clockwise(box)
        ordered[:, 0] = np.clip(ordered[:, 0], 0, src_w - 1).astype(np.int32)
        ordered[:, 1] = np.clip(ordered[:, 1], 0, src_h - 1).astype(np.int32)
        width = int(np.linalg.norm(ordered[0] - ordered[1]))
        height = int(np.linalg.norm(ordered[0] - ordered[3]))
        if width <= MIN_SIZE or height <= MIN_SIZE:
            continue
        kept.append(ordered)
        kept_scores.append(score)
    if not kept:
        return TextBoxes(np.zeros((0, 4, 2), dtype=np.float32), np.zeros((0,), dtype=np.float32))
    return TextBoxes(np.stack(kept).astype(np.float32), np.array(kept_scores, dtype=np.float32))


def _clockwise(points: Array) -> Array:
    """Corners ordered top-left, top-right, bottom-right, bottom-left."""
    by_x = points[np.argsort(points[:, 0], kind="stable")]
    left = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    right = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)
