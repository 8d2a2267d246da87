"""``workbench models`` through typer's CliRunner, and the console script's startup cost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from workbench.cli import app

runner = CliRunner()


def test_list_and_show_as_json(demo_repo: Path) -> None:
    result = runner.invoke(app, ["models", "list", "--repo", str(demo_repo), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert {(r["model"], r["version"]) for r in rows} >= {("digits", "1.0.0"), ("resnet", "1.0.0")}
    stable = next(r for r in rows if r["version"] == "1.0.0" and r["model"] == "digits")
    assert stable["aliases"] == ["stable"]
    result = runner.invoke(app, ["models", "show", "digits@canary", "--repo", str(demo_repo), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["version"] == "1.1.0"


def test_list_marks_a_misplaced_copy_and_lists_the_rest(demo_repo: Path, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(demo_repo, root, ignore=shutil.ignore_patterns(".complete"))
    shutil.copytree(root / "digits" / "1.2.0", root / "digits" / "1.3.0")  # manifest and all
    result = runner.invoke(app, ["models", "list", "--repo", str(root), "--json"])
    assert result.exit_code == 0, result.output
    rows = {(r["model"], r["version"]): r for r in json.loads(result.output)}
    assert set(rows) == {("digits", "1.0.0"), ("digits", "1.1.0"), ("digits", "1.2.0"),
                         ("digits", "1.3.0"), ("resnet", "1.0.0")}
    bad = rows["digits", "1.3.0"]
    assert bad["problem"] == "misplaced: manifest says digits:1.2.0, directory is digits:1.3.0"
    assert bad["format"] is None and bad["created"] is None
    assert all(r["problem"] is None and r["format"] for key, r in rows.items() if key != ("digits", "1.3.0"))

    result = runner.invoke(app, ["models", "list", "--repo", str(root)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "✗ misplaced" in result.output
    assert "digits:1.3.0 misplaced: manifest says digits:1.2.0, directory is digits:1.3.0" in result.output
    assert "accuracy=0.9704" in result.output  # 1.1.0, a good row, with its metrics
    assert max(len(line) for line in result.output.splitlines()) <= 80


def test_list_marks_a_manifest_that_is_not_an_object_or_lacks_a_field(demo_repo: Path, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(demo_repo, root, ignore=shutil.ignore_patterns(".complete"))
    shutil.copytree(root / "digits" / "1.2.0", root / "digits" / "1.3.0")
    (root / "digits" / "1.3.0" / "workbench.json").write_text("[]\n")
    shutil.copytree(root / "digits" / "1.2.0", root / "digits" / "1.4.0")
    manifest = json.loads((root / "digits" / "1.4.0" / "workbench.json").read_text())
    del manifest["files"]
    manifest["version"] = "1.4.0"
    (root / "digits" / "1.4.0" / "workbench.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["models", "list", "--repo", str(root), "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["version"]: r for r in json.loads(result.output) if r["model"] == "digits"}
    assert rows["1.3.0"]["problem"] == "unreadable: invalid manifest: a JSON object expected, not list"
    assert rows["1.4.0"]["problem"] == "unreadable: invalid manifest: the field 'files' is missing"
    assert rows["1.1.0"]["problem"] is None


def test_list_fails_when_no_version_can_be_read(demo_repo: Path, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(demo_repo / "digits" / "1.2.0", root / "digits" / "2.0.0")
    result = runner.invoke(app, ["models", "list", "--repo", str(root), "--json"])
    assert result.exit_code == 5
    [row] = json.loads(result.output)
    assert row["problem"].startswith("misplaced: manifest says digits:1.2.0")


def test_publish_alias_sign_and_verify(repo_copy: Path, tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    for name in ("inference.json", "inference.pdiparams"):
        (export / name).write_bytes((repo_copy / "digits" / "1.1.0" / name).read_bytes())
    np.save(tmp_path / "sample.npy", np.zeros((3, 64), np.float32))
    repo = ["--repo", str(repo_copy)]
    result = runner.invoke(app, ["models", "publish", "digits:2.0.0", str(export), *repo,
                                 "--sample", str(tmp_path / "sample.npy"), "--input", "x:float32:?,64",
                                 "--metric", "accuracy=0.97", "--alias", "next"])
    assert result.exit_code == 0, result.output
    assert "published digits:2.0.0" in result.output
    result = runner.invoke(app, ["models", "alias", "digits", "stable", "2.0.0", *repo])
    assert result.exit_code == 0 and "digits@stable → 2.0.0" in result.output
    private, public = tmp_path / "k.pem", tmp_path / "k.pub"
    assert runner.invoke(app, ["models", "keygen", str(private), str(public)]).exit_code == 0
    assert runner.invoke(app, ["models", "sign", "digits:2.0.0", *repo, "--key", str(private)]).exit_code == 0
    result = runner.invoke(app, ["models", "verify", "digits@stable", *repo, "--key", str(public)])
    assert result.exit_code == 0 and "signature verified" in result.output
    # 1.0.0 is unsigned: with a key configured, verifying everything fails and names it
    result = runner.invoke(app, ["models", "verify", "all", *repo, "--key", str(public)])
    assert result.exit_code == 5
    assert "digits:1.0.0" in result.output and "not signed" in result.output


def test_errors_are_sentences_with_exit_codes(demo_repo: Path) -> None:
    env = {**os.environ, "WORKBENCH_REPO": str(demo_repo)}
    proc = subprocess.run([sys.executable, "-m", "workbench", "models", "show", "digits@nope"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 4
    assert "error:" in proc.stderr and "nope" in proc.stderr and "Traceback" not in proc.stderr


def test_help_does_not_import_paddle() -> None:
    code = "import sys; from workbench.cli import app; print('paddle' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr
    proc = subprocess.run([sys.executable, "-m", "workbench", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "models" in proc.stdout


def test_demo_command_is_idempotent(tmp_path: Path, demo_repo: Path) -> None:
    import shutil

    target = tmp_path / "repo"
    shutil.copytree(demo_repo, target)
    result = runner.invoke(app, ["models", "demo", "--repo", str(target), "--model", "digits"])
    assert result.exit_code == 0, result.output
    assert result.output.count("kept digits") == 3
