"""How far a candidate's results are from a reference's: one score per task, with its evidence.

The reference is the stable version's results (agreement) or ground truth (accuracy).
Inputs are plain values, as a task's postprocessor gives them, one entry per image/row:

==================  =========================================  =====================================
task                results                                    metrics (primary first)
==================  =========================================  =====================================
classification      label ids ``(rows,)`` or class scores      ``top1`` — share of equal arg-max
                    ``(rows, ..., classes)`` (arg-max taken
                    over the last axis)
text-detection      per image, boxes ``(N, K, 2)`` (4-point    ``box_f1`` — F1 of one-to-one box
                    polygons, ``K=4``)                         matches at IoU >= 0.5
text-recognition    per image, the text read                   ``cer`` — character error rate;
                                                               ``exact_match`` — share read alike
ocr (pipelines)     per image, a :class:`Page`: its lines and   ``cer`` of each page's text (lines
                    their boxes (or only the text: ground      joined by newlines); ``box_f1``;
                    truth)                                     ``exact_match``
generic             tensors, rows first                        ``within_tolerance`` — share of rows
                                                               with ``|c - r| <= atol + rtol |r|``
==================  =========================================  =====================================

How each is measured:

- **top1, exact_match, within_tolerance** are proportions over rows: their interval is the
  95% Wilson score interval (:func:`wilson_interval`).
- **box_f1** pools over images: ``2 TP / (2 TP + FP + FN)``, a true positive being a
  candidate box matched to a reference box. Matching is *greedy*: pairs are taken by
  decreasing IoU, each box used at most once, pairs below the IoU threshold never (the
  ICDAR-style one-to-one match; Hungarian matching differs only on ties of crowded
  boxes). IoU is exact for convex polygons (Sutherland–Hodgman clipping; DB's boxes are
  rotated rectangles, hence convex): :mod:`workbench.runtime.polygons`. No boxes on
  either side is perfect agreement.
- **cer** pools over images too: the Levenshtein distance over characters summed over
  images, divided by the reference characters summed (at least 1).
- Both pooled ratios get a 95% percentile **bootstrap** interval: images resampled with
  replacement :data:`BOOTSTRAP_RESAMPLES` times from a fixed seed, so the same inputs give
  the same interval.

A :class:`ScoreResult` judges its value against a :class:`Threshold` (``top1>=0.85``,
``box_f1>=0.9``, ``cer<=0.05``) the way the deploy checks always have: fewer than
``min_n`` rows is *inconclusive*; an interval wholly on the wrong side *fails*; an interval
wholly on the right side *passes*; an interval that straddles the threshold is
*inconclusive* (more rows would tell). :attr:`ScoreResult.bound` is the interval's
cautious end, for rules that judge on it alone (the canary agreement rule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from workbench.errors import InputError
from workbench.model.task import Task
from workbench.runtime.polygons import IOU_THRESHOLD, as_boxes, match_boxes, polygon_iou
from workbench.runtime.thresholds import (
    DEFAULT_THRESHOLDS,
    METRICS,
    PRIMARY,
    TASK_METRICS,
    Z_95,
    Metric,
    Threshold,
    wilson_interval,
)

if TYPE_CHECKING:
    from workbench._types import Array
    from workbench.model.manifest import Manifest

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "DEFAULT_THRESHOLDS",
    "METRICS",
    "PRIMARY",
    "Z_95",
    "Metric",
    "Page",
    "ScoreResult",
    "Threshold",
    "agreement_threshold",
    "bootstrap_ratio",
    "box_f1",
    "character_error_rate",
    "declared_task",
    "differing",
    "exact_match",
    "levenshtein",
    "ocr_scores",
    "polygon_iou",
    "row_scores",
    "score",
    "score_all",
    "top1",
    "wilson_interval",
    "within_tolerance",
]

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20261206
RTOL, ATOL = 1e-3, 1e-5  # generic tensors: the default tolerance
Verdict = Literal["pass", "fail", "inconclusive", "no threshold"]


@dataclass(frozen=True)
class ScoreResult:
    """One metric of a candidate against a reference, with its 95% interval and verdict."""

    task: Task
    metric: str
    value: float | None  # None when nothing could be compared
    interval: tuple[float, float] | None
    n: int  # rows/images compared
    threshold: Threshold | None = None
    min_n: int = 1  # fewer rows than this: inconclusive
    details: Mapping[str, float] = field(default_factory=dict, compare=False)
    # each row's (image's) own score, in [0, 1], for the primary metrics: what a sequential
    # test reads (see :func:`row_scores`); empty when not measured
    rows: tuple[float, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}")
        if self.threshold is not None and self.threshold.metric != self.metric:
            raise ValueError(f"a {self.threshold.metric} threshold cannot judge {self.metric}")
        if self.n < 0 or self.min_n < 0:
            raise ValueError("n and min_n must be >= 0")

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric].higher_is_better

    @property
    def bound(self) -> float | None:
        """The interval's cautious end: the lower for higher-is-better metrics, else the upper."""
        if self.interval is None:
            return self.value
        return self.interval[0] if self.higher_is_better else self.interval[1]

    def judged(self, threshold: Threshold | None, min_n: int | None = None) -> ScoreResult:
        """This score judged against another threshold (and minimum of rows)."""
        return replace(self, threshold=threshold, min_n=self.min_n if min_n is None else min_n)

    @property
    def verdict(self) -> Verdict:
        if self.threshold is None:
            return "no threshold"
        if self.value is None or self.n < max(self.min_n, 1):
            return "inconclusive"
        low, high = self.interval if self.interval is not None else (self.value, self.value)
        good, bad = (low, high) if self.higher_is_better else (high, low)
        if not self.threshold.met_by(bad):
            return "fail"  # even the interval's most favourable end misses the threshold
        if self.threshold.met_by(good):
            return "pass"
        return "inconclusive"

    @property
    def reason(self) -> str:
        """Why the verdict is what it is, in a few words."""
        verdict = self.verdict
        if self.threshold is None:
            return "no threshold set"
        if self.value is None:
            return "nothing compared"
        if verdict == "inconclusive" and self.n < self.min_n:
            return f"{self.n} compared, at least {self.min_n} needed"
        if verdict == "inconclusive":
            return f"the 95% interval includes the threshold {self.threshold}"
        return f"{self.threshold}" if verdict == "pass" else f"misses {self.threshold}"

    def __str__(self) -> str:
        if self.value is None:
            return f"{self.metric}: n/a ({self.task.value}, n={self.n})"
        text = f"{self.metric} {_fmt(self.metric, self.value)}"
        if self.interval is not None:
            low, high = self.interval
            text += f" (95% CI {_fmt(self.metric, low)}..{_fmt(self.metric, high)})"
        text += f" on {self.n}"
        if self.threshold is not None:
            text += f": {self.verdict}, {self.reason}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task.value,
            "metric": self.metric,
            "value": self.value,
            "interval": None if self.interval is None else list(self.interval),
            "n": self.n,
            "threshold": None if self.threshold is None else str(self.threshold),
            "min_n": self.min_n,
            "verdict": self.verdict,
            "details": dict(self.details),
        }


