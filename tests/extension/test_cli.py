"""`workbench extension install|uninstall` and `workbench lab` (without starting the lab)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from typer.testing import CliRunner

from workbench.cli import app
from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    import pytest

ROOT = Path(__file__).resolve().parents[2]


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
    from workbench.cli import lab

    monkeypatch.setattr(lab, "running_as_root", lambda: False)
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
    monkeypatch.setattr(lab, "running_as_root", lambda: False)
    plan = lab.plan(home=tmp_path / "home", repo=tmp_path / "repo", port=18766)
    assert len(plan.token) == 48 and plan.url.endswith(plan.token)
    assert plan.env["JUPYTER_TOKEN"] == plan.token
    assert plan.env["IPYTHONDIR"] == str(tmp_path / "home" / "ipython")
    assert plan.env["WORKBENCH_REPO"] == str(tmp_path / "repo")
    assert not any("allow_root" in arg for arg in plan.argv)
    # even in a source checkout the lab serves copies in the user's work directory, so
    # autosave never rewrites the tracked tutorials
    assert plan.notebook_dir == tmp_path / "home" / "notebooks"
    assert (plan.notebook_dir / "01-quickstart.ipynb").read_bytes() == (
        ROOT / "notebooks" / "01-quickstart.ipynb"
    ).read_bytes()


def test_lab_copies_the_tutorials_and_keeps_the_users_edits(tmp_path: Path) -> None:
    from workbench.cli import lab

    target = lab.notebook_dir(tmp_path)
    assert target == tmp_path / "notebooks"
    names = sorted(p.name for p in target.glob("*.ipynb"))
    assert names == sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert "01-quickstart.ipynb" in names
    (target / "01-quickstart.ipynb").write_text("{}")  # the user's edits survive the next start
    lab.notebook_dir(tmp_path)
    assert (target / "01-quickstart.ipynb").read_text() == "{}"

    # a newer tutorial replaces a copy the user never touched, never an edited one
    source = tmp_path / "tutorials"
    source.mkdir()
    (source / "a.ipynb").write_text("v1")
    (source / "b.ipynb").write_text("v1")
    work = tmp_path / "work"
    assert lab.copy_tutorials(source, work) == ["a.ipynb", "b.ipynb"]
    (work / "b.ipynb").write_text("mine")
    (source / "a.ipynb").write_text("v2")
    (source / "b.ipynb").write_text("v2")
    assert lab.copy_tutorials(source, work) == ["a.ipynb"]
    assert (work / "a.ipynb").read_text() == "v2" and (work / "b.ipynb").read_text() == "mine"


def test_lab_on_a_busy_port_says_so_before_any_work(tmp_path: Path) -> None:
    env = {**os.environ, "WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_REPO": str(tmp_path / "repo")}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "workbench", "lab", "--port", str(port), "--allow-root", "--print-command"],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
    assert result.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "workbench lab --port " in result.stderr and "Traceback" not in result.stderr
    assert "token=" not in result.stdout  # no URL of someone else's server
    assert not (tmp_path / "repo").exists() and not (tmp_path / "home").exists()  # nothing trained


def test_lab_as_root_on_loopback_starts_with_terminals_off_and_elsewhere_needs_allow_root(
    demo_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workbench.cli import lab

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WORKBENCH_REPO", str(demo_repo))
    monkeypatch.setattr(lab, "running_as_root", lambda: True)
    args = ["lab", "--print-command", "--no-demo", "--port", "18767"]

    loopback = CliRunner().invoke(app, args)
    assert loopback.exit_code == 0, loopback.output
    assert "--ServerApp.allow_root=True" in loopback.stdout
    assert "--ServerApp.terminals_enabled=False" in loopback.stdout
    assert "--ServerApp.ip=127.0.0.1" in loopback.stdout
    assert loopback.stderr.strip().splitlines() == [lab.ROOT_WARNING]  # one line

    refused = CliRunner().invoke(app, [*args, "--ip", "0.0.0.0"])
    assert refused.exit_code != 0 and isinstance(refused.exception, WorkbenchError)
    assert "--allow-root" in str(refused.exception) and "0.0.0.0" in str(refused.exception)

    allowed = CliRunner().invoke(app, [*args, "--ip", "0.0.0.0", "--allow-root"])
    assert allowed.exit_code == 0, allowed.output
    assert "--ServerApp.ip=0.0.0.0" in allowed.stdout and "--ServerApp.allow_root=True" in allowed.stdout
    assert "terminals_enabled" not in allowed.stdout  # the user asked for root: terminals stay
    assert allowed.stderr.strip().splitlines() == [lab.ROOT_WARNING_ALLOWED]


def test_lab_as_root_really_starts_on_loopback_with_the_token(tmp_path: Path) -> None:
    """`workbench lab` as root, no --allow-root: JupyterLab answers 200 with the token, 403 without."""
    import urllib.error
    import urllib.request

    import pytest

    if os.geteuid() != 0:
        pytest.skip("starting JupyterLab as root needs root (this test runs as an ordinary user)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = "t" + os.urandom(12).hex()
    env = {
        **os.environ,
        "WORKBENCH_HOME": str(tmp_path / "home"),
        "WORKBENCH_REPO": str(tmp_path / "repo"),
        "JUPYTER_TOKEN": token,
    }
    log = tmp_path / "lab.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "workbench", "lab", "--port", str(port), "--no-demo",
             "--notebook-dir", str(tmp_path / "nb")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"

    def get(path: str) -> int:
        try:
            with urllib.request.urlopen(base + path, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        from tests._wait import wait_until

        def up() -> bool:
            assert process.poll() is None, log.read_text()[-3000:]
            return get(f"/api/status?token={token}") == 200

        wait_until(up, 120, 0.5, what="JupyterLab as root to answer", ignore=(OSError,))
        assert get("/api/status") == 403  # the token is required
        assert get(f"/api/terminals?token={token}") == 404  # no terminals (no root shells)
        text = log.read_text()
        assert text.count("WARNING: JupyterLab runs as root") == 1, text
        assert f"JupyterLab: http://127.0.0.1:{port}/lab?token={token}" in text
    finally:
        import signal

        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def test_lab_does_not_retrain_an_existing_repository(demo_repo: Path) -> None:
    from workbench.cli import lab

    assert lab.ensure_demo(demo_repo, quiet=True) is False
