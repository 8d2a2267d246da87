"""`workbench models publish` with --runtime, --config and --from, on the real OCR exports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from workbench import ModelRepository
from workbench.cli import app
from workbench.model.ocr_exports import OcrExports, write_legacy_configs

runner = CliRunner()


def test_publish_auto_then_a_settings_only_version(ocr_exports: OcrExports, tmp_path: Path) -> None:
    repo = ["--repo", str(tmp_path / "repo")]
    result = runner.invoke(
        app, ["models", "publish", "ocr-rec:5.0.0", str(ocr_exports.v5_rec), *repo, "--runtime", "auto"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "task text-recognition" in result.output
    assert "--runtime auto" in result.output and "chosen" in result.output
    chosen = ModelRepository(tmp_path / "repo").manifest("ocr-rec", "5.0.0").runtime
    assert chosen.onednn is not None and chosen.ir_optim is not None

    result = runner.invoke(app, ["models", "publish", "ocr-rec:5.0.1", "--from", "ocr-rec:5.0.0", *repo,
                                 "--runtime", "onednn=off,ir_optim=off,threads=2"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "runtime onednn=off,ir_optim=off,threads=2" in result.output
    result = runner.invoke(app, ["models", "show", "ocr-rec:5.0.1", *repo], env={"COLUMNS": "200"})
    assert "runtime: onednn=off,ir_optim=off,threads=2" in result.output
    assert "| CTCLabelDecode" in result.output


def test_bad_runtime_settings_and_missing_config_are_one_sentence(ocr_exports: OcrExports, tmp_path: Path) -> None:
    def publish(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "workbench", "models", "publish", *args, "--repo", str(tmp_path / "repo")]
        env = {**os.environ, "COLUMNS": "400"}
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, env=env)

    proc = publish("ocr-rec:5.0.0", str(ocr_exports.v5_rec), "--runtime", "onednn=maybe")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "error: runtime setting onednn is on or off, not 'maybe'" in proc.stderr
    proc = publish("ocr-det:4.0.0", str(ocr_exports.v4_det))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "has neither a sample input nor an inference.yml" in proc.stderr
    result = runner.invoke(app, ["models", "publish", "ocr-rec:5.0.1", "--from", "ocr-rec:5.0.0",
                                 "--repo", str(tmp_path / "repo")])
    assert result.exit_code != 0
    assert "give --runtime" in result.output
    assert not (tmp_path / "repo" / "ocr-det").exists() or not any((tmp_path / "repo" / "ocr-det").iterdir())


def test_publish_legacy_export_with_config(ocr_exports: OcrExports, tmp_path: Path) -> None:
    configs = write_legacy_configs(ocr_exports, tmp_path / "configs")
    result = runner.invoke(app, ["models", "publish", "ocr-cls:2.0.0", str(ocr_exports.v2_cls),
                                 "--repo", str(tmp_path / "repo"), "--config", str(configs["cls"])])
    assert result.exit_code == 0, result.output
    assert "task classification" in result.output
