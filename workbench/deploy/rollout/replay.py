"""Replay the same inputs to the stable and candidate instances and compare their answers.

The inputs, best first: a labelled set when one is given (``.npz`` with the model's
inputs and a ``labels`` array, so accuracy is measured too), else the stable
instance's reservoir sample of real request rows (``GET /v2/admin/reservoir``, admin
token), else the manifest's sample of the stable version. :func:`replay` sends them in
batches to both instances and returns an :class:`~workbench.deploy.rollout.signals.OutputCheck`:
top-1 agreement (argmax over the last axis of the first classification output) and
accuracy against the labels.

Other tasks (``task``, or generic when no output holds class scores) are scored on the
first output by :mod:`workbench.runtime.scoring` — box F1 and CER on results decoded by
``decode``, rows within a tolerance otherwise — and the check carries that
:class:`~workbench.runtime.scoring.ScoreResult` (unjudged: the canary rule judges it).

A batch either instance cannot answer (a full queue's 503, a timeout, a reset
connection: a busy host meets them) is missing evidence, not disagreement: it is left
out of every figure, and its rows are counted as ``failed`` with the reason
(:class:`ReplayFailures`: ``candidate 503``, ``stable timeout``), so the agreement rule
judges only the rows both answered and says how many it could not. A candidate that
fails requests is the error-rate rule's business (live traffic), as a provider error is
not a failure in Argo Rollouts' analysis. A candidate that answers with other shapes did
answer: its rows disagree. No rows compared means ``agreement=None``: an unreadable
sample never passes as agreement.
"""

from __future__ import annotations

import logging
import zipfile
from collections import Counter
from functools import partial
from http.client import HTTPException
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench._fs import unreadable
from workbench.deploy.http import request_within
from workbench.deploy.rollout.signals import OutputCheck
from workbench.errors import DeployError, InputError, ServingError
from workbench.model.task import Task
from workbench.runtime import scoring

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from workbench._types import Array, StrPath

__all__ = [
    "ReplayFailures",
    "failure_reason",
    "fetch_reservoir",
    "load_labelled",
    "nothing_compared",
    "output_check",
    "replay",
    "reservoir_segments",
    "row_digests",
    "segment_checks",
    "with_segments",
]

log = logging.getLogger(__name__)
LABELS = "labels"


def failure_reason(exc: ServingError) -> str:
    """What went wrong, in a word: the status answered (``503``), ``timeout``, or
    ``no answer`` (refused, reset or malformed)."""
    if exc.status is not None:
        return str(exc.status)
    return "timeout" if "timed out" in str(exc) else "no answer"


class ReplayFailures:
    """Replayed rows left out because a colour could not answer them, by reason."""

    def __init__(self) -> None:
        self.rows = 0
        self._by: Counter[str] = Counter()

    def add(self, side: str, rows: int, exc: ServingError) -> None:
        """``rows`` of one batch ``side`` (``stable``/``candidate``) failed with ``exc``."""
        self.rows += rows
        self._by[f"{side} {failure_reason(exc)}"] += rows

    @property
    def reasons(self) -> tuple[tuple[str, int], ...]:
        """``(reason, rows)``, most rows first."""
        return tuple(self._by.most_common())

    def check(self, **figures: Any) -> OutputCheck:
        """The :class:`OutputCheck` of ``figures`` with these failures."""
        return OutputCheck(**figures, failed=self.rows, failures=self.reasons)


def nothing_compared(failures: ReplayFailures | None = None) -> OutputCheck:
    """No row answered by both colours (or none to replay): no figure at all."""
    failures = failures or ReplayFailures()
    return failures.check(rows=0, agreement=None, accuracy_stable=None, accuracy_candidate=None)


def _reservoir_doc(url: str, admin_token: str, timeout: float, query: str = "") -> Any:
    """The body of ``GET /v2/admin/reservoir`` (ServingError when it cannot be read)."""
    try:
        response = request_within("GET", f"{url.rstrip('/')}/v2/admin/reservoir{query}", timeout,
                                  headers={"Authorization": f"Bearer {admin_token}"})
        doc = response.json()
    except (OSError, HTTPException, ValueError) as exc:
        raise ServingError(f"cannot read the reservoir of {url}: {exc}") from exc
    if response.status != 200:
        raise ServingError(f"{url} refused its reservoir ({response.status}): "
                           f"{doc.get('error', '') if isinstance(doc, dict) else ''}")
    if not isinstance(doc, dict):
        raise ServingError(f"malformed reservoir from {url}: not a JSON object")
    return doc


