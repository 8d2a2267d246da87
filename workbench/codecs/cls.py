"""Classification post-processing: class scores -> the top ``k`` labels (``Topk``).

The export's ``PostProcess`` is ``{name: Topk, topk: k, label_list: [...]}`` (PaddleX)
or a ``label_list`` alone (PaddleOCR's text-line orientation: ``["0", "180"]``). Without
labels, a class is named by its index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import CodecError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from workbench._types import Array


@dataclass(frozen=True)
class Classified:
    """The top classes of one input, best first: ids, scores and labels."""

    class_ids: tuple[int, ...]
    scores: tuple[float, ...]
    labels: tuple[str, ...]


class Topk:
    """``Topk``: the ``topk`` best classes with their labels."""

    def __init__(self, topk: int = 1, label_list: Sequence[object] | None = None, **_: Any) -> None:
        if not isinstance(topk, int) or isinstance(topk, bool) or topk < 1:
            raise CodecError(f"Topk: topk must be a positive integer, not {topk!r}")
        self.topk = topk
        self.labels = None if label_list is None else [str(label) for label in label_list]

    def __call__(self, output: Array, metas: Sequence[Mapping[str, Any]] = ()) -> list[Classified]:
        """``output``: (B, classes) scores."""
        scores = output.reshape(output.shape[0], -1)
        if self.labels is not None and len(self.labels) != scores.shape[1]:
            raise CodecError(
                f"Topk: the model scores {scores.shape[1]} classes but label_list names {len(self.labels)}"
            )
        k = min(self.topk, scores.shape[1])
        order = np.argsort(-scores.astype(np.float64), axis=1, kind="stable")[:, :k]
        results = []
        for row, ids in zip(scores, order, strict=True):
            names = [self.labels[i] if self.labels is not None else str(i) for i in ids]
            results.append(Classified(tuple(int(i) for i in ids), tuple(float(row[i]) for i in ids),
                                      tuple(names)))
        return results
