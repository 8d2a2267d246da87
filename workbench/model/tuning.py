"""``--runtime auto``: choose a version's runtime settings by trying a few, at publish.

Each candidate (oneDNN on/off x IR optimisation on/off, over the settings the user
fixed) is loaded through the :class:`~workbench.model.probe.ModelProbe` and run on the
version's sample. A candidate that fails to load or run is dropped with Paddle's
error sentence; one whose outputs stray from the reference (the plain executor:
oneDNN and IR optimisation off) beyond a tolerance is dropped with how far it
strayed. The fastest remaining candidate (median over a few timed runs) becomes the
version's settings; every trial is recorded in the manifest's ``runtime_trials``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import PublishError, WorkbenchError
from workbench.model.runtime_settings import RuntimeSettings, RuntimeTrial

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from workbench._types import TensorsIn
    from workbench.model.formats import ModelFiles
    from workbench.model.probe import ModelProbe

RUNS = 5
# |candidate - reference| <= ATOL + RTOL * |reference|, elementwise.
RTOL = 1e-3
ATOL = 1e-4


@dataclass(frozen=True)
class TuneResult:
    chosen: RuntimeSettings
    trials: tuple[RuntimeTrial, ...]


def candidates(base: RuntimeSettings) -> list[RuntimeSettings]:
    """oneDNN x IR optimisation, on and off, over ``base`` (bounded: at most four)."""
    found: list[RuntimeSettings] = []
    for onednn in (True, False):
        for ir_optim in (True, False):
            settings = replace(base, onednn=onednn, ir_optim=ir_optim)
            if settings not in found:
                found.append(settings)
    return found


def reference(base: RuntimeSettings) -> RuntimeSettings:
    """The plainest way to run a model: oneDNN and IR optimisation off."""
    return replace(base, onednn=False, ir_optim=False)


def tune(
    probe: ModelProbe,
    files: ModelFiles,
    sample: TensorsIn,
    *,
    base: RuntimeSettings | None = None,
    runs: int = RUNS,
    progress: Callable[[int, int, RuntimeTrial | None], None] | None = None,
) -> TuneResult:
    """Try :func:`candidates` on ``sample``; keep the fastest that agrees with the reference.

    ``progress(done, total, trial)`` is called before the first step (``trial`` None)
    and after each. Raises PublishError when the reference or every candidate fails.
    """
    base = base or RuntimeSettings()
    tries = candidates(base)
    total = len(tries) + 1
    if progress:
        progress(0, total, None)
    try:
        expected = probe.measure(files, sample, reference(base)).outputs
    except WorkbenchError as exc:
        raise PublishError(f"the model does not run even with oneDNN and IR optimisation off: {exc}") from exc
    if progress:
        progress(1, total, None)
    trials: list[RuntimeTrial] = []
    for done, settings in enumerate(tries, start=2):
        trials.append(_trial(probe, files, sample, settings, expected, runs))
        if progress:
            progress(done, total, trials[-1])
    good = [t for t in trials if t.ok and t.p50_ms is not None]
    if not good:
        reasons = "; ".join(f"{t.settings}: {t.reason}" for t in trials)
        raise PublishError(f"no runtime settings ran the model correctly ({reasons})")
    best = min(good, key=lambda t: t.p50_ms or 0.0)
    return TuneResult(best.settings, tuple(trials))


def _trial(
    probe: ModelProbe,
    files: ModelFiles,
    sample: TensorsIn,
    settings: RuntimeSettings,
    expected: Mapping[str, Any],
    runs: int,
) -> RuntimeTrial:
    try:
        measured = probe.measure(files, sample, settings, runs=runs)
    except WorkbenchError as exc:
        return RuntimeTrial(settings, False, None, str(exc))
    disagreement = disagreement_with(expected, measured.outputs)
    if disagreement:
        return RuntimeTrial(settings, False, measured.p50_ms, disagreement)
    return RuntimeTrial(settings, True, measured.p50_ms)


def disagreement_with(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> str:
    """Why ``actual`` differs from ``expected`` beyond the tolerance; empty when it agrees."""
    missing: Sequence[str] = sorted(set(expected) - set(actual))
    if missing:
        return f"outputs {list(missing)} are missing"
    for name, want in expected.items():
        want, got = np.asarray(want), np.asarray(actual[name])
        if want.shape != got.shape:
            return f"output {name!r} has shape {got.shape}, the reference {want.shape}"
        if not np.issubdtype(want.dtype, np.number) or np.issubdtype(want.dtype, np.integer):
            if not np.array_equal(want, got):
                return f"output {name!r} differs from the reference"
            continue
        a, b = want.astype(np.float64), got.astype(np.float64)
        if not np.all(np.isfinite(b)):
            return f"output {name!r} is not finite"
        if not np.allclose(b, a, rtol=RTOL, atol=ATOL):
            worst = float(np.max(np.abs(b - a))) if a.size else 0.0
            return (
                f"output {name!r} differs from the reference by up to {worst:.3g} "
                f"(tolerance {ATOL:g} + {RTOL:g} x |reference|)"
            )
    return ""
