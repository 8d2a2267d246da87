"""`workbench extension install|uninstall` and `workbench lab` (without starting the lab)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from typer.testing import CliRunner

from workbench.cli import app

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_extension_install_keeps_the_users_settings(tmp_path: Path) -> None:
    ipython = tmp_path / "ipython"
    profile = ipython / "profile_work"
    profile.mkdir(parents=True)
    mine = "c = get_config()\nc.TerminalIPythonApp.display_banner = False\n"
    (profile / "ipython_config.py").write_text(mine)

    out = invoke("extension", "install", "--profile", "work", "--ipython-dir", str(ipython))
    assert "created" in out and "appended" in out
    kernel = (profile / "ipython_kernel_config.py").read_text()
    assert 'c.InteractiveShellApp.extensions.append("workbench_ext")' in kernel
    terminal = (profile / "ipython_config.py").read_text()
    assert terminal.startswith(mine) and "workbench_ext" in terminal

    assert "unchanged" in invoke("extension", "install", "--profile", "work", "--ipython-dir", str(ipython))
    assert (profile / "ipython_config.py").read_text() == terminal  # reinstalling adds nothing

    out = invoke("extension", "uninstall", "--profile", "work", "--ipython-dir", str(ipython))
    assert "removed" in out and "cleaned" in out
    assert not (profile / "ipython_kernel_config.py").exists()
    assert (profile / "ipython_config.py").read_text() == mine


def test_the_installed_config_loads_the_extension(tmp_path: Path) -> None:
    """Run the installed file the way IPython does and look at the resulting config."""
    from traitlets.config import Config

    invoke("extension", "install", "--ipython-dir", str(tmp_path))
    config = Config()
    source = (tmp_path / "profile_default" / "ipython_kernel_config.py").read_text()
    exec(compile(source, "ipython_kernel_config.py", "exec"), {"get_config": lambda: config})
    extensions = config.InteractiveShellApp.extensions
    assert "workbench_ext" in extensions.get_value([])


def test_lab_plan_is_loopback_with_a_token_and_a_private_profile(
    demo_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    monkeypatch.setenv("WORKBENCH_REPO", str(demo_repo))
    monkeypatch.setenv("JUPYTER_TOKEN", "sesame")
    out = invoke(
        "lab", "--print-command", "--no-demo", "--port", "18765", "--notebook-dir", str(tmp_path / "nb")
    )
    assert "JupyterLab: http://127.0.0.1:18765/lab?token=sesame" in out
    assert "--ServerApp.ip=127.0.0.1" in out and "--ServerApp.port=18765" in out
    assert f"--ServerApp.root_dir={tmp_path / 'nb'}" in out
    kernel_config = home / "ipython" / "profile_default" / "ipython_kernel_config.py"
    assert "workbench_ext" in kernel_config.read_text()
    assert (home / "jupyter" / "jupyter_server_config.py").is_file()
    overrides = json.loads((home / "jupyter" / "lab-settings" / "overrides.json").read_text())
    assert overrides["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"


def test_lab_generates_a_token_and_uses_the_tutorials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workbench.cli import lab

    monkeypatch.delenv("JUPYTER_TOKEN", raising=False)
    plan = lab.plan(home=tmp_path / "home", repo=tmp_path / "repo", port=18766)
    assert len(plan.token) == 48 and plan.url.endswith(plan.token)
    assert plan.env["JUPYTER_TOKEN"] == plan.token
    assert plan.env["IPYTHONDIR"] == str(tmp_path / "home" / "ipython")
    assert plan.env["WORKBENCH_REPO"] == str(tmp_path / "repo")
    # in a source checkout the lab opens the project's notebooks
    assert (plan.notebook_dir / "01-quickstart.ipynb").is_file()


def test_lab_copies_the_tutorials_outside_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.cli import lab

    monkeypatch.setattr(lab, "project_root", lambda: None)
    target = lab.notebook_dir(tmp_path)
    assert target == tmp_path / "notebooks"
    names = sorted(p.name for p in target.glob("*.ipynb"))
    assert names == ["01-quickstart.ipynb", "02-side-by-side.ipynb", "03-blue-green.ipynb"]
    (target / "01-quickstart.ipynb").write_text("{}")  # the user's edits survive the next start
    lab.notebook_dir(tmp_path)
    assert (target / "01-quickstart.ipynb").read_text() == "{}"


def test_lab_does_not_retrain_an_existing_repository(demo_repo: Path) -> None:
    from workbench.cli import lab

    assert lab.ensure_demo(demo_repo, quiet=True) is False
