"""Side-by-side comparison: one input batch through several loaded versions.

Batches are sent round-robin across versions, so every version sees the same
inputs under the same conditions. The result holds per-version latency
percentiles and accuracy (when labels are given), pairwise agreement (top-1
agreement, max and mean absolute difference, mean cosine similarity) and the
rows where versions disagree.

Agreement is judged by the task (:mod:`workbench.runtime.scoring`): top-1 for
classification, box F1 at IoU 0.5 for text detection, character error rate (and
exact match) for text recognition, rows within a tolerance for anything else, each
with its 95% interval and, when thresholds are given, a verdict. Detection and
recognition compare decoded results: pass ``decode`` (a codec's postprocessor: version
name and raw output array -> one result per row); decoded versions may differ in their
raw outputs (another character set, another output name).
"""

from __future__ import annotations

import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import InputError
from workbench.model.task import Task
from workbench.runtime import scoring
from workbench.runtime.latency import percentiles

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import pandas as pd

    from workbench._types import TensorsIn
    from workbench.model.version import Version
    from workbench.runtime.hub import VersionHub
    from workbench.runtime.loaded import LoadedVersion

Array = np.ndarray[Any, Any]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Agreement:
    """How closely two versions' outputs agree on the same inputs."""

    a: str
    b: str
    top1: float | None  # share of rows with the same arg-max (classification outputs)
    max_abs_diff: float
    mean_abs_diff: float
    cosine: float  # mean per-row cosine similarity
    scores: tuple[scoring.ScoreResult, ...] = ()  # the task's metrics, primary first

    @property
    def score(self) -> scoring.ScoreResult | None:
        """The task's primary score (top-1, box F1, CER or within-tolerance)."""
        return self.scores[0] if self.scores else None


def top1_agreement(a: Array, b: Array) -> float | None:
    """Share of positions where ``a`` and ``b`` pick the same class: argmax over the last axis.

    For ``(rows, classes)`` outputs, the share of rows with the same top-1 class. None
    when the outputs are not class scores (fewer than two dimensions, or one column).
    The deploy layer's agreement check uses the same measure.
    """
    if a.shape != b.shape:
        raise InputError(f"outputs differ in shape: {a.shape} vs {b.shape}")
    if a.ndim < 2 or a.shape[-1] < 2 or a.size == 0:
        return None
    return scoring.top1(a, b).value


def agreement(
    a: Array,
    b: Array,
    *,
    names: tuple[str, str] = ("a", "b"),
    scores: Sequence[scoring.ScoreResult] = (),
) -> Agreement:
    """Compare two output arrays of equal shape (rows first); ``scores`` are the task's."""
    if a.shape != b.shape:
        raise InputError(f"outputs differ in shape: {a.shape} vs {b.shape}")
    fa = a.reshape(len(a), -1).astype(np.float64)
    fb = b.reshape(len(b), -1).astype(np.float64)
    diff = np.abs(fa - fb)
    norms = np.linalg.norm(fa, axis=1) * np.linalg.norm(fb, axis=1)
    dots = np.einsum("ij,ij->i", fa, fb)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosines = np.where(norms > 0, dots / norms, np.where(np.all(fa == fb, axis=1), 1.0, 0.0))
    return Agreement(
        names[0],
        names[1],
        top1_agreement(a, b),
        float(diff.max(initial=0.0)),
        float(diff.mean()),
        float(cosines.mean()),
        tuple(scores),
    )