def _fmt(metric: str, value: float) -> str:
    return f"{value:.2%}" if metric in ("top1", "exact_match", "within_tolerance") else f"{value:.4f}"


# ----------------------------------------------------------------------------- intervals


def bootstrap_ratio(
    numerators: Array, denominators: Array, *, resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED, floor: float = 0.0,
) -> tuple[float, float]:
    """95% percentile bootstrap interval of ``sum(num) / max(sum(den), floor)`` over items.

    Items (images) are drawn with replacement; a fixed ``seed`` makes it reproducible.
    A resample whose denominator is 0 counts as ratio 1 when ``floor`` is 0 (used by F1:
    nothing to find and nothing found is perfect agreement).
    """
    num = np.asarray(numerators, dtype=np.float64)
    den = np.asarray(denominators, dtype=np.float64)
    n = len(num)
    if n == 0:
        return 0.0, 1.0
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(resamples, n))
    sums_num = num[picks].sum(axis=1)
    sums_den = np.maximum(den[picks].sum(axis=1), floor)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = np.where(sums_den > 0, sums_num / np.where(sums_den > 0, sums_den, 1.0), 1.0)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


# ----------------------------------------------------------------------------- classification


def _labels(values: Array | Sequence[int]) -> Array:
    """Label ids from label ids (integers) or class scores (arg-max over the last axis)."""
    array = np.asarray(values)
    if array.ndim >= 2:
        if array.shape[-1] < 2:
            raise InputError(f"class scores need two classes or more, got shape {array.shape}")
        labels: Array = np.argmax(array, axis=-1)
        return labels
    return array


