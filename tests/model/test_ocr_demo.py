"""`workbench models demo ocr`: the five real exports tuned and published, and two pipelines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from typer.testing import CliRunner

from workbench import ModelRepository
from workbench.cli import app
from workbench.model.signing import generate_keypair
from workbench.model.task import Task

if TYPE_CHECKING:
    from workbench.model.ocr_exports import OcrExports

runner = CliRunner()


def test_demo_ocr_publishes_tuned_signed_exports_and_pipelines(ocr_exports: OcrExports, tmp_path: Path) -> None:
    private, public = tmp_path / "key.pem", tmp_path / "key.pub"
    generate_keypair(private, public)
    repo = ["--repo", str(tmp_path / "repo")]
    result = runner.invoke(app, ["models", "demo", "ocr", *repo, "--sign-key", str(private)],
                           env={"COLUMNS": "200", "WORKBENCH_CI_CACHE": str(ocr_exports.root.parent)})
    assert result.exit_code == 0, result.output
    for label in ("ocr-det:5.0.0", "ocr-rec:5.0.0", "ocr-det:4.0.0", "ocr-rec:4.0.0", "ocr-cls:2.0.0",
                  "ocr:5.0.0", "ocr:4.0.0"):
        assert f"published {label}" in result.output

    repository = ModelRepository(tmp_path / "repo", verify_key=public)
    det5 = repository.verify("ocr-det", "5.0.0")
    assert det5.task is Task.TEXT_DETECTION and det5.runtime.onednn is False
    dropped = [t for t in det5.runtime_trials if not t.ok]  # oneDNN, and memory optimisation
    assert all("ConvertPirAttribute2RuntimeAttribute" in t.reason for t in dropped if t.settings.onednn)
    assert all("memory_optimize_pass" in t.reason for t in dropped if not t.settings.onednn)
    assert repository.verify("ocr-cls", "2.0.0").task is Task.CLASSIFICATION
    pipeline = repository.verify_pipeline("ocr", "4.0.0")
    assert [(s.role, s.ref, s.task) for s in pipeline.stages] == [
        ("det", "ocr-det:4.0.0", "text-detection"),
        ("cls", "ocr-cls:2.0.0", "classification"),
        ("rec", "ocr-rec:4.0.0", "text-recognition"),
    ]
    result = runner.invoke(app, ["models", "verify", "all", *repo, "--key", str(public)])
    assert result.exit_code == 0, result.output
    assert result.output.count("signature verified") == 7

    # a second run keeps everything
    result = runner.invoke(app, ["models", "demo", "ocr", *repo], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "published" not in result.output and result.output.count("kept ") == 7
    rows = json.loads(runner.invoke(app, ["models", "list", *repo, "--json"]).output)
    assert sorted((r["model"], r["version"], r["format"]) for r in rows)[:2] == [
        ("ocr", "4.0.0", "pipeline"), ("ocr", "5.0.0", "pipeline"),
    ]