@dataclass
class Comparison:
    """The result of :func:`compare`; tables are pandas DataFrames."""

    versions: list[str]
    output: str
    outputs: dict[str, Array]
    latencies: dict[str, list[float]]
    pairs: list[Agreement]
    accuracy: dict[str, float] = field(default_factory=dict)
    rows: int = 0
    batch_size: int = 1
    seconds: float = 0.0  # wall time of running every batch through every version
    task: Task = Task.CLASSIFICATION  # the task the scores were measured for
    results: dict[str, Sequence[Any]] = field(default_factory=dict)  # decoded, when decoded
    truth: dict[str, tuple[scoring.ScoreResult, ...]] = field(default_factory=dict)  # vs labels

    @property
    def overlap(self) -> float:
        """Time spent in versions' batches over wall time: above 1 when versions ran at once.

        Versions in worker processes run side by side (up to the number of versions);
        in-process versions take turns, so it stays below 1.
        """
        busy = sum(sum(seconds) for seconds in self.latencies.values())
        return busy / self.seconds if self.seconds > 0 else float("nan")

    @property
    def latency(self) -> pd.DataFrame:
        """Per-version batch latency in milliseconds: p50, p90, p99, mean, rows/s."""
        import pandas as pd

        records = []
        for version in self.versions:
            seconds = np.asarray(self.latencies[version])
            ms = percentiles(seconds, scale=1000)
            records.append(
                {
                    "version": version,
                    "p50_ms": ms["p50"],
                    "p90_ms": ms["p90"],
                    "p99_ms": ms["p99"],
                    "mean_ms": seconds.mean() * 1000,
                    "rows_per_s": self.rows / seconds.sum() if seconds.sum() > 0 else float("nan"),
                }
            )
        return pd.DataFrame.from_records(records).set_index("version")

    @property
    def agreement(self) -> pd.DataFrame:
        """One row per pair of versions: today's raw measures, then the task's primary score
        (``metric``, ``value``, its 95% interval ``ci_low``..``ci_high``, ``verdict``)."""
        import pandas as pd

        columns = ["a", "b", "top1_agreement", "max_abs_diff", "mean_abs_diff", "cosine",
                   "metric", "value", "ci_low", "ci_high", "verdict"]
        records = []
        for p in self.pairs:
            s = p.score
            interval = s.interval if s is not None and s.interval is not None else (None, None)
            records.append({
                "a": p.a,
                "b": p.b,
                "top1_agreement": p.top1,
                "max_abs_diff": p.max_abs_diff,
                "mean_abs_diff": p.mean_abs_diff,
                "cosine": p.cosine,
                "metric": None if s is None else s.metric,
                "value": None if s is None else s.value,
                "ci_low": interval[0],
                "ci_high": interval[1],
                "verdict": None if s is None else s.verdict,
            })
        return pd.DataFrame.from_records(records, columns=columns)

    def table(self) -> pd.DataFrame:
        """The summary per version: accuracy (if labels), latency, agreement with the first version."""
        frame = self.latency[["p50_ms", "p99_ms", "rows_per_s"]].copy()
        if self.accuracy:
            frame.insert(0, "accuracy", [self.accuracy[v] for v in self.versions])
        for version, scores in self.truth.items():
            for s in scores:
                frame.loc[version, f"{s.metric}_vs_labels"] = s.value
        reference = self.versions[0]
        if self.task is Task.CLASSIFICATION:
            agree = {reference: 1.0}
            for pair in self.pairs:
                if pair.a == reference and pair.top1 is not None:
                    agree[pair.b] = pair.top1
            if len(agree) == len(self.versions):
                frame[f"top1_vs_{reference}"] = [agree[v] for v in self.versions]
            return frame
        metric = scoring.PRIMARY[self.task]
        perfect = 0.0 if metric == "cer" else 1.0
        values: dict[str, float | None] = {reference: perfect}
        for pair in self.pairs:
            if pair.a == reference and pair.score is not None:
                values[pair.b] = pair.score.value
        if len(values) == len(self.versions):
            frame[f"{metric}_vs_{reference}"] = [values[v] for v in self.versions]
        return frame

    def predictions(self) -> dict[str, Array]:
        """Arg-max class per row for each version."""
        return {v: out.reshape(len(out), -1).argmax(axis=1) for v, out in self.outputs.items()}

    def disagreements(self) -> Array:
        """Row indices where at least two versions disagree: predict different classes
        (classification), read different text, find boxes that do not match one to one, or
        differ beyond the tolerance (generic) — each version against the first."""
        if self.task is Task.CLASSIFICATION:
            predicted = np.stack(list(self.predictions().values()))
            return np.flatnonzero((predicted != predicted[0]).any(axis=0))
        first = self.versions[0]
        source: dict[str, Any] = self.results if self.results else self.outputs
        rows: set[int] = set()
        for version in self.versions[1:]:
            rows.update(scoring.differing(self.task, source[first], source[version]).tolist())
        return np.array(sorted(rows), dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "versions": self.versions,
            "output": self.output,
            "rows": self.rows,
            "batch_size": self.batch_size,
            "seconds": self.seconds,
            "overlap": self.overlap,
            "task": self.task.value,
            "accuracy": self.accuracy,
            "scores": [
                {"a": p.a, "b": p.b, "scores": [s.to_dict() for s in p.scores]}
                for p in self.pairs
            ],
            "truth": {v: [s.to_dict() for s in scores] for v, scores in self.truth.items()},
            "latency_ms": self.latency.round(4).reset_index().to_dict(orient="records"),
            "agreement": self.agreement.to_dict(orient="records"),
            "disagreements": self.disagreements().tolist(),
        }

    def _repr_html_(self) -> str:
        return (
            f"<p>{self.rows} rows through {', '.join(self.versions)} "
            f"(output <code>{self.output}</code>, batch {self.batch_size})</p>"
            + self.table().to_html(float_format=lambda v: f"{v:.4g}")
            + self.agreement.to_html(index=False, float_format=lambda v: f"{v:.4g}")
        )

    def __str__(self) -> str:
        lines = [f"{p.a} vs {p.b}: {s}" for p in self.pairs for s in p.scores]
        return (self.table().to_string() + "\n\n" + self.agreement.to_string(index=False)
                + ("\n\n" + "\n".join(lines) if lines else ""))


