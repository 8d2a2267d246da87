from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests._python import NO_PADDLE, run_python
from workbench.cli import app
from workbench.model.demo import digits_dataset


def test_compare_reports_accuracy_and_agreement(demo_repo: Path, tmp_path: Path) -> None:
    _, _, x, y = digits_dataset()
    np.savez(tmp_path / "test.npz", x=x[:200], labels=y[:200])
    result = CliRunner().invoke(app, ["compare", "digits", "stable", "canary", "--repo", str(demo_repo),
                                      "--data", str(tmp_path / "test.npz"), "--batch-size", "20",
                                      "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["versions"] == ["1.0.0", "1.1.0"]
    assert report["rows"] == 200
    assert 0.8 < report["accuracy"]["1.1.0"] <= 1.0
    pair = report["agreement"][0]
    assert (pair["a"], pair["b"]) == ("1.0.0", "1.1.0")
    assert pair["top1_agreement"] == pytest.approx(1 - len(report["disagreements"]) / 200)


def test_compare_rejects_unknown_versions(demo_repo: Path) -> None:
    result = CliRunner().invoke(app, ["compare", "digits", "9.9.9", "--repo", str(demo_repo)])
    assert result.exit_code != 0


def test_compare_in_worker_processes_runs_them_at_once_without_importing_paddle(
    demo_repo: Path, tmp_path: Path
) -> None:
    """The CLI is a front too: ``--isolation process`` keeps Paddle out of its process."""
    _, _, x, y = digits_dataset()
    np.savez(tmp_path / "test.npz", x=x[:300], labels=y[:300])
    script = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from workbench.cli import app\n"
        f"result = CliRunner().invoke(app, ['compare', 'digits', '1.0.0', '1.1.0', '--repo', {str(demo_repo)!r},\n"
        f"    '--data', {str(tmp_path / 'test.npz')!r}, '--isolation', 'process', '--json'])\n"
        "assert result.exit_code == 0, result.output\n" + NO_PADDLE + "print(result.output)\n"
    )
    report = json.loads(run_python(script, timeout=300))
    assert report["rows"] == 300 and 0.8 < report["accuracy"]["1.1.0"] <= 1.0
    assert report["overlap"] > 1.2, report["overlap"]  # the two versions ran at the same time


def test_compare_rejects_an_unknown_isolation(demo_repo: Path) -> None:
    result = CliRunner().invoke(app, ["compare", "digits", "1.0.0", "--repo", str(demo_repo),
                                      "--isolation", "fork"])
    assert result.exit_code == 2
    assert "--isolation must be process, thread or auto" in result.output


def test_compare_judges_the_task_score_against_a_threshold(demo_repo: Path, tmp_path: Path) -> None:
    _, _, x, y = digits_dataset()
    np.savez(tmp_path / "test.npz", x=x[:200], labels=y[:200])
    result = CliRunner().invoke(app, ["compare", "digits", "1.0.0", "1.1.0", "1.2.0", "--repo",
                                      str(demo_repo), "--data", str(tmp_path / "test.npz"),
                                      "--batch-size", "50", "--device", "cpu",
                                      "--threshold", "top1>=0.85", "--min-rows", "100", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["task"] == "classification"
    by_pair = {(p["a"], p["b"]): p["scores"][0] for p in report["scores"]}
    agreement = {(p["a"], p["b"]): p["top1_agreement"] for p in report["agreement"]}
    for pair, score in by_pair.items():
        # the task score is today's top-1 agreement, with its interval and a verdict
        assert score["metric"] == "top1" and score["value"] == pytest.approx(agreement[pair])
        low, high = score["interval"]
        assert low <= score["value"] <= high and score["n"] == 200
        assert score["threshold"] == "top1>=0.85"
    # the demo's degraded 1.2.0 agrees with 1.0.0 on about three rows in four: a clear fail
    assert by_pair[("1.0.0", "1.2.0")]["verdict"] == "fail"


def test_compare_rejects_a_threshold_in_the_wrong_direction(demo_repo: Path) -> None:
    result = CliRunner().invoke(app, ["compare", "digits", "1.0.0", "--repo", str(demo_repo),
                                      "--threshold", "cer>=0.05"])
    assert result.exit_code == 2
    assert "cer is bounded with <=" in result.output


@pytest.mark.slow
def test_compare_reads_text_recognisers_through_their_codecs(tmp_path: Path) -> None:
    """PP-OCRv5's recogniser (a PaddleX export) against PP-OCRv4's (published with the
    config written from RapidOCR's settings): the manifests say text-recognition, the
    codecs decode, and the scores are CER and exact match."""
    from tests.codecs._ocr import require_exports
    from tests.runtime.test_scoring_ocr import text_lines
    from workbench.model.ocr_exports import write_legacy_configs
    from workbench.model.repository import ModelRepository
    from workbench.runtime.paddle import PaddleProbe

    exports = require_exports()  # fetched into the cache when missing; a failure under CI=true
    texts, images = text_lines(40, seed=3)
    repo = ModelRepository(tmp_path / "repo")
    probe = PaddleProbe()
    repo.publish("rec", "1.0.0", exports.v5_rec, probe=probe)
    configs = write_legacy_configs(exports, tmp_path / "configs")
    repo.publish("rec", "2.0.0", exports.v4_rec, config=configs["rec"], probe=probe)
    np.savez(tmp_path / "lines.npz", x=images, labels=np.array(texts))
    result = CliRunner().invoke(app, ["compare", "rec", "1.0.0", "2.0.0", "--repo",
                                      str(tmp_path / "repo"), "--data", str(tmp_path / "lines.npz"),
                                      "--batch-size", "8", "--device", "cpu", "--isolation", "thread",
                                      "--threshold", "cer<=0.05", "--min-rows", "32", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["task"] == "text-recognition" and report["rows"] == 40
    (pair,) = report["scores"]
    cer, exact = pair["scores"]
    assert (cer["metric"], cer["threshold"], cer["verdict"]) == ("cer", "cer<=0.05", "pass")
    assert exact["metric"] == "exact_match" and exact["value"] > 0.8
    for version in ("1.0.0", "2.0.0"):
        truth_cer = report["truth"][version][0]
        assert truth_cer["metric"] == "cer" and truth_cer["value"] < 0.03, truth_cer
    # the disagreeing rows are those read differently
    assert len(report["disagreements"]) == round((1 - exact["value"]) * 40)
