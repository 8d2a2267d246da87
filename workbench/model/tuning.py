"""``--runtime auto``: choose a version's runtime settings by trying a few, at publish.

The search runs in two phases over the settings the user left open:

1. oneDNN on/off x IR optimisation on/off. Each candidate is loaded through the
   :class:`~workbench.model.probe.ModelProbe` and run on the version's sample; the
   survivors stay loaded and are timed in turn, round after round.
2. The neighbours of phase 1's fastest: memory optimisation switched on, and the CPU
   math threads raised to the cores this process may use (each only when the user did
   not fix it). They are loaded beside phase 1's survivors, and then *all* survivors are
   timed again together, so every recorded figure comes from the same window.

A candidate that fails to load or run is dropped with Paddle's error sentence; one
whose outputs stray from the reference (the plain executor: oneDNN and IR optimisation
off) beyond a tolerance is dropped with how far it strayed. The fastest survivor of
phase 2 (median over its timed runs) becomes the version's settings, unless one with
memory optimisation on is within :data:`MEMORY_TOLERANCE` of it (:func:`choose`); every
trial is recorded in the manifest's ``runtime_trials``.
"""

from __future__ import annotations

import os
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
# Phase 2 raises the threads to the usable cores, at most this many.
MAX_THREADS = 4
# Memory optimisation is chosen when its median is within this share of the fastest's:
# without it Paddle keeps every intermediate tensor at once, which costs little on the
# sample's shape but grows with the input (the PP-OCRv4 detector held 2.9 GB on a
# 736x2528 page without it, 0.76 GB with it, the same outputs).
MEMORY_TOLERANCE = 0.10
# |candidate - reference| <= ATOL + RTOL * |reference|, elementwise.
RTOL = 1e-3
ATOL = 1e-4


@dataclass(frozen=True)
class TuneResult:
    chosen: RuntimeSettings
    trials: tuple[RuntimeTrial, ...]


def candidates(base: RuntimeSettings) -> list[RuntimeSettings]:
    """Phase 1: oneDNN x IR optimisation, on and off, over ``base`` (at most four)."""
    found: list[RuntimeSettings] = []
    for onednn in (True, False):
        for ir_optim in (True, False):
            settings = replace(base, onednn=onednn, ir_optim=ir_optim)
            if settings not in found:
                found.append(settings)
    return found


def neighbours(best: RuntimeSettings, base: RuntimeSettings) -> list[RuntimeSettings]:
    """Phase 2: ``best`` with memory optimisation on, and with more CPU threads, each
    only where ``base`` (what the user fixed) leaves the setting open."""
    found: list[RuntimeSettings] = []
    if base.memory_optim is None:
        found.append(replace(best, memory_optim=True))
    threads = usable_threads()
    if base.cpu_threads is None and threads > 1:
        found.append(replace(best, cpu_threads=threads))
    return found