def top1(reference: Array | Sequence[int], candidate: Array | Sequence[int]) -> ScoreResult:
    """Share of positions whose top-1 class agrees (label ids, or class scores over the last axis).

    ``n`` is the number of rows (the first axis), as the deploy checks count them; for
    ``(rows, positions, classes)`` scores the value is the share of all positions.
    """
    a, b = _labels(reference), _labels(candidate)
    if a.shape != b.shape:
        raise InputError(f"results differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        return ScoreResult(Task.CLASSIFICATION, "top1", None, None, 0)
    value = float(np.mean(a == b))
    rows = int(a.shape[0]) if a.ndim else 1
    same = np.asarray(a == b).reshape(rows, -1).all(axis=1)
    return ScoreResult(
        Task.CLASSIFICATION, "top1", value, wilson_interval(round(value * rows), rows), rows,
        details={"rows_agreeing": float(same.sum())},
        rows=tuple(float(v) for v in np.asarray(same).ravel().tolist()),
    )


# ----------------------------------------------------------------------------- detection


def box_f1(
    reference: Sequence[Array], candidate: Sequence[Array], *, iou: float = IOU_THRESHOLD
) -> ScoreResult:
    """F1 of the candidate's boxes against the reference's, pooled over images."""
    if len(reference) != len(candidate):
        raise InputError(f"{len(reference)} reference images but {len(candidate)} candidate ones")
    tp, fp, fn = [], [], []
    for ref, cand in zip(reference, candidate, strict=True):
        r, c = len(as_boxes(ref)), len(as_boxes(cand))
        matched = match_boxes(ref, cand, iou)
        tp.append(matched)
        fp.append(c - matched)
        fn.append(r - matched)
    n = len(tp)
    if n == 0:
        return ScoreResult(Task.TEXT_DETECTION, "box_f1", None, None, 0)
    t, p, f = np.array(tp, float), np.array(fp, float), np.array(fn, float)
    num, den = 2 * t, 2 * t + p + f
    value = float(num.sum() / den.sum()) if den.sum() > 0 else 1.0
    found, wanted = t.sum() + p.sum(), t.sum() + f.sum()
    per_image = tuple(float(a / b) if b > 0 else 1.0 for a, b in zip(num, den, strict=True))
    return ScoreResult(
        Task.TEXT_DETECTION, "box_f1", value, bootstrap_ratio(num, den), n, rows=per_image,
        details={
            "precision": float(t.sum() / found) if found else 1.0,
            "recall": float(t.sum() / wanted) if wanted else 1.0,
            "matched": float(t.sum()),
            "reference_boxes": float(wanted),
            "candidate_boxes": float(found),
            "iou": iou,
        },
    )


# ----------------------------------------------------------------------------- recognition


def levenshtein(a: str, b: str) -> int:
    """Edit distance over characters (insertions, deletions, substitutions cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _texts(values: Sequence[Any]) -> list[str]:
    texts = []
    for value in values:
        if isinstance(value, tuple | list) and value and isinstance(value[0], str):
            value = value[0]  # (text, score) as the recognition postprocessor gives it
        if isinstance(value, np.str_ | bytes):
            value = value.decode() if isinstance(value, bytes) else str(value)
        if not isinstance(value, str):
            raise InputError(f"recognition results are texts or (text, score), not {value!r}")
        texts.append(value)
    return texts


def character_error_rate(reference: Sequence[Any], candidate: Sequence[Any]) -> ScoreResult:
    """Edits over reference characters, pooled over images (texts or ``(text, score)``)."""
    ref, cand = _texts(reference), _texts(candidate)
    if len(ref) != len(cand):
        raise InputError(f"{len(ref)} reference texts but {len(cand)} candidate ones")
    if not ref:
        return ScoreResult(Task.TEXT_RECOGNITION, "cer", None, None, 0)
    edits = np.array([levenshtein(r, c) for r, c in zip(ref, cand, strict=True)], float)
    chars = np.array([len(r) for r in ref], float)
    value = float(edits.sum() / max(chars.sum(), 1.0))
    per_text = tuple(float(min(e / max(c, 1.0), 1.0)) for e, c in zip(edits, chars, strict=True))
    return ScoreResult(
        Task.TEXT_RECOGNITION, "cer", value, bootstrap_ratio(edits, chars, floor=1.0), len(ref),
        rows=per_text,
        details={"edits": float(edits.sum()), "reference_chars": float(chars.sum())},
    )


def exact_match(reference: Sequence[Any], candidate: Sequence[Any]) -> ScoreResult:
    """Share of images whose text is read exactly alike."""
    ref, cand = _texts(reference), _texts(candidate)
    if len(ref) != len(cand):
        raise InputError(f"{len(ref)} reference texts but {len(cand)} candidate ones")
    if not ref:
        return ScoreResult(Task.TEXT_RECOGNITION, "exact_match", None, None, 0)
    same = sum(r == c for r, c in zip(ref, cand, strict=True))
    return ScoreResult(Task.TEXT_RECOGNITION, "exact_match", same / len(ref),
                       wilson_interval(same, len(ref)), len(ref))


# ----------------------------------------------------------------------------- OCR pipelines


@dataclass(frozen=True)
class Page:
    """What an OCR pipeline read on one image: its lines in reading order and their boxes
    (``(N, 4, 2)``; None for ground truth, which is text only)."""

    lines: tuple[str, ...]
    boxes: Any = None

    @property
    def text(self) -> str:
        """The page's lines, each stripped, joined by newlines (what CER is measured on)."""
        return "\n".join(line.strip() for line in self.lines)


def _pages(values: Sequence[Any]) -> list[Page]:
    pages = []
    for value in values:
        if isinstance(value, str):
            value = Page(tuple(value.split("\n")))
        elif isinstance(value, tuple | list) and all(isinstance(v, str) for v in value):
            value = Page(tuple(value))
        if not isinstance(value, Page):
            raise InputError(f"OCR results are pages (lines and boxes) or texts, not {value!r}")
        pages.append(value)
    return pages


def ocr_scores(reference: Sequence[Any], candidate: Sequence[Any]) -> tuple[ScoreResult, ...]:
    """CER of each page's text (pooled over pages), box F1 (when both sides have boxes:
    not against text-only ground truth) and exact match, all tagged as OCR scores."""
    ref, cand = _pages(reference), _pages(candidate)
    if len(ref) != len(cand):
        raise InputError(f"{len(ref)} reference images but {len(cand)} candidate ones")
    texts = ([p.text for p in ref], [p.text for p in cand])
    boxed = bool(ref) and all(p.boxes is not None for p in (*ref, *cand))
    boxes = (box_f1([p.boxes for p in ref], [p.boxes for p in cand]) if boxed
             else ScoreResult(Task.TEXT_DETECTION, "box_f1", None, None, 0))
    found = (character_error_rate(*texts), boxes, exact_match(*texts))
    return tuple(replace(result, task=Task.OCR) for result in found)


# ----------------------------------------------------------------------------- generic tensors


def within_tolerance(
    reference: Array, candidate: Array, *, rtol: float = RTOL, atol: float = ATOL
) -> ScoreResult:
    """Share of rows whose every value satisfies ``|c - r| <= atol + rtol * |r|``.

    ``details`` carries the largest absolute and relative differences (the relative one
    over ``max(|r|, atol)``) and the mean absolute difference.
    """
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"outputs differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        return ScoreResult(Task.GENERIC, "within_tolerance", None, None, 0)
    rows = a.shape[0] if a.ndim else 1
    fa, fb = a.reshape(rows, -1), b.reshape(rows, -1)
    diff = np.abs(fa - fb)
    ok = (diff <= atol + rtol * np.abs(fa)).all(axis=1)  # NaN (no answer) never agrees
    agree = int(ok.sum())
    answered = ~np.isnan(diff).any(axis=1)
    seen = diff[answered] if answered.any() else np.zeros(1)
    return ScoreResult(
        Task.GENERIC, "within_tolerance", agree / rows, wilson_interval(agree, rows), rows,
        rows=tuple(float(v) for v in np.asarray(ok).ravel().tolist()),
        details={
            "max_abs_diff": float(seen.max()),
            "mean_abs_diff": float(seen.mean()),
            "max_rel_diff": float((seen / np.maximum(np.abs(fa[answered] if answered.any()
                                                             else np.ones(1)), atol)).max()),
            "rtol": rtol,
            "atol": atol,
        },
    )


# ----------------------------------------------------------------------------- dispatch


def declared_task(manifest: Manifest) -> Task | None:
    """The task a manifest declares, or None when it says only ``generic``.

    ``generic`` is the manifest's default (a version published without a PaddleX
    ``inference.yml``), so it says nothing: the output's shape then decides
    (:func:`guessed_task`), as before manifests had a task — class scores are compared
    by top-1, anything else by tolerance.
    """
    return None if manifest.task is Task.GENERIC else manifest.task


def guessed_task(output: Array) -> Task:
    """Classification for class scores (two columns or more on the last axis), else generic."""
    array = np.asarray(output)
    return Task.CLASSIFICATION if array.ndim >= 2 and array.shape[-1] >= 2 else Task.GENERIC


def agreement_threshold(task: Task, min_agreement: float) -> Threshold | None:
    """The deploy check's one number, ``min_agreement`` (e.g. 0.85), as the task's bound.

    ``top1``, ``box_f1`` and ``within_tolerance`` must reach it; for text recognition it
    is a character accuracy, so ``cer <= 1 - min_agreement``. None when it is 0 (no check).
    """
    if min_agreement <= 0:
        return None
    metric = PRIMARY[task]
    if metric == "cer":
        return Threshold("cer", round(1.0 - min_agreement, 10))
    return Threshold(metric, min_agreement)


def score_all(
    task: Task | str,
    reference: Any,
    candidate: Any,
    *,
    thresholds: Sequence[Threshold] | Mapping[str, Threshold] = (),
    min_n: int = 1,
    rtol: float = RTOL,
    atol: float = ATOL,
) -> tuple[ScoreResult, ...]:
    """Every metric of ``task`` (primary first), each judged by its threshold if one is given."""
    task = Task.parse(task) if isinstance(task, str) else task
    given = dict(thresholds) if isinstance(thresholds, Mapping) else {t.metric: t for t in thresholds}
    unknown = set(given) - set(TASK_METRICS[task])
    if unknown:
        raise InputError(f"{task.value} is not measured by {', '.join(sorted(unknown))} "
                         f"(it has {', '.join(TASK_METRICS[task])})")
    if task is Task.CLASSIFICATION:
        results: tuple[ScoreResult, ...] = (top1(reference, candidate),)
    elif task is Task.TEXT_DETECTION:
        results = (box_f1(reference, candidate),)
    elif task is Task.TEXT_RECOGNITION:
        results = (character_error_rate(reference, candidate), exact_match(reference, candidate))
    elif task is Task.OCR:
        results = ocr_scores(reference, candidate)
    else:
        results = (within_tolerance(reference, candidate, rtol=rtol, atol=atol),)
    return tuple(r.judged(given.get(r.metric), min_n) for r in results)


def score(
    task: Task | str,
    reference: Any,
    candidate: Any,
    *,
    threshold: Threshold | None = None,
    min_n: int = 1,
) -> ScoreResult:
    """The task's primary score (or ``threshold``'s metric), judged by ``threshold``."""
    task = Task.parse(task) if isinstance(task, str) else task
    results = score_all(task, reference, candidate,
                        thresholds=(threshold,) if threshold else (), min_n=min_n)
    wanted = threshold.metric if threshold is not None else PRIMARY[task]
    return next(r for r in results if r.metric == wanted)


def row_scores(task: Task | str, reference: Any, candidate: Any) -> list[float]:
    """Each row's (image's) primary score, in [0, 1]: what a sequential test reads.

    Top-1 and within tolerance are 1 or 0; box F1 is the image's own F1 (no boxes on
    either side: 1); CER is the image's edits over its reference characters, capped at 1
    (so a row's CER is a bounded value, and a candidate writing pages of garbage counts
    as wrong on every character, not more). Pooled over images these are weighted apart
    from the task's score (long pages weigh more there); each row counts once here. The
    primary score carries them (:attr:`ScoreResult.rows`): a caller that scored already
    reads them there.
    """
    return list(score(task, reference, candidate).rows)


def differing(task: Task | str, reference: Any, candidate: Any, *,
              rtol: float = RTOL, atol: float = ATOL) -> Array:
    """Indices of rows/images where the candidate's result differs from the reference's."""
    task = Task.parse(task) if isinstance(task, str) else task
    if task is Task.CLASSIFICATION:
        a, b = _labels(reference), _labels(candidate)
        rows = len(a)
        return np.flatnonzero((a != b).reshape(rows, -1).any(axis=1))
    if task is Task.TEXT_RECOGNITION:
        pairs = zip(_texts(reference), _texts(candidate), strict=True)
        return np.flatnonzero([r != c for r, c in pairs])
    if task is Task.OCR:
        pages = zip(_pages(reference), _pages(candidate), strict=True)
        return np.flatnonzero([r.text != c.text for r, c in pages])
    if task is Task.TEXT_DETECTION:
        flags = []
        for ref, cand in zip(reference, candidate, strict=True):
            r, c = len(as_boxes(ref)), len(as_boxes(cand))
            flags.append(not (r == c == match_boxes(ref, cand)))
        return np.flatnonzero(flags)
    fa = np.asarray(reference, dtype=np.float64)
    fb = np.asarray(candidate, dtype=np.float64)
    rows = fa.shape[0] if fa.ndim else 1
    fa, fb = fa.reshape(rows, -1), fb.reshape(rows, -1)
    return np.flatnonzero(~(np.abs(fa - fb) <= atol + rtol * np.abs(fa)).all(axis=1))