def compare(
    hub: VersionHub,
    inputs: TensorsIn | Array,
    *,
    versions: Sequence[Version | str] | None = None,
    labels: Array | Sequence[Any] | None = None,
    batch_size: int = 1,
    output: str | None = None,
    task: Task | str | None = None,
    decode: Callable[[str, Array], Sequence[Any]] | None = None,
    thresholds: Sequence[scoring.Threshold | str] = (),
    min_rows: int = 1,
) -> Comparison:
    """Run ``inputs`` through ``versions`` (default: all loaded) and compare them.

    ``inputs`` is a dict of arrays, or one array for single-input models. Rows
    are sent in batches of ``batch_size``, round-robin across versions; versions
    that all run in worker processes (process isolation) run in parallel.

    ``task`` (default: the manifest's, else classification for class scores and generic
    otherwise) chooses the scores; detection and recognition need ``decode``, which turns
    a version's name and output array into one result per row (boxes ``(N, 4, 2)``; text or
    ``(text, score)``). ``labels`` are the ground truth in the same form (class ids for
    classification). ``thresholds`` (``"cer<=0.05"``, ``"box_f1>=0.9"``, ...) give the
    scores a verdict; fewer than ``min_rows`` rows is inconclusive.

    ``output`` names the output to compare (it must exist in every version); by default
    each version's first output, so exports that name it differently still compare.
    """
    loaded = [hub.get(v) for v in versions] if versions else hub.loaded
    if not loaded:
        raise InputError(f"{hub.model}: no versions loaded to compare")
    if batch_size < 1:
        raise InputError("batch_size must be at least 1")
    if not isinstance(inputs, dict):
        names = [spec.name for spec in loaded[0].inputs]
        if len(names) != 1:
            raise InputError(f"{hub.model} has inputs {names}: pass a dict of arrays")
        inputs = {names[0]: np.asarray(inputs)}
    arrays = loaded[0].validate(inputs)
    rows = len(next(iter(arrays.values())))
    out_name = output or loaded[0].outputs[0].name
    out_names = {str(lv.version): output or lv.outputs[0].name for lv in loaded}
    judged = [t if isinstance(t, scoring.Threshold) else scoring.Threshold.parse(t)
              for t in thresholds]
    if labels is not None and len(labels) != rows:
        raise InputError(f"{len(labels)} labels for {rows} rows")
    declared = _task(task, loaded[0], decode)
    names = [str(lv.version) for lv in loaded]
    chunks: dict[str, list[Array]] = {n: [] for n in names}
    latencies: dict[str, list[float]] = {n: [] for n in names}
    batches = [{k: v[start : start + batch_size] for k, v in arrays.items()}
               for start in range(0, rows, batch_size)]

    def run(name: str, lv: LoadedVersion, batch: TensorsIn) -> None:
        with hub.lease(lv.version) as leased:
            began = time.perf_counter()
            result = leased.predict(batch, validate=False)
            latencies[name].append(time.perf_counter() - began)
        wanted = out_names[name]
        if wanted not in result:
            raise InputError(f"{hub.model}:{name} has no output {wanted!r} (has {sorted(result)})")
        chunks[name].append(result[wanted])

    def run_all(name: str, lv: LoadedVersion) -> None:
        for batch in batches:
            run(name, lv, batch)

    began = time.perf_counter()
    if len(loaded) > 1 and all(lv.isolation == "process" for lv in loaded):
        # each version runs in its own worker processes: run them side by side
        with ThreadPoolExecutor(len(loaded), thread_name_prefix="workbench-compare") as pool:
            futures = [pool.submit(run_all, name, lv) for name, lv in zip(names, loaded, strict=True)]
            for future in futures:
                future.result()
    else:
        for batch in batches:
            for name, lv in zip(names, loaded, strict=True):
                run(name, lv, batch)
    seconds = time.perf_counter() - began
    outputs = {n: np.concatenate(c) for n, c in chunks.items()}
    kind = declared or scoring.guessed_task(outputs[names[0]])
    results: dict[str, Sequence[Any]] = {}
    if decode is not None and kind in (Task.TEXT_DETECTION, Task.TEXT_RECOGNITION):
        results = {n: list(decode(n, out)) for n, out in outputs.items()}
    scored: dict[str, Any] = results or outputs

    def scores(reference: Any, candidate: Any) -> tuple[scoring.ScoreResult, ...]:
        if kind is Task.CLASSIFICATION and top1_agreement(reference, candidate) is None:
            return ()  # not class scores (one column): there is no top-1 to compare
        return scoring.score_all(kind, reference, candidate, thresholds=judged, min_n=min_rows)

    pairs = []
    for a, b in itertools.combinations(names, 2):
        if results and outputs[a].shape != outputs[b].shape:
            # decoded results compare; raw outputs of another shape (a larger character
            # set, say) have no element-wise difference
            nan = float("nan")
            pairs.append(Agreement(a, b, None, nan, nan, nan, scores(scored[a], scored[b])))
        else:
            pairs.append(agreement(outputs[a], outputs[b], names=(a, b),
                                   scores=scores(scored[a], scored[b])))
    accuracy: dict[str, float] = {}
    truth: dict[str, tuple[scoring.ScoreResult, ...]] = {}
    if labels is not None and kind is Task.CLASSIFICATION:
        truth_ids = np.asarray(labels)
        for name, out in outputs.items():
            accuracy[name] = float((out.reshape(rows, -1).argmax(axis=1) == truth_ids).mean())
    elif labels is not None:
        truth = {n: scoring.score_all(kind, list(labels), scored[n], thresholds=judged,
                                      min_n=min_rows) for n in names}
    return Comparison(names, out_name, outputs, latencies, pairs, accuracy, rows, batch_size,
                      seconds, kind, results, truth)


def _task(task: Task | str | None, first: LoadedVersion, decode: object) -> Task | None:
    """The task to score by: the caller's or the manifest's (None: guess from the outputs).

    A detection or recognition task without a decoder is compared as generic tensors
    when it came from the manifest (with a warning), and refused when asked for.
    """
    if task is not None:
        kind = Task.parse(task) if isinstance(task, str) else task
        if decode is None and kind in (Task.TEXT_DETECTION, Task.TEXT_RECOGNITION):
            raise InputError(f"comparing by {kind.value} needs decoded results: pass decode= "
                             "(the codec's postprocessor)")
        return kind
    declared = scoring.declared_task(first.manifest)
    if decode is None and declared in (Task.TEXT_DETECTION, Task.TEXT_RECOGNITION):
        log.warning("%s is a %s model but no decoder was given: comparing raw tensors",
                    first.version, declared.value if declared else "")
        return Task.GENERIC
    return declared