def usable_threads() -> int:
    """The cores this process may run on, at most :data:`MAX_THREADS`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_THREADS))


def tuning_steps(base: RuntimeSettings, runs: int = RUNS) -> list[str]:
    """What each step of :func:`tune` from ``base`` does, in order: the labels of a
    progress bar over a tuning (its length is the ``total`` that ``progress`` sees)."""
    first = len(candidates(base))
    second = len(neighbours(base, base))
    return [
        "reference run",
        *(f"candidate {i}/{first}" for i in range(1, first + 1)),
        *(f"timing round {i}/{runs}" for i in range(1, runs + 1)),
        *(f"neighbour {i}/{second}" for i in range(1, second + 1)),
        *(f"retiming {i}/{runs}" for i in range(1, runs + 1)),
    ]


def progress_label(done: int, total: int) -> str:
    """What a tuning from Paddle's defaults is doing after ``done`` of ``total`` steps."""
    steps = tuning_steps(RuntimeSettings())
    if done >= total:
        return "done"
    return steps[done] if len(steps) == total else f"step {done + 1}/{total}"


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
    """Try :func:`candidates`, then the :func:`neighbours` of the fastest, on ``sample``;
    keep the fastest that agrees with the reference.

    Every candidate that loads stays loaded, is warmed up (:data:`WARMUP_RUNS`, at most
    ``runs``, at least 2) and checked against the reference; the survivors are timed in
    turn, one run each per round for ``runs`` rounds, so a load spike on a shared
    machine hits them all alike. ``progress(done, total, trial)`` is called before the
    first step and after each of :func:`tuning_steps` (``trial`` is the finished trial
    of a candidate dropped, else None). Raises PublishError when the reference or every
    candidate fails.
    """
    base = base or RuntimeSettings()
    total = len(tuning_steps(base, runs))
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
    trial = _Trial(probe, files, sample, expected, warmup, step)
    try:
        first = candidates(base)
        trial.open_all(first)
        seconds = trial.time(runs)
        if not seconds:
            reasons = "; ".join(f"{t.settings}: {t.reason}" for t in trial.dropped.values())
            raise PublishError(f"no runtime settings ran the model correctly ({reasons})")
        best = min(seconds, key=lambda s: statistics.median(seconds[s]))
        second = [s for s in neighbours(best, base) if s not in first]
        trial.open_all(second)
        seconds = trial.time(runs)
    finally:
        trial.close()
    trials = tuple(
        trial.dropped.get(s) or RuntimeTrial(s, True, _p50_ms(seconds.get(s))) for s in (*first, *second)
    )
    good = [t for t in trials if t.ok and t.p50_ms is not None]
    if not good:
        reasons = "; ".join(f"{t.settings}: {t.reason}" for t in trials)
        raise PublishError(f"no runtime settings ran the model correctly ({reasons})")
    return TuneResult(choose(good).settings, trials)


def choose(good: Sequence[RuntimeTrial]) -> RuntimeTrial:
    """The fastest of ``good`` (trials that ran correctly, timed), or the fastest with
    memory optimisation on when its median is within :data:`MEMORY_TOLERANCE` of it."""
    fastest = min(good, key=lambda t: t.p50_ms or 0.0)
    lean = [t for t in good if t.settings.memory_optim
            and (t.p50_ms or 0.0) <= (fastest.p50_ms or 0.0) * (1.0 + MEMORY_TOLERANCE)]
    return min(lean, key=lambda t: t.p50_ms or 0.0) if lean else fastest


class _Trial:
    """The candidates loaded so far, the dropped ones with their reasons, and timing."""

    def __init__(
        self,
        probe: ModelProbe,
        files: ModelFiles,
        sample: TensorsIn,
        expected: Mapping[str, Any],
        warmup: int,
        step: Callable[[RuntimeTrial | None], None],
    ) -> None:
        self.probe, self.files, self.sample, self.expected = probe, files, sample, expected
        self.warmup, self.step = warmup, step
        self.sessions: dict[RuntimeSettings, ProbeSession] = {}
        self.dropped: dict[RuntimeSettings, RuntimeTrial] = {}

    def open_all(self, tries: Sequence[RuntimeSettings]) -> None:
        for settings in tries:
            reason = _open_and_check(
                self.probe, self.files, self.sample, settings, self.expected, self.sessions, self.warmup
            )
            if reason:
                self.dropped[settings] = RuntimeTrial(settings, False, None, reason)
            self.step(self.dropped.get(settings))

    def time(self, runs: int) -> dict[RuntimeSettings, list[float]]:
        """Time every loaded candidate in turn, ``runs`` rounds; a run that fails drops it."""
        seconds: dict[RuntimeSettings, list[float]] = {}
        for _ in range(runs):
            for settings, session in list(self.sessions.items()):
                started = time.perf_counter()
                try:
                    session.run(self.sample)
                except WorkbenchError as exc:
                    self.dropped[settings] = RuntimeTrial(settings, False, None, str(exc))
                    self.sessions.pop(settings).close()
                    seconds.pop(settings, None)
                    continue
                seconds.setdefault(settings, []).append(time.perf_counter() - started)
            self.step(None)
        return seconds

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()


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
