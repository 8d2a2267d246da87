"""Side-by-side comparison: one input batch through several loaded versions.

Batches are sent round-robin across versions, so every version sees the same
inputs under the same conditions. The result holds per-version latency
percentiles and accuracy (when labels are given), pairwise agreement (top-1
agreement, max and mean absolute difference, mean cosine similarity) and the
rows where versions disagree.
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import InputError
from workbench.runtime.latency import percentiles

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd

    from workbench._types import TensorsIn
    from workbench.model.version import Version
    from workbench.runtime.hub import VersionHub
    from workbench.runtime.loaded import LoadedVersion

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Agreement:
    """How closely two versions' outputs agree on the same inputs."""

    a: str
    b: str
    top1: float | None  # share of rows with the same arg-max (classification outputs)
    max_abs_diff: float
    mean_abs_diff: float
    cosine: float  # mean per-row cosine similarity


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
    return float(np.mean(np.argmax(a, axis=-1) == np.argmax(b, axis=-1)))


def agreement(a: Array, b: Array, *, names: tuple[str, str] = ("a", "b")) -> Agreement:
    """Compare two output arrays of equal shape (rows first)."""
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
        """One row per pair of versions."""
        import pandas as pd

        return pd.DataFrame.from_records(
            [
                {
                    "a": p.a,
                    "b": p.b,
                    "top1_agreement": p.top1,
                    "max_abs_diff": p.max_abs_diff,
                    "mean_abs_diff": p.mean_abs_diff,
                    "cosine": p.cosine,
                }
                for p in self.pairs
            ],
            columns=["a", "b", "top1_agreement", "max_abs_diff", "mean_abs_diff", "cosine"],
        )

    def table(self) -> pd.DataFrame:
        """The summary per version: accuracy (if labels), latency, agreement with the first version."""
        frame = self.latency[["p50_ms", "p99_ms", "rows_per_s"]].copy()
        if self.accuracy:
            frame.insert(0, "accuracy", [self.accuracy[v] for v in self.versions])
        reference = self.versions[0]
        agree = {reference: 1.0}
        for pair in self.pairs:
            if pair.a == reference and pair.top1 is not None:
                agree[pair.b] = pair.top1
        if len(agree) == len(self.versions):
            frame[f"top1_vs_{reference}"] = [agree[v] for v in self.versions]
        return frame

    def predictions(self) -> dict[str, Array]:
        """Arg-max class per row for each version."""
        return {v: out.reshape(len(out), -1).argmax(axis=1) for v, out in self.outputs.items()}

    def disagreements(self) -> Array:
        """Row indices where at least two versions predict different classes."""
        predicted = np.stack(list(self.predictions().values()))
        return np.flatnonzero((predicted != predicted[0]).any(axis=0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "versions": self.versions,
            "output": self.output,
            "rows": self.rows,
            "batch_size": self.batch_size,
            "seconds": self.seconds,
            "overlap": self.overlap,
            "accuracy": self.accuracy,
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
        return self.table().to_string() + "\n\n" + self.agreement.to_string(index=False)


def compare(
    hub: VersionHub,
    inputs: TensorsIn | Array,
    *,
    versions: Sequence[Version | str] | None = None,
    labels: Array | Sequence[int] | None = None,
    batch_size: int = 1,
    output: str | None = None,
) -> Comparison:
    """Run ``inputs`` through ``versions`` (default: all loaded) and compare them.

    ``inputs`` is a dict of arrays, or one array for single-input models. Rows
    are sent in batches of ``batch_size``, round-robin across versions; versions
    that all run in worker processes (process isolation) run in parallel.
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
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != rows:
            raise InputError(f"{len(labels)} labels for {rows} rows")
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
        if out_name not in result:
            raise InputError(f"{hub.model}:{name} has no output {out_name!r} (has {sorted(result)})")
        chunks[name].append(result[out_name])

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
    pairs = [
        agreement(outputs[a], outputs[b], names=(a, b)) for a, b in itertools.combinations(names, 2)
    ]
    accuracy: dict[str, float] = {}
    if labels is not None:
        for name, out in outputs.items():
            accuracy[name] = float((out.reshape(rows, -1).argmax(axis=1) == labels).mean())
    return Comparison(names, out_name, outputs, latencies, pairs, accuracy, rows, batch_size, seconds)
