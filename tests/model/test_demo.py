from __future__ import annotations

from pathlib import Path

from workbench import ModelRepository, build_demo_repository


def test_demo_training_is_deterministic_and_ordered(demo_repo: Path, tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []
    fresh = build_demo_repository(tmp_path / "repo", models=["digits"],
                                  progress=lambda demo, status: seen.append((demo.version, status)))
    assert seen == [(v, s) for v in ("1.0.0", "1.1.0", "1.2.0") for s in ("start", "done")]
    cached = ModelRepository(demo_repo)
    accuracy = {}
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        ours, theirs = fresh.manifest("digits", version), cached.manifest("digits", version)
        # Same weights and sample, byte for byte. The program JSON also carries layer
        # scope names (/Linear_1/) numbered by what the process built before, so it is
        # compared by what it computes, through the accuracy.
        weights = {f.path: f.sha256 for f in ours.files if not f.path.endswith(".json")}
        assert weights == {f.path: f.sha256 for f in theirs.files if not f.path.endswith(".json")}
        assert ours.metrics == theirs.metrics
        accuracy[version] = ours.metrics["accuracy"]
    # baseline, better, deliberately degraded
    assert accuracy["1.2.0"] < accuracy["1.0.0"] < accuracy["1.1.0"]
    assert accuracy["1.1.0"] > 0.95
