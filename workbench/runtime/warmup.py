"""What a version runs to warm up: its sample at each batch size, within a size budget.

Paddle prepares kernels and buffers per input shape on a predictor's first runs, so a
version runs its sample at each batch size a request is likely to bring (1, 2, 4, ...
up to the batcher's maximum) before it is offered. For a small input that costs
nothing; for an image model it used to cost minutes: PP-OCRv5's detector samples one
736x736 page, and 1 + 2 + 4 + 8 pages twice each at ``--max-batch-size 8`` took 247 s
on a shared CPU.

So each warm-up batch holds at most :data:`BATCH_ELEMENTS` elements per input, except
the smallest batch, which always runs the sample as it is (the shape the first real
request most likely has: that request must not be the slow one). A larger batch over
the budget runs at a smaller size when the input's spatial dimensions are dynamic
(``-1`` in its signature) and it is the model's only input: the sample is cropped to
the same fraction of its height and width, kept a multiple of :data:`ALIGN` (a
detector's stride), so what depends on the batch size is prepared and the real
batch's first run only grows buffers. A batch that cannot be made small enough (fixed
dimensions, several inputs) is not run; the log says which sizes ran at which shapes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from workbench._types import Tensors
    from workbench.model.manifest import TensorSpec

#: Elements per input in one warm-up batch (4 MiB of float32), beyond the first batch.
BATCH_ELEMENTS = 1 << 20
#: Spatial sizes of a shrunk warm-up batch stay multiples of this (a detector's stride).
ALIGN = 32


def batch_sizes(rows: int) -> list[int]:
    """1, 2, 4, ... up to and including ``rows``."""
    sizes = {rows}
    size = 1
    while size < rows:
        sizes.add(size)
        size *= 2
    return sorted(sizes)


def plan(sample: Mapping[str, np.ndarray[Any, Any]], sizes: Sequence[int],
         specs: Sequence[TensorSpec], budget: int = BATCH_ELEMENTS) -> list[Tensors]:
    """The warm-up batches, smallest first: one per batch size in ``sizes`` that fits the
    budget (see the module docstring); ``specs`` are the version's input signatures."""
    ordered = sorted(set(sizes))
    if not ordered or not sample:
        return []
    dynamic = {spec.name: [i for i, d in enumerate(spec.shape) if i > 0 and d == -1] for spec in specs}
    batches: list[Tensors] = []
    for size in ordered:
        batch = {name: resize_batch(array, size) for name, array in sample.items()}
        if size == ordered[0] or all(a.size <= budget for a in batch.values()):
            batches.append(batch)
            continue
        if len(batch) != 1:
            continue
        ((name, array),) = batch.items()
        shrunk = _shrink(array, dynamic.get(name, []), budget)
        if shrunk is not None:
            batches.append({name: shrunk})
    return batches


def resize_batch(array: np.ndarray[Any, Any], size: int) -> np.ndarray[Any, Any]:
    """The first ``size`` rows of ``array``, repeating rows when it has fewer."""
    if array.shape[0] >= size:
        return array[:size]
    reps = -(-size // array.shape[0])
    return np.concatenate([array] * reps)[:size]


def describe(batches: Sequence[Mapping[str, np.ndarray[Any, Any]]]) -> str:
    """``1x3x736x736, 2x3x416x416`` (the first input's shape per batch), for the log."""
    return ", ".join("x".join(map(str, next(iter(b.values())).shape)) for b in batches if b)


def _shrink(array: np.ndarray[Any, Any], axes: Sequence[int], budget: int) -> np.ndarray[Any, Any] | None:
    """``array`` cropped along ``axes`` by one common factor to at most ``budget`` elements,
    the cropped sizes multiples of ALIGN; None when that is not possible."""
    if not axes:
        return None
    fixed = array.size // math.prod(array.shape[i] for i in axes)
    scale = (budget / array.size) ** (1.0 / len(axes))
    index: list[slice] = [slice(None)] * array.ndim
    kept = fixed
    for axis in axes:
        size = array.shape[axis]
        target = int(size * scale)
        target = max(ALIGN, target // ALIGN * ALIGN) if size >= ALIGN else max(1, target)
        target = min(size, target)
        index[axis] = slice(0, target)
        kept *= target
    if kept > budget or kept == fixed * math.prod(array.shape[i] for i in axes):
        return None
    return np.ascontiguousarray(array[tuple(index)])
