from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

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
