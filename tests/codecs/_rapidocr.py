"""RapidOCR's own pipeline in an environment of its own, run over image files.

``rapidocr-paddle`` 1.4.5 needs ``opencv-python``, numpy < 3 and Python < 3.13, and
imports Paddle's inference API itself, so it is not installed into the project's
environment: :func:`rapidocr_env` builds a separate one with ``uv`` from the pinned
``rapidocr-requirements.txt`` (its wheels only, ``--no-deps``), once, under
``$WORKBENCH_CI_CACHE/rapidocr-env`` (else ``$XDG_CACHE_HOME/workbench/rapidocr-env``,
``~/.cache/workbench``), one directory per requirements file and Python version.
:func:`run_rapidocr` runs ``_rapidocr_runner.py`` with that environment's python on image
files and returns RapidOCR's lines and per-image latencies (JSON over stdout).

CI builds it in its setup (``python -m tests.codecs._rapidocr``, .ci/run); tests call
:func:`require_rapidocr` (skip with the reason when it cannot be built, fail under CI=true).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock

from workbench.model.ocr_exports import cache_dir

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "rapidocr-requirements.txt"
RUNNER = HERE / "_rapidocr_runner.py"
COMPLETE = ".complete"
Line = tuple[str, np.ndarray, float]  # text, box (4, 2), score


class EnvError(RuntimeError):
    """The RapidOCR environment could not be built or its runner failed."""


@dataclass(frozen=True)
class RapidLine:
    """One line RapidOCR found: its box (4 corners, clockwise from top-left), text and score."""

    box: list[list[float]]
    text: str
    score: float


@dataclass(frozen=True)
class RapidRun:
    """RapidOCR's answer for a list of images (see :func:`run_rapidocr`)."""

    lines: list[list[RapidLine]]
    seconds: list[list[float]]
    versions: dict[str, str]
    load_seconds: float
    peak_rss: int | None = None  # the runner's peak resident memory, bytes


def cache_root() -> Path:
    """Beside the fetched exports: ``$WORKBENCH_CI_CACHE`` or ``~/.cache/workbench``."""
    return cache_dir().with_name("rapidocr-env")


def _base_python() -> tuple[str, str]:
    """The interpreter to build on and its version: this one when rapidocr-paddle supports
    it (Python < 3.13), else a 3.12 that uv finds."""
    if sys.version_info < (3, 13):
        return sys.executable, f"{sys.version_info[0]}.{sys.version_info[1]}"
    return "3.12", "3.12"


def rapidocr_env(root: Path | None = None, *, timeout: float = 1800) -> Path:
    """The python of the RapidOCR environment, built first when missing (see the module docstring).

    The build happens under a file lock into ``<root>/<key>``; a directory without its
    ``.complete`` marker (an interrupted build) is removed and built again.
    """
    root = Path(root) if root is not None else cache_root()
    base, version = _base_python()
    key = hashlib.sha256(REQUIREMENTS.read_bytes() + version.encode()).hexdigest()[:12]
    env = root / f"py{version}-{key}"
    python = env / "bin" / "python"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".build.lock"), timeout=timeout):
        if (env / COMPLETE).exists():
            return python
        uv = shutil.which("uv")
        if uv is None:
            raise EnvError("uv is not on PATH: it builds the RapidOCR environment (pip install uv)")
        shutil.rmtree(env, ignore_errors=True)
        steps = [
            [uv, "venv", "--quiet", "--python", base, str(env)],
            [uv, "pip", "install", "--quiet", "--no-deps", "--python", str(python), "-r", str(REQUIREMENTS)],
        ]
        for command in steps:
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                shutil.rmtree(env, ignore_errors=True)
                raise EnvError(f"`{' '.join(command)}` failed: {exc}") from exc
            if done.returncode != 0:
                shutil.rmtree(env, ignore_errors=True)
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise EnvError(f"`{' '.join(command)}` failed: {last}")
        (env / COMPLETE).write_text(REQUIREMENTS.read_text(encoding="utf-8"), encoding="utf-8")
    return python


def run_rapidocr(python: Path, images: list[Path], *, rounds: int = 1, warmup: bool = False,
                 threads: int = 1, timeout: float = 1800) -> RapidRun:
    """RapidOCR's pipeline on ``images`` (files) in the environment of ``python``."""
    request = {"images": [str(p) for p in images], "rounds": rounds, "warmup": warmup, "threads": threads}
    env = {**os.environ, "GLOG_minloglevel": "3", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    try:
        done = subprocess.run([str(python), str(RUNNER)], input=json.dumps(request), capture_output=True,
                              text=True, timeout=timeout, check=False, env=env, cwd=tempfile.gettempdir())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvError(f"the RapidOCR runner failed: {exc}") from exc
    if done.returncode != 0:
        raise EnvError(f"the RapidOCR runner exited with {done.returncode}: {done.stderr[-2000:]}")
    answer = json.loads(done.stdout)
    return RapidRun(
        lines=[[RapidLine(line["box"], line["text"], line["score"]) for line in image["lines"]]
               for image in answer["images"]],
        seconds=[image["seconds"] for image in answer["images"]],
        versions={"rapidocr-paddle": answer["rapidocr"], "paddlepaddle": answer["paddle"]},
        load_seconds=answer["load_seconds"],
        peak_rss=answer.get("peak_rss"),
    )


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two quadrilaterals."""
    from shapely.geometry import Polygon

    pa, pb = Polygon(a), Polygon(b)
    union = pa.union(pb).area
    return float(pa.intersection(pb).area / union) if union else 0.0


def match(ours: Sequence[Line], theirs: Sequence[Line]) -> tuple[list[tuple[Line, Line, float]], list[Line],
                                                                    list[Line]]:
    """Pairs of lines by box IoU, best first, each line used once; the lines left on each side."""
    scored = sorted(((iou(a[1], b[1]), i, j) for i, a in enumerate(ours) for j, b in enumerate(theirs)),
                    reverse=True)
    pairs, used_a, used_b = [], set(), set()
    for value, i, j in scored:
        if value > 0 and i not in used_a and j not in used_b:
            pairs.append((ours[i], theirs[j], value))
            used_a.add(i)
            used_b.add(j)
    return (pairs, [a for i, a in enumerate(ours) if i not in used_a],
            [b for j, b in enumerate(theirs) if j not in used_b])


def same_lines(ours: Sequence[Line], theirs: Sequence[Line], min_iou: float = 0.9) -> bool:
    """Every line has a partner with the same text and box IoU >= ``min_iou``, none left over."""
    pairs, left, right = match(ours, theirs)
    return not left and not right and all(a[0] == b[0] and value >= min_iou for a, b, value in pairs)


def as_lines(run: RapidRun) -> list[list[Line]]:
    """RapidOCR's lines as (text, box, score)."""
    return [[(line.text, np.array(line.box, np.float32), line.score) for line in found] for found in run.lines]


def require_rapidocr() -> Path:
    """The RapidOCR environment's python; the test skips (fails under CI=true) without it."""
    from tests._components import require

    try:
        return rapidocr_env()
    except EnvError as exc:
        require("the RapidOCR environment (rapidocr-paddle 1.4.5)", False, str(exc))
        raise


if __name__ == "__main__":
    print(f"RapidOCR environment: {rapidocr_env()}")
