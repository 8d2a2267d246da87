"""Output agreement of a candidate colour against the stable one, over HTTP.

The same input batches (the manifests' samples, plus an optional ``.npz``/``.npy``
file) go to both instances; their outputs are compared per output tensor: top-1
agreement (argmax over the last axis, for outputs with more than one class) and the
maximum and mean absolute difference. The report passes when both answered every
batch with outputs of the same shapes and top-1 agreement is at least the threshold.

Other tasks are judged by their own score (:mod:`workbench.runtime.scoring`) on the
first output: box F1 for text detection and CER for text recognition (on results
decoded by ``decode``; without a decoder their raw tensors are compared), rows within a
tolerance for generic outputs. The threshold is :func:`~workbench.runtime.scoring.
agreement_threshold` of ``min_top1`` (``box_f1 >= t``, ``cer <= 1 - t``, ...) and the
verdict follows the same rule: too few rows or an interval across the threshold is
inconclusive.

A batch a busy or unreachable instance could not answer (429, 503, a timeout, a refused
or reset connection: :func:`retryable`) says nothing about the outputs: it is kept in
``retry``, not ``errors``, and the report is inconclusive (deploy verification asks
again) rather than failed. Any other error (a 500, outputs of other names or shapes)
fails the check.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench._fs import unreadable
from workbench.deploy.rollout.phases import MIN_AGREEMENT_ROWS
from workbench.errors import DeployError, InputError, ServingError
from workbench.model.task import Task
from workbench.runtime import scoring
from workbench.runtime.compare import top1_agreement
from workbench.runtime.scoring import ScoreResult, wilson_interval

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from workbench._types import Array, StrPath, Tensors
    from workbench.deploy.client import ServingClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputAgreement:
    """How one output tensor of the candidate compares with the stable one."""

    name: str
    rows: int
    top1: float | None  # share of rows whose argmax agrees; None for single-value outputs
    max_abs_diff: float
    mean_abs_diff: float
    scores: tuple[ScoreResult, ...] = ()  # the task's scores on this output, primary first

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rows": self.rows,
            "top1": self.top1,
            "max_abs_diff": self.max_abs_diff,
            "mean_abs_diff": self.mean_abs_diff,
            "scores": [s.to_dict() for s in self.scores],
        }


@dataclass(frozen=True)
class AgreementReport:
    """The result of :func:`check_agreement`, small enough to persist and print."""

    model: str
    stable_version: str | None
    candidate_version: str | None
    sources: tuple[str, ...]
    rows: int
    outputs: tuple[OutputAgreement, ...]
    errors: tuple[str, ...] = ()
    min_top1: float = 0.0
    # batches a busy or unreachable instance could not answer: ask again, judge nothing
    retry: tuple[str, ...] = ()
    min_rows: int = MIN_AGREEMENT_ROWS
    seconds: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)
    task: Task = Task.CLASSIFICATION

    @property
    def score(self) -> ScoreResult | None:
        """The task's primary score, judged (None for classification: see :attr:`top1`)."""
        if self.task is Task.CLASSIFICATION:
            return None
        for output in self.outputs:
            if output.scores:
                return output.scores[0]
        return None

    @property
    def top1(self) -> float | None:
        """Top-1 agreement of the first classification-like output (None if there is none)."""
        for output in self.outputs:
            if output.top1 is not None:
                return output.top1
        return None

    @property
    def max_abs_diff(self) -> float:
        return max((o.max_abs_diff for o in self.outputs), default=0.0)

    @property
    def mean_abs_diff(self) -> float:
        if not self.outputs:
            return 0.0
        return float(np.mean([o.mean_abs_diff for o in self.outputs]))

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95% Wilson interval of the top-1 agreement (None without a top-1 output)."""
        top1 = self.top1
        if top1 is None or self.rows == 0:
            return None
        return wilson_interval(round(top1 * self.rows), self.rows)

    @property
    def inconclusive(self) -> bool:
        """Too few rows, or an interval on both sides of the threshold: neither pass nor fail."""
        return self.verdict.startswith("inconclusive")

    @property
    def passed(self) -> bool:
        return self.verdict.startswith(("passed", "no threshold"))

    @property
    def verdict(self) -> str:
        """``passed (>= 85.0%)``, ``below the threshold 85.0%``, ``inconclusive: ...``,
        ``no threshold set`` or ``failed``."""
        if self.errors:
            return "failed"
        if self.retry:
            return (f"inconclusive: {len(self.retry)} of {len(self.sources)} sample batches "
                    f"not answered ({self.retry[0]})")
        if not self.outputs:
            return "failed"
        if self.min_top1 <= 0:
            return "no threshold set"
        if self.task is not Task.CLASSIFICATION:
            return self._task_verdict()
        interval = self.interval
        if interval is None:
            return "passed (no class-score output to compare)"
        if self.rows < self.min_rows:
            return (f"inconclusive: {self.rows} rows compared, at least {self.min_rows} needed "
                    "(give more with --sample)")
        low, high = interval
        if high < self.min_top1:
            return f"below the threshold {self.min_top1:.1%}"
        if low >= self.min_top1:
            return f"passed (>= {self.min_top1:.1%})"
        return (f"inconclusive: the 95% interval {low:.1%}..{high:.1%} includes the threshold "
                f"{self.min_top1:.1%} (give more rows with --sample)")

    def _task_verdict(self) -> str:
        score = self.score
        if score is None or score.value is None or score.threshold is None:
            return f"passed (no {self.task.value} output to compare)"
        verdict = score.verdict
        if verdict == "pass":
            return f"passed ({score.threshold})"
        if verdict == "fail":
            return f"below the threshold {score.threshold}"
        return f"inconclusive: {score.reason} (give more rows with --sample)"

    def summary(self) -> str:
        """One line for logs, history and the CLI."""
        if self.errors:
            return f"agreement check failed: {self.errors[0]}"
        if self.retry:
            return f"agreement not checked yet: {self.verdict.removeprefix('inconclusive: ')}"
        if self.score is not None:
            return (f"{self.candidate_version} vs {self.stable_version}: {self.score}, "
                    f"max |diff| {self.max_abs_diff:.4g} ({self.verdict})")
        top1 = "n/a" if self.top1 is None else f"{self.top1:.1%}"
        if self.interval is not None:
            top1 += " (95% CI {:.1%}..{:.1%})".format(*self.interval)
        return (
            f"{self.candidate_version} vs {self.stable_version} on {self.rows} rows: "
            f"top-1 agreement {top1}, max |diff| {self.max_abs_diff:.4g}, "
            f"mean |diff| {self.mean_abs_diff:.4g} ({self.verdict})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "stable_version": self.stable_version,
            "candidate_version": self.candidate_version,
            "sources": list(self.sources),
            "rows": self.rows,
            "top1": self.top1,
            "max_abs_diff": self.max_abs_diff,
            "mean_abs_diff": self.mean_abs_diff,
            "min_top1": self.min_top1,
            "task": self.task.value,
            "score": None if self.score is None else self.score.to_dict(),
            "min_rows": self.min_rows,
            "interval": None if self.interval is None else list(self.interval),
            "inconclusive": self.inconclusive,
            "passed": self.passed,
            "verdict": self.verdict,
            "errors": list(self.errors),
            "retry": list(self.retry),
            "seconds": self.seconds,
            "outputs": [o.to_dict() for o in self.outputs],
            "summary": self.summary(),
        }


def load_sample_file(path: StrPath, input_names: Sequence[str]) -> Tensors:
    """Inputs from ``.npz`` (arrays named like the inputs) or ``.npy`` (the single input)."""
    file = Path(path)
    if not file.is_file():
        raise DeployError(f"sample file {file} does not exist")
    try:
        if file.suffix == ".npz":
            with np.load(file, allow_pickle=False) as archive:
                arrays = {name: np.asarray(archive[name]) for name in archive.files}
        elif file.suffix == ".npy":
            array = np.load(file, allow_pickle=False)
            if len(input_names) != 1:
                raise DeployError(
                    f"{file} holds one array but the model has inputs {list(input_names)}; "
                    "use an .npz with one array per input"
                )
            arrays = {input_names[0]: np.asarray(array)}
        else:
            raise DeployError(f"sample file {file} must be .npz or .npy")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DeployError(f"cannot read sample file {file}: {unreadable(exc)}") from exc
    missing = [n for n in input_names if n not in arrays]
    if missing:
        raise DeployError(f"sample file {file} lacks inputs {missing} (has {sorted(arrays)})")
    return {name: arrays[name] for name in input_names}


def compare_outputs(
    name: str,
    stable: Array,
    candidate: Array,
    *,
    scores: Sequence[ScoreResult] = (),
) -> OutputAgreement:
    """Top-1 agreement and absolute differences of two outputs of the same shape
    (``scores``: the task's scores of this output, when measured)."""
    a = np.asarray(stable, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if a.shape != b.shape:
        if scores:  # decoded results were compared: raw outputs may differ in shape
            rows = int(a.shape[0]) if a.ndim else 1
            return OutputAgreement(name, rows, None, float("nan"), float("nan"), tuple(scores))
        raise ValueError(f"output {name!r}: shapes differ, {a.shape} vs {b.shape}")
    diff = np.abs(a - b)
    top1 = top1_agreement(a, b)
    rows = int(a.shape[0]) if a.ndim else 1
    return OutputAgreement(
        name=name,
        rows=rows,
        top1=top1,
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        scores=tuple(scores),
    )


def check_agreement(
    stable: ServingClient,
    candidate: ServingClient,
    model: str,
    batches: Sequence[tuple[str, Mapping[str, Array]]],
    *,
    min_top1: float = 0.0,
    min_rows: int = MIN_AGREEMENT_ROWS,
    stable_version: str | None = None,
    candidate_version: str | None = None,
    task: Task | None = None,
    decode: Callable[[str, Array], Sequence[Any]] | None = None,
) -> AgreementReport:
    """Send every ``(source, inputs)`` batch to both instances and compare the outputs.

    ``task`` (default: classification) chooses the score; detection and recognition are
    scored on ``decode(version, first_output)`` results, or as generic tensors without
    a decoder. ``min_top1`` is the task's threshold through
    :func:`~workbench.runtime.scoring.agreement_threshold`.
    """
    import time

    started = time.perf_counter()
    errors: list[str] = []
    retry: list[str] = []
    kind = task or Task.CLASSIFICATION
    if decode is None and kind in (Task.TEXT_DETECTION, Task.TEXT_RECOGNITION):
        log.warning("%s: no decoder for %s outputs: comparing raw tensors", model, kind.value)
        kind = Task.GENERIC
    decoded = decode is not None and kind in (Task.TEXT_DETECTION, Task.TEXT_RECOGNITION)
    gathered: dict[str, tuple[list[Array], list[Array]]] = {}
    sources = []
    for source, inputs in batches:
        sources.append(source)
        try:
            left = stable.infer(model, inputs)
            right = candidate.infer(model, inputs)
        except ServingError as exc:
            (retry if retryable(exc) else errors).append(f"{source}: {exc}")
            continue
        stable_version = stable_version or left.version
        candidate_version = candidate_version or right.version
        if decoded and left.outputs and right.outputs:
            # decoded by each version's codec: the first outputs pair up, whatever their
            # names (another export of the same task names them differently)
            name = next(iter(left.outputs))
            pair = gathered.setdefault(name, ([], []))
            pair[0].append(left.outputs[name])
            pair[1].append(next(iter(right.outputs.values())))
            continue
        missing = sorted(set(left.outputs) ^ set(right.outputs))
        if missing:
            errors.append(f"{source}: outputs differ by name: {missing}")
            continue
        for name in left.outputs:
            pair = gathered.setdefault(name, ([], []))
            pair[0].append(left.outputs[name])
            pair[1].append(right.outputs[name])
    threshold = scoring.agreement_threshold(kind, min_top1)
    outputs = []
    for index, (name, (lefts, rights)) in enumerate(gathered.items()):
        try:
            stable_out, candidate_out = _stack(lefts), _stack(rights)
            scores: tuple[ScoreResult, ...] = ()
            if kind is not Task.CLASSIFICATION and index == 0:
                ref: Any = stable_out
                cand: Any = candidate_out
                if decode is not None:
                    ref = decode(stable_version or "stable", stable_out)
                    cand = decode(candidate_version or "candidate", candidate_out)
                scores = (scoring.score(kind, ref, cand, threshold=threshold, min_n=min_rows),)
            outputs.append(compare_outputs(name, stable_out, candidate_out, scores=scores))
        except (ValueError, InputError) as exc:
            errors.append(str(exc))
    rows = max((o.rows for o in outputs), default=0)
    report = AgreementReport(
        model=model,
        stable_version=stable_version,
        candidate_version=candidate_version,
        sources=tuple(sources),
        rows=rows,
        outputs=tuple(outputs),
        errors=tuple(errors),
        min_top1=min_top1,
        min_rows=min_rows,
        seconds=time.perf_counter() - started,
        task=kind,
        retry=tuple(retry),
    )
    log.info("%s: %s", model, report.summary())
    return report


def retryable(exc: ServingError) -> bool:
    """A busy or unreachable instance (429, 503, a timeout, a refused or reset connection):
    worth asking again, no verdict on its outputs. A 500 or a malformed answer is one."""
    if exc.status is not None:
        return exc.status in (429, 503)
    return not str(exc).startswith("malformed")


def _stack(arrays: list[Array]) -> Array:
    if len(arrays) == 1:
        return arrays[0]
    try:
        return np.concatenate([np.atleast_1d(a) for a in arrays], axis=0)
    except ValueError as exc:
        raise ValueError(f"batches have incompatible output shapes: {exc}") from exc