def fetch_reservoir(url: str, admin_token: str, *, timeout: float = 10.0,
                    segment_by: str | None = None, segment: str | None = None) -> dict[str, Array]:
    """The reservoir sample of the instance at ``url`` (empty when it holds no rows), or
    one segment's (``segment_by``, ``segment``), read within ``timeout`` seconds in all
    (connect to last byte)."""
    from urllib.parse import urlencode

    from workbench.deploy.client import decode_outputs

    query = ("?" + urlencode({"segment_by": segment_by, "segment": segment or ""})
             if segment_by is not None else "")
    doc = _reservoir_doc(url, admin_token, timeout, query)
    try:
        return decode_outputs({"outputs": doc.get("inputs", [])})
    except (KeyError, TypeError, ValueError) as exc:
        raise ServingError(f"malformed reservoir from {url}: {exc}") from exc


def reservoir_segments(url: str, admin_token: str, segment_by: str, *,
                       timeout: float = 10.0) -> dict[str, int] | None:
    """The segments of ``segment_by`` the instance at ``url`` keeps a sample of, each with
    its rows; None when it keeps none by that key (not serving with ``--segment-by``)."""
    doc = _reservoir_doc(url, admin_token, timeout)
    listed = (doc.get("segments") or {}).get(segment_by)
    if not isinstance(listed, dict):
        return None
    try:
        return {str(name): int(entry["rows"]) for name, entry in listed.items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise ServingError(f"malformed reservoir segments from {url}: {exc}") from exc


def segment_checks(stable_url: str, admin_token: str, segment_by: str,
                   check: Callable[[Mapping[str, Array]], OutputCheck]) -> dict[str, OutputCheck] | None:
    """``check`` (a replay to both colours) of each segment's sample of stable's
    reservoir, by segment; None when stable keeps no sample by ``segment_by``. A segment
    whose sample cannot be read is left out (logged): missing evidence."""
    listed = reservoir_segments(stable_url, admin_token, segment_by)
    if listed is None:
        return None
    checks: dict[str, OutputCheck] = {}
    for segment, rows in listed.items():
        if rows <= 0:
            continue
        try:
            inputs = fetch_reservoir(stable_url, admin_token, segment_by=segment_by,
                                     segment=segment)
        except ServingError as exc:
            log.info("%s=%s: %s", segment_by, segment, exc)
            continue
        if inputs and not any(array.dtype.kind == "O" for array in inputs.values()):
            checks[segment] = check(inputs)
    return checks


def load_labelled(path: StrPath) -> tuple[dict[str, Array], Array]:
    """Inputs and labels from an ``.npz`` holding the model's inputs and a ``labels`` array."""
    file = Path(path)
    try:
        with np.load(file, allow_pickle=False) as archive:
            arrays = {name: np.asarray(archive[name]) for name in archive.files}
    except FileNotFoundError:
        raise DeployError(f"the labelled set {file} does not exist") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DeployError(f"cannot read the labelled set {file}: {unreadable(exc)}") from exc
    labels = arrays.pop(LABELS, None)
    if labels is None or not arrays:
        raise DeployError(f"the labelled set {file} needs the model's inputs and a "
                          f"'{LABELS}' array (it has {sorted(arrays)})")
    rows = {array.shape[0] for array in arrays.values()}
    if rows != {labels.shape[0]}:
        raise DeployError(f"the labelled set {file}: inputs and labels differ in rows")
    return arrays, labels.reshape(-1)


def replay(
    stable_url: str,
    candidate_url: str,
    model: str,
    inputs: Mapping[str, Array],
    *,
    labels: Array | None = None,
    batch_rows: int = 64,
    timeout: float = 30.0,
    task: Task | None = None,
    decode: Callable[[str, Array], Sequence[Any]] | None = None,
) -> OutputCheck:
    """Send ``inputs`` (rows along axis 0) to both instances in batches and compare.

    ``task`` None or classification: top-1 of the first class-score output, as always
    (generic when there is none). Detection and recognition need ``decode`` (version
    ``"stable"``/``"candidate"`` and the first output -> one result per row), else their
    raw tensors are compared.
    """
    from workbench.deploy.client import ServingClient

    rows = _rows(inputs)
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    if task is not None and task is not Task.CLASSIFICATION:
        return _replay_scored(stable_url, candidate_url, model, inputs, rows, batch_rows,
                              timeout, task, decode)
    compared = agreed = stable_right = candidate_right = 0
    per_row: list[tuple[bytes, bool]] = []
    per_truth: list[tuple[bytes, float]] = []
    failures = ReplayFailures()
    # Marked as replays: the instances count them apart from live traffic (a replay must not
    # make a quiet canary look judged) and keep them out of their reservoirs.
    marked = {"x-workbench-replay": "1"}
    with ServingClient(stable_url, timeout=timeout, headers=marked) as stable, \
            ServingClient(candidate_url, timeout=timeout, headers=marked) as candidate:
        for start in range(0, rows, batch_rows):
            batch = {name: array[start : start + batch_rows] for name, array in inputs.items()}
            count = min(batch_rows, rows - start)
            try:
                want = _top1(stable.infer(model, batch).outputs)
            except ServingError as exc:
                log.info("%s: stable could not answer a replayed batch: %s", model, exc)
                failures.add("stable", count, exc)
                continue
            if want is None:
                # no classification output: compare the tensors within a tolerance
                return _replay_scored(stable_url, candidate_url, model, inputs, rows,
                                      batch_rows, timeout, Task.GENERIC, None)
            try:
                got = _top1(candidate.infer(model, batch).outputs)
            except ServingError as exc:
                log.info("%s: candidate could not answer a replayed batch: %s", model, exc)
                failures.add("candidate", count, exc)
                continue
            compared += count  # an answer of another shape: every row disagrees
            same: list[bool] = [False] * count
            if got is not None and got.shape == want.shape:
                rows_equal = np.asarray(np.asarray(got == want).reshape(count, -1).all(axis=1))
                same = [bool(v) for v in rows_equal]
                agreed += int((got == want).sum())
            digests = row_digests(batch)
            per_row += zip(digests, same, strict=True)
            if labels is not None:
                truth = labels[start : start + count]
                stable_right += int((want == truth).sum())
                right = np.zeros(count, dtype=bool)
                if got is not None and got.shape == want.shape:
                    candidate_right += int((got == truth).sum())
                    right = _rows_right(got, truth, count)
                worse = _rows_right(want, truth, count).astype(float) - right
                per_truth += zip(digests, (float(v) for v in worse), strict=True)
    if not compared:
        return nothing_compared(failures)
    return failures.check(
        rows=compared,
        agreement=agreed / compared,
        accuracy_stable=stable_right / compared if labels is not None else None,
        accuracy_candidate=candidate_right / compared if labels is not None else None,
        row_agreement=tuple(per_row),
        row_truth=tuple(per_truth),
    )


def _rows_right(labels: Array, truth: Array, rows: int) -> Array:
    """Whether each row's labels all equal the truth's."""
    right: Array = np.asarray(np.asarray(labels == truth).reshape(rows, -1).all(axis=1))
    return right


def row_digests(inputs: Mapping[str, Array]) -> list[bytes]:
    """A short digest of each row (axis 0) of ``inputs``, over every input in name order:
    the same request replayed again has the same one."""
    import hashlib

    rows = _rows(inputs)
    arrays = [np.ascontiguousarray(inputs[name]) for name in sorted(inputs)]
    digests = []
    for i in range(rows):
        h = hashlib.blake2b(digest_size=16)
        for array in arrays:
            h.update(str(array.dtype).encode())
            row = array[i]
            h.update(str(row.tolist()).encode() if array.dtype.kind == "O" else row.tobytes())
        digests.append(h.digest())
    return digests


def _replay_scored(
    stable_url: str,
    candidate_url: str,
    model: str,
    inputs: Mapping[str, Array],
    rows: int,
    batch_rows: int,
    timeout: float,
    task: Task,
    decode: Callable[[str, Array], Sequence[Any]] | None,
) -> OutputCheck:
    """Replay for a task other than classification: one score over all replayed rows."""
    from workbench.deploy.client import ServingClient

    if decode is None and task in (Task.TEXT_DETECTION, Task.TEXT_RECOGNITION):
        log.warning("%s: no decoder for %s outputs: comparing raw tensors", model, task.value)
        task = Task.GENERIC
    wanted: list[Any] = []
    got: list[Any] = []
    digests: list[bytes] = []
    compared = 0
    failures = ReplayFailures()
    marked = {"x-workbench-replay": "1"}
    with ServingClient(stable_url, timeout=timeout, headers=marked) as stable, \
            ServingClient(candidate_url, timeout=timeout, headers=marked) as candidate:
        for start in range(0, rows, batch_rows):
            batch = {name: array[start : start + batch_rows] for name, array in inputs.items()}
            count = min(batch_rows, rows - start)
            try:
                reference = _first(stable.infer(model, batch).outputs)
            except ServingError as exc:
                log.info("%s: stable could not answer a replayed batch: %s", model, exc)
                failures.add("stable", count, exc)
                continue
            if reference is None:
                break
            try:
                answer = _first(candidate.infer(model, batch).outputs)
            except ServingError as exc:
                log.info("%s: candidate could not answer a replayed batch: %s", model, exc)
                failures.add("candidate", count, exc)
                continue
            if answer is not None and decode is None and answer.shape != reference.shape:
                answer = None  # answered in another shape: every row disagrees
            count = len(reference)
            compared += count
            digests += row_digests(batch)[:count]
            if decode is not None:
                wanted.extend(decode("stable", reference))
                got.extend(decode("candidate", answer) if answer is not None
                           else [_no_answer(task)] * count)
            else:
                wanted.append(np.asarray(reference, dtype=np.float64))
                got.append(np.asarray(answer, dtype=np.float64) if answer is not None
                           else np.full(reference.shape, np.nan))
    if not compared:
        return nothing_compared(failures)
    ref_all: Any = wanted if decode is not None else np.concatenate(wanted)
    cand_all: Any = got if decode is not None else np.concatenate(got)
    try:
        result = scoring.score(task, ref_all, cand_all)
    except InputError as exc:
        log.warning("%s: replayed outputs cannot be scored: %s", model, exc)
        return nothing_compared(failures)
    per_row = result.rows
    scored = tuple(zip(digests, per_row, strict=True)) if len(digests) == len(per_row) else ()
    return failures.check(rows=compared, agreement=None, accuracy_stable=None,
                          accuracy_candidate=None, score=result, row_scores=scored)


def _first(outputs: Mapping[str, Array]) -> Array | None:
    for array in outputs.values():
        first: Array = np.asarray(array)
        return first
    return None


def _no_answer(task: Task) -> Any:
    """What a row answered with nothing to decode counts as: nothing found, nothing read."""
    return np.zeros((0, 4, 2)) if task is Task.TEXT_DETECTION else ""


def output_check(
    stable_url: str,
    candidate_url: str,
    model: str,
    *,
    labelled: StrPath | None = None,
    admin_token: str | None = None,
    sample: Mapping[str, Array] | None = None,
    batch_rows: int = 64,
    task: Task | None = None,
    decode: Callable[[str, Array], Sequence[Any]] | None = None,
) -> OutputCheck:
    """Replay the best inputs there are: the labelled set, else the stable instance's
    reservoir (with ``admin_token``), else ``sample`` (e.g. the manifest's).

    ``task`` and ``decode`` as for :func:`replay`; labels are class ids, so a labelled
    set measures accuracy for classification only.
    """
    run = partial(replay, stable_url, candidate_url, model, batch_rows=batch_rows, task=task,
                  decode=decode)
    if labelled is not None:
        inputs, labels = load_labelled(labelled)
        return run(inputs, labels=labels)
    if admin_token is not None:
        try:
            reservoir = fetch_reservoir(stable_url, admin_token)
        except ServingError as exc:
            log.warning("%s: %s; falling back to the sample", model, exc)
            reservoir = {}
        if any(array.dtype.kind == "O" for array in reservoir.values()):
            # encoded images: an OCR pipeline's are replayed as pages (rollout.pages); a
            # model's image rows are not compared here
            log.info("%s: the reservoir holds images; replaying the sample instead", model)
            reservoir = {}
        if reservoir:
            return run(reservoir)
    if sample:
        return run(sample)
    return nothing_compared()


def with_segments(check: OutputCheck, stable_url: str, candidate_url: str, model: str,
                  admin_token: str, keys: Sequence[str], *, batch_rows: int = 64) -> OutputCheck:
    """``check`` with, for each segment key in ``keys``, the replay of each segment's own
    sample of stable's reservoir (``segments``); a key stable keeps no samples by is left
    out, which the agreement rule reports."""
    from dataclasses import replace as replaced

    run = partial(replay, stable_url, candidate_url, model, batch_rows=batch_rows)
    found: dict[str, dict[str, OutputCheck]] = {}
    for key in keys:
        try:
            checks = segment_checks(stable_url, admin_token, key, run)
        except ServingError as exc:
            log.warning("%s: segments of %s not replayed: %s", model, key, exc)
            continue
        if checks is not None:
            found[key] = checks
    return replaced(check, segments=found) if found else check


def _rows(inputs: Mapping[str, Any]) -> int:
    rows = {np.asarray(array).shape[0] if np.ndim(array) else 0 for array in inputs.values()}
    if len(rows) != 1:
        raise DeployError(f"replayed inputs must share their first (batch) axis, got {sorted(rows)}")
    return rows.pop()


def _top1(outputs: Mapping[str, Array]) -> Array | None:
    """Argmax over the last axis of the first output with more than one class."""
    for array in outputs.values():
        values = np.asarray(array)
        if values.ndim >= 2 and values.shape[-1] > 1:
            top: Array = np.argmax(values, axis=-1).reshape(-1)
            return top
    return None
