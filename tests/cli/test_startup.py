"""``import workbench`` and ``workbench --help`` stay cheap: nothing heavy is imported."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.cli._modules import HEAVY, loaded_by


def test_import_workbench_loads_nothing_heavy() -> None:
    loaded = loaded_by(code="import workbench")
    assert not loaded & {*HEAVY, "httpx", "psutil", "filelock", "typer", "rich", "prometheus_client"}


def test_public_names_load_on_first_use() -> None:
    loaded = loaded_by(code="import workbench; workbench.Version.parse('1.0.0')")
    assert "numpy" not in loaded
    loaded = loaded_by(code="import workbench; workbench.build_demo_repository")
    assert "numpy" in loaded


def test_help_loads_nothing_heavy() -> None:
    for argv in (["--help"], ["deploy", "--help"], ["deploy", "status", "--help"], ["deploy", "export", "--help"],
                 ["deploy", "create", "--help"], ["models", "--help"]):
        loaded = loaded_by(*argv)
        assert not loaded & {*HEAVY, "httpx", "psutil", "filelock", "prometheus_client"}, argv


def test_traffic_maths_needs_no_numpy() -> None:
    loaded = loaded_by(code="import workbench.deploy.traffic as t; t.parse_metrics('')")
    assert "numpy" not in loaded


def run_help(*argv: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "workbench", *argv, "--help"],
                          capture_output=True, text=True, timeout=60, env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_help_names_values_the_click_way_and_keeps_bracketed_defaults() -> None:
    status = run_help("deploy", "status")
    assert not re.search(r"<[a-z]+>", status)  # no <bool>/<str>/<float> tags
    assert "[x>=1]" in status  # click's own range note stays
    assert "[NAME]" in status and "--interval FLOAT" in status
    assert "Deployment [default: all]." in status
    models = run_help("models", "list")
    assert "--repo PATH" in models and "--json " in models
    assert "[default: $WORKBENCH_REPO or" in models and "directory ." not in models
    for text in (status, models, run_help()):
        assert max(len(line) for line in text.splitlines()) <= 80
