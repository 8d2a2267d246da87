"""Polygons for comparing text boxes: exact IoU of convex polygons, one-to-one matching.

IoU is exact for convex polygons: the intersection is one polygon clipped by the other's
edges (Sutherland–Hodgman), its area by the shoelace formula. DB's text boxes are rotated
rectangles, hence convex; a concave polygon would be clipped by its convex hull's edges.
Matching is greedy: pairs are taken by decreasing IoU, each box used at most once, pairs
below the threshold never (the ICDAR-style one-to-one match; Hungarian matching differs
only on ties among crowded boxes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import InputError

if TYPE_CHECKING:
    from workbench._types import Array

__all__ = ["IOU_THRESHOLD", "as_boxes", "match_boxes", "polygon_iou"]

IOU_THRESHOLD = 0.5


def _clip(subject: list[tuple[float, float]], a: Array, b: Array) -> list[tuple[float, float]]:
    """The part of ``subject`` left of the directed edge ``a -> b`` (one clipping step)."""
    out: list[tuple[float, float]] = []
    if not subject:
        return out

    def side(p: tuple[float, float]) -> float:
        return float((b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]))

    prev = subject[-1]
    for cur in subject:
        s_cur, s_prev = side(cur), side(prev)
        if s_cur >= 0:
            if s_prev < 0:
                out.append(_cross(prev, cur, s_prev, s_cur))
            out.append(cur)
        elif s_prev >= 0:
            out.append(_cross(prev, cur, s_prev, s_cur))
        prev = cur
    return out


def _cross(p: tuple[float, float], q: tuple[float, float], sp: float, sq: float
           ) -> tuple[float, float]:
    t = sp / (sp - sq)
    return p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])


def _area(points: Array | list[tuple[float, float]]) -> float:
    """Signed shoelace area (positive when counter-clockwise in x-right, y-up axes)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3:
        return 0.0
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def polygon_iou(a: Array, b: Array) -> float:
    """Exact intersection over union of two convex polygons ``(K, 2)`` (any orientation)."""
    pa, pb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    area_a, area_b = _area(pa), _area(pb)
    if area_a < 0:
        pa, area_a = pa[::-1], -area_a
    if area_b < 0:
        pb, area_b = pb[::-1], -area_b
    if area_a <= 0 or area_b <= 0:
        return 0.0
    inter: list[tuple[float, float]] = [(float(x), float(y)) for x, y in pa]
    for i in range(len(pb)):
        inter = _clip(inter, pb[i], pb[(i + 1) % len(pb)])
        if not inter:
            return 0.0
    overlap = abs(_area(inter))
    union = area_a + area_b - overlap
    return overlap / union if union > 0 else 0.0


def as_boxes(value: Any) -> Array:
    """``(N, K, 2)`` float polygons (an empty list or array is ``(0, 4, 2)``)."""
    array = np.asarray(value, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 4, 2))
    if array.ndim != 3 or array.shape[-1] != 2:
        raise InputError(f"boxes must be (N, K, 2) polygons, got shape {array.shape}")
    return array


def match_boxes(reference: Array, candidate: Array, iou: float = IOU_THRESHOLD) -> int:
    """How many one-to-one pairs reach ``iou``: greedy, best IoU first."""
    ref, cand = as_boxes(reference), as_boxes(candidate)
    if not len(ref) or not len(cand):
        return 0
    pairs = sorted(
        ((polygon_iou(r, c), i, j) for i, r in enumerate(ref) for j, c in enumerate(cand)),
        reverse=True,
    )
    used_r: set[int] = set()
    used_c: set[int] = set()
    for value, i, j in pairs:
        if value < iou:
            break
        if i not in used_r and j not in used_c:
            used_r.add(i)
            used_c.add(j)
    return len(used_r)
