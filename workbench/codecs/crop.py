"""Cutting detected text out of an image: reading order and a perspective crop per box.

Between a detector and a recogniser, each quadrilateral is warped to an upright
rectangle (its width the longer of its top and bottom edges, its height the longer of
its sides; bicubic, replicated border) and a crop taller than 1.5 times its width is
turned a quarter (vertical text). Boxes are read top to bottom, and left to right
within a line (tops less than 10 pixels apart), as PaddleOCR's pipeline does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from workbench.codecs._deps import cv2

if TYPE_CHECKING:
    from workbench._types import Array

SAME_LINE_PIXELS = 10


def reading_order(boxes: Array) -> list[int]:
    """Indices of ``boxes`` (N, 4, 2) top to bottom, left to right within a line."""
    order = sorted(range(len(boxes)), key=lambda i: (float(boxes[i][0][1]), float(boxes[i][0][0])))
    for i in range(len(order) - 1):
        for j in range(i, -1, -1):
            a, b = boxes[order[j]][0], boxes[order[j + 1]][0]
            if abs(float(b[1]) - float(a[1])) < SAME_LINE_PIXELS and float(b[0]) < float(a[0]):
                order[j], order[j + 1] = order[j + 1], order[j]
            else:
                break
    return order


def crop_text(image: Array, box: Array) -> Array:
    """The quadrilateral ``box`` (4, 2; clockwise from top-left) of ``image``, upright."""
    points = np.asarray(box, dtype=np.float32)
    width = int(max(np.linalg.norm(points[0] - points[1]), np.linalg.norm(points[2] - points[3])))
    height = int(max(np.linalg.norm(points[0] - points[3]), np.linalg.norm(points[1] - points[2])))
    width, height = max(width, 1), max(height, 1)
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2().getPerspectiveTransform(points, target)
    crop = cv2().warpPerspective(image, matrix, (width, height), borderMode=cv2().BORDER_REPLICATE,
                                 flags=cv2().INTER_CUBIC)
    if crop.shape[0] >= 1.5 * crop.shape[1]:
        crop = np.rot90(crop)
    result: Array = np.ascontiguousarray(crop)
    return result
