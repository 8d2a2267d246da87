"""Replay the same inputs to the stable and candidate instances and compare their answers.

The inputs, best first: a labelled set when one is given (``.npz`` with the model's
inputs and a ``labels`` array, so accuracy is measured too), else the stable
instance's reservoir sample of real request rows (``GET /v2/admin/reservoir``, admin
token), else the manifest's sample of the stable version. :func:`replay` sends them in
batches to both instances and returns an :class:`~workbench.deploy.rollout.signals.OutputCheck`:
top-1 agreement (argmax over the last axis of the first classification output) and
accuracy against the labels.

A batch the stable instance cannot answer is left out (it says nothing about the
candidate); a batch the candidate cannot answer counts as disagreeing on every row (it
did not give the stable answer), and its rows are counted as ``unanswered`` too, so a
verdict can say the candidate failed rather than disagreed. No rows compared means ``agreement=None``: an
unreadable sample never passes as agreement.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.deploy.rollout.signals import OutputCheck
from workbench.errors import DeployError, ServingError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from workbench._types import Array, StrPath

__all__ = ["fetch_reservoir", "load_labelled", "output_check", "replay"]

log = logging.getLogger(__name__)
LABELS = "labels"


def fetch_reservoir(url: str, admin_token: str, *, timeout: float = 10.0) -> dict[str, Array]:
    """The reservoir sample of the instance at ``url`` (empty when it holds no rows)."""
    import httpx

    try:
        response = httpx.get(f"{url.rstrip('/')}/v2/admin/reservoir", timeout=timeout,
                             headers={"Authorization": f"Bearer {admin_token}"})
        doc = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ServingError(f"cannot read the reservoir of {url}: {exc}") from exc
    if response.status_code != 200:
        raise ServingError(f"{url} refused its reservoir ({response.status_code}): "
                           f"{doc.get('error', '') if isinstance(doc, dict) else ''}")
    from workbench.deploy.client import decode_outputs

    try:
        return decode_outputs({"outputs": doc.get("inputs", [])})
    except (KeyError, TypeError, ValueError) as exc:
        raise ServingError(f"malformed reservoir from {url}: {exc}") from exc


def load_labelled(path: StrPath) -> tuple[dict[str, Array], Array]:
    """Inputs and labels from an ``.npz`` holding the model's inputs and a ``labels`` array."""
    file = Path(path)
    try:
        with np.load(file, allow_pickle=False) as archive:
            arrays = {name: np.asarray(archive[name]) for name in archive.files}
    except (OSError, ValueError) as exc:
        raise DeployError(f"cannot read the labelled set {file}: {exc}") from exc
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
) -> OutputCheck:
    """Send ``inputs`` (rows along axis 0) to both instances in batches and compare."""
    from workbench.deploy.client import ServingClient

    rows = _rows(inputs)
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    compared = agreed = stable_right = candidate_right = unanswered = 0
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
                log.warning("%s: stable could not answer a replayed batch: %s", model, exc)
                continue
            if want is None:
                break  # no classification output: nothing to compare top-1 on
            try:
                got = _top1(candidate.infer(model, batch).outputs)
            except ServingError as exc:
                log.info("%s: candidate failed a replayed batch: %s", model, exc)
                got = None
                unanswered += count
            compared += count
            if got is not None and got.shape == want.shape:
                agreed += int((got == want).sum())
            if labels is not None:
                truth = labels[start : start + count]
                stable_right += int((want == truth).sum())
                if got is not None and got.shape == want.shape:
                    candidate_right += int((got == truth).sum())
    if not compared:
        return OutputCheck(rows=0, agreement=None, accuracy_stable=None, accuracy_candidate=None)
    return OutputCheck(
        rows=compared,
        agreement=agreed / compared,
        accuracy_stable=stable_right / compared if labels is not None else None,
        accuracy_candidate=candidate_right / compared if labels is not None else None,
        unanswered=unanswered,
    )


def output_check(
    stable_url: str,
    candidate_url: str,
    model: str,
    *,
    labelled: StrPath | None = None,
    admin_token: str | None = None,
    sample: Mapping[str, Array] | None = None,
    batch_rows: int = 64,
) -> OutputCheck:
    """Replay the best inputs there are: the labelled set, else the stable instance's
    reservoir (with ``admin_token``), else ``sample`` (e.g. the manifest's)."""
    if labelled is not None:
        inputs, labels = load_labelled(labelled)
        return replay(stable_url, candidate_url, model, inputs, labels=labels,
                      batch_rows=batch_rows)
    if admin_token is not None:
        try:
            reservoir = fetch_reservoir(stable_url, admin_token)
        except ServingError as exc:
            log.warning("%s: %s; falling back to the sample", model, exc)
            reservoir = {}
        if reservoir:
            return replay(stable_url, candidate_url, model, reservoir, batch_rows=batch_rows)
    if sample:
        return replay(stable_url, candidate_url, model, sample, batch_rows=batch_rows)
    return OutputCheck(rows=0, agreement=None, accuracy_stable=None, accuracy_candidate=None)


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
