from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from workbench import ModelRepository


def _demo(repo: Path) -> ModelRepository:
    env = {**os.environ, "GLOG_minloglevel": "3"}
    proc = subprocess.run([sys.executable, "-m", "workbench", "models", "demo", "--model", "digits",
                           "--repo", str(repo)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("published digits") == 3
    return ModelRepository(repo)


def test_demo_training_is_reproducible_and_ordered(tmp_path: Path) -> None:
    """Two fresh `workbench models demo` runs publish the same weights and accuracies.

    (Within one long-lived process, float summation order can depend on what ran
    before, so each build gets a fresh process, as a user's command does.)
    """
    first, second = _demo(tmp_path / "a"), _demo(tmp_path / "b")
    accuracy = {}
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        ours, theirs = first.manifest("digits", version), second.manifest("digits", version)
        # Same weights and sample, byte for byte; the program JSON also carries layer
        # scope names numbered by process history, so it is compared by its accuracy.
        weights = {f.path: f.sha256 for f in ours.files if not f.path.endswith(".json")}
        assert weights == {f.path: f.sha256 for f in theirs.files if not f.path.endswith(".json")}
        assert ours.metrics == theirs.metrics
        accuracy[version] = ours.metrics["accuracy"]
        # a sample large enough to judge agreement on, and an output with a real name
        assert first.sample("digits", version)["x"].shape == (400, 64)
        assert [t.name for t in ours.outputs] == ["probabilities"]
    # baseline, better, deliberately degraded
    assert accuracy["1.2.0"] < accuracy["1.0.0"] < accuracy["1.1.0"]
    assert accuracy["1.1.0"] > 0.95
