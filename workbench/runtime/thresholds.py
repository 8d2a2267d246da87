"""The metrics two versions are compared by, and thresholds on them.

Kept apart from :mod:`workbench.runtime.scoring` (which computes the scores, with numpy)
so that parsing and checking a rule's threshold (``cer<=0.05``) costs no heavy import:
the deploy verbs that only read state load this module, never numpy.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from workbench.errors import InputError
from workbench.model.task import Task

__all__ = [
    "DEFAULT_THRESHOLDS",
    "METRICS",
    "PRIMARY",
    "TASK_METRICS",
    "Z_95",
    "Metric",
    "Threshold",
    "wilson_interval",
]

Z_95 = 1.959964  # two-sided 95% normal quantile


def wilson_interval(successes: float, n: float, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default; ``(0, 1)`` for ``n = 0``)."""
    if n <= 0:
        return 0.0, 1.0
    p = min(max(successes / n, 0.0), 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Metric:
    """A named score: which way is better, and how its interval is found."""

    name: str
    higher_is_better: bool
    interval: Literal["wilson", "bootstrap"]
    description: str

    @property
    def op(self) -> Literal[">=", "<="]:
        return ">=" if self.higher_is_better else "<="


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("top1", True, "wilson", "share of rows with the same top-1 class"),
        Metric("box_f1", True, "bootstrap", "F1 of text boxes matched at IoU >= 0.5"),
        Metric("cer", False, "bootstrap", "character error rate against the reference text"),
        Metric("exact_match", True, "wilson", "share of texts read exactly alike"),
        Metric("within_tolerance", True, "wilson", "share of rows equal within rtol/atol"),
    )
}
#: The metric a task is judged by when no other is asked for.
PRIMARY: dict[Task, str] = {
    Task.CLASSIFICATION: "top1",
    Task.TEXT_DETECTION: "box_f1",
    Task.TEXT_RECOGNITION: "cer",
    Task.GENERIC: "within_tolerance",
    Task.OCR: "cer",
}
#: Which metrics apply to which task (primary first).
TASK_METRICS: dict[Task, tuple[str, ...]] = {
    Task.CLASSIFICATION: ("top1",),
    Task.TEXT_DETECTION: ("box_f1",),
    Task.TEXT_RECOGNITION: ("cer", "exact_match"),
    Task.GENERIC: ("within_tolerance",),
    Task.OCR: ("cer", "box_f1", "exact_match"),
}


@dataclass(frozen=True)
class Threshold:
    """A bound on one metric: ``top1>=0.85``, ``box_f1>=0.9``, ``cer<=0.05``."""

    metric: str
    value: float

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise InputError(f"unknown metric {self.metric!r}; known: {', '.join(METRICS)}")
        if not 0.0 <= self.value <= 1.0 and self.metric != "cer":
            raise InputError(f"{self.metric} threshold must be in 0..1, not {self.value}")
        if self.value < 0:
            raise InputError(f"{self.metric} threshold must be >= 0, not {self.value}")

    @property
    def op(self) -> Literal[">=", "<="]:
        return METRICS[self.metric].op

    def met_by(self, value: float) -> bool:
        return value >= self.value if self.op == ">=" else value <= self.value

    @classmethod
    def parse(cls, text: str) -> Threshold:
        """``"cer<=0.05"``, ``"box_f1 >= 0.9"``, ``"top1>=85%"`` → a threshold.

        The operator must be the metric's own direction (``cer`` is bounded above, the
        others below); a ValueError-like :class:`InputError` says so otherwise.
        """
        match = re.fullmatch(r"\s*([a-z0-9_]+)\s*(>=|<=)\s*([0-9.]+)\s*(%?)\s*", text)
        if match is None:
            raise InputError(f"not a threshold: {text!r} (try 'cer<=0.05' or 'box_f1>=0.9')")
        name, op, number, percent = match.groups()
        if name not in METRICS:
            raise InputError(f"unknown metric {name!r} in {text!r}; known: {', '.join(METRICS)}")
        if op != METRICS[name].op:
            raise InputError(f"{name} is bounded with {METRICS[name].op}, not {op}: {text!r}")
        try:
            value = float(number) / (100.0 if percent else 1.0)
        except ValueError:
            raise InputError(f"not a number in threshold {text!r}") from None
        return cls(name, value)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


#: The threshold per metric when none is given (top-1 is the deploy default, 85%).
DEFAULT_THRESHOLDS: dict[str, Threshold] = {
    "top1": Threshold("top1", 0.85),
    "box_f1": Threshold("box_f1", 0.9),
    "cer": Threshold("cer", 0.05),
    "exact_match": Threshold("exact_match", 0.8),
    "within_tolerance": Threshold("within_tolerance", 0.99),
}
