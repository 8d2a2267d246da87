"""``--runtime auto``: choose a version's runtime settings by trying a few, at publish.

Each candidate (oneDNN on/off x IR optimisation on/off, over the settings the user
fixed) is loaded through the :class:`~workbench.model.probe.ModelProbe` and run on the
version's sample; the survivors stay loaded and are timed in turn, round after round.
A candidate that fails to load or run is dropped with Paddle's error sentence; one
whose outputs stray from the reference (the plain executor: oneDNN and IR
optimisation off) beyond a tolerance is dropped with how far it strayed. The
fastest remaining candidate (median over a few timed runs) becomes the version's
settings; every trial is recorded in the manifest's ``runtime_trials``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import PublishError, WorkbenchError
from workbench.model.probe import measure
from workbench.model.runtime_settings import RuntimeSettings, RuntimeTrial

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from workbench._types import TensorsIn
    from workbench.model.formats import ModelFiles
    from workbench.model.probe import ModelProbe, ProbeSession

RUNS = 7
# Untimed runs before timing (fewer when fewer timed runs are asked for): oneDNN and the
# executor build kernels and caches per shape, and the first few runs after a load
# measured several times slower than steady state.
WARMUP_RUNS = 5
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


def tuning_plan(base: RuntimeSettings) -> tuple[int, int]:
    """How many candidates :func:`tune` tries from ``base`` and how many timing rounds it
    runs: what a progress bar of a tuning counts besides the reference run."""
    return len(candidates(base)), RUNS


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

    Every candidate that loads stays loaded, is warmed up (:data:`WARMUP_RUNS`, at most
    ``runs``, at least 2) and
    checked against the reference; then the survivors are timed in turn, one run each
    per round for ``runs`` rounds, so a load spike on a shared machine hits them all
    alike. ``progress(done, total, trial)`` is called before the first step and after
    each (``trial`` is the finished trial of a candidate dropped or timed, else None).
    Raises PublishError when the reference or every candidate fails.
    """
    base = base or RuntimeSettings()
    tries = candidates(base)
    total = 1 + len(tries) + runs
    warmup = max(2, min(WARMUP_RUNS, runs))
    done = 0

    def step(trial: RuntimeTrial | None = None) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total, trial)

    if progress:
        progress(0, total, None)
    try:
        expected = measure(probe, files, sample, reference(base)).outputs
    except WorkbenchError as exc:
        raise PublishError(f"the model does not run even with oneDNN and IR optimisation off: {exc}") from exc
    step()
    dropped: dict[RuntimeSettings, RuntimeTrial] = {}
    sessions: dict[RuntimeSettings, ProbeSession] = {}
    seconds: dict[RuntimeSettings, list[float]] = {}
    try:
        for settings in tries:
            reason = _open_and_check(probe, files, sample, settings, expected, sessions, warmup)
            if reason:
                dropped[settings] = RuntimeTrial(settings, False, None, reason)
            step(dropped.get(settings))
        for _ in range(runs):
            for settings, session in list(sessions.items()):
                started = time.perf_counter()
                try:
                    session.run(sample)
                except WorkbenchError as exc:
                    dropped[settings] = RuntimeTrial(settings, False, None, str(exc))
                    sessions.pop(settings).close()
                    continue
                seconds.setdefault(settings, []).append(time.perf_counter() - started)
            step()
    finally:
        for session in sessions.values():
            session.close()
    trials = tuple(dropped.get(s) or RuntimeTrial(s, True, _p50_ms(seconds.get(s))) for s in tries)
    good = [t for t in trials if t.ok and t.p50_ms is not None]
    if not good:
        reasons = "; ".join(f"{t.settings}: {t.reason}" for t in trials)
        raise PublishError(f"no runtime settings ran the model correctly ({reasons})")
    best = min(good, key=lambda t: t.p50_ms or 0.0)
    return TuneResult(best.settings, trials)


def _p50_ms(seconds: list[float] | None) -> float | None:
    return statistics.median(seconds) * 1000 if seconds else None


def _open_and_check(
    probe: ModelProbe,
    files: ModelFiles,
    sample: TensorsIn,
    settings: RuntimeSettings,
    expected: Mapping[str, Any],
    sessions: dict[RuntimeSettings, ProbeSession],
    warmup: int,
) -> str:
    """Open ``settings``, warm it up and compare; keep it in ``sessions`` or say why not."""
    try:
        session = probe.open(files, settings)
    except WorkbenchError as exc:
        return str(exc)
    try:
        for _ in range(warmup):
            outputs = session.run(sample)
    except WorkbenchError as exc:
        session.close()
        return str(exc)
    disagreement = disagreement_with(expected, outputs)
    if disagreement:
        session.close()
        return disagreement
    sessions[settings] = session
    return ""


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
