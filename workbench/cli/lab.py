"""``workbench lab``: JupyterLab with the workbench extension and the demo models, on loopback.

On a fresh machine it trains and publishes the demo models (if the repository has
none), writes a private Jupyter/IPython configuration under ``$WORKBENCH_HOME``
(kernels auto-load ``workbench_ext``; the lab never reaches the internet), picks
the notebook directory (the project's ``notebooks/`` in a source checkout, else a
copy of the tutorials under ``$WORKBENCH_HOME/notebooks``) and starts JupyterLab on
127.0.0.1 with token authentication. The token is ``$JUPYTER_TOKEN`` or a new one,
printed with the URL.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from workbench.errors import MissingDependencyError

DEMO_MODELS = ("digits", "resnet")


def register(app: typer.Typer) -> None:
    """Add the ``lab`` command to the workbench CLI."""
    app.command("lab")(lab)


@dataclass(frozen=True)
class LabPlan:
    """Everything needed to start the lab: the command line and its environment."""

    argv: list[str]
    env: dict[str, str]
    url: str
    token: str
    notebook_dir: Path
    repo: Path


def project_root() -> Path | None:
    """The source checkout this workbench runs from, if any."""
    import workbench

    root = Path(workbench.__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir():
        return root
    return None


def packaged_notebooks() -> Path | None:
    import workbench

    package = Path(workbench.__file__).resolve().parent
    for candidate in (package / "_data" / "notebooks", package.parent / "notebooks"):
        if candidate.is_dir():
            return candidate
    return None


def notebook_dir(home: Path, explicit: Path | None = None) -> Path:
    """``explicit``, else the checkout's notebooks/, else a copy of the tutorials under ``home``."""
    if explicit is not None:
        explicit.mkdir(parents=True, exist_ok=True)
        return explicit.resolve()
    root = project_root()
    if root is not None:
        return root / "notebooks"
    target = home / "notebooks"
    target.mkdir(parents=True, exist_ok=True)
    source = packaged_notebooks()
    if source is not None:
        for notebook in sorted(source.glob("*.ipynb")):
            if not (target / notebook.name).exists():  # never overwrite the user's edits
                shutil.copy2(notebook, target / notebook.name)
    return target


def install_profile(home: Path) -> dict[str, Path]:
    """Write the private Jupyter and IPython configuration under ``home``; returns the dirs."""
    from workbench.cli.extension import data_dir, install_file

    source = data_dir()
    jupyter = home / "jupyter"
    ipython = home / "ipython"
    settings = jupyter / "lab-settings"
    for directory in (jupyter, ipython / "profile_default", settings):
        directory.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "jupyter_server_config.py", jupyter / "jupyter_server_config.py")
    shutil.copy2(source / "overrides.json", settings / "overrides.json")
    for name in ("ipython_kernel_config.py", "ipython_config.py"):
        install_file(source / name, ipython / "profile_default" / name)
    return {"jupyter": jupyter, "ipython": ipython, "settings": settings}


def ensure_demo(repo: Path, models: tuple[str, ...] = DEMO_MODELS, *, quiet: bool = False) -> bool:
    """Train and publish the demo models into ``repo`` if it has no models; True if it did."""
    from workbench.model.repository import ModelRepository

    if ModelRepository(repo).models():
        return False
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from workbench.model.demo import ALL, build_demo_repository

    wanted = [d for d in ALL if d.model in models]
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        disable=quiet,
        transient=False,
    ) as progress:
        task = progress.add_task(f"training demo models into {repo}", total=len(wanted))

        def report(demo: object, status: str) -> None:
            name = f"{getattr(demo, 'model', '')}:{getattr(demo, 'version', '')}"
            if status == "start":
                progress.update(task, description=f"training {name}")
            else:
                progress.advance(task)

        build_demo_repository(repo, models=models, progress=report)
        progress.update(task, description=f"demo models ready in {repo}")
    return True


def plan(
    *,
    home: Path,
    repo: Path,
    port: int = 8888,
    notebooks: Path | None = None,
    token: str | None = None,
    browser: bool = False,
) -> LabPlan:
    """The JupyterLab command line and environment (nothing is started)."""
    try:
        import jupyterlab  # noqa: F401
    except ModuleNotFoundError as exc:
        raise MissingDependencyError("jupyterlab", "notebook") from exc
    dirs = install_profile(home)
    root = notebook_dir(home, notebooks)
    secret = token or os.environ.get("JUPYTER_TOKEN") or secrets.token_hex(24)
    env = {
        **os.environ,
        "JUPYTER_TOKEN": secret,
        "JUPYTER_CONFIG_DIR": str(dirs["jupyter"]),
        "IPYTHONDIR": str(dirs["ipython"]),
        "WORKBENCH_HOME": str(home),
        "WORKBENCH_REPO": str(repo),
        "WORKBENCH_LAB_IP": "127.0.0.1",
        "WORKBENCH_LAB_PORT": str(port),
        "WORKBENCH_NOTEBOOKS": str(root),
    }
    env.setdefault("GLOG_minloglevel", "3")  # Paddle's glog, in the kernels
    argv = [
        sys.executable,
        "-m",
        "jupyterlab",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.open_browser={browser}",
        f"--LabApp.app_settings_dir={dirs['settings']}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--ServerApp.allow_root=True")  # containers and CI machines run as root
    url = f"http://127.0.0.1:{port}/lab?token={secret}"
    return LabPlan(argv, env, url, secret, root, repo)


def lab(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8888,
    notebooks: Annotated[
        Path | None,
        typer.Option(
            "--notebook-dir", help="Notebook directory [default: the tutorials].", show_default=False
        ),
    ] = None,
    demo: Annotated[
        bool, typer.Option("--demo/--no-demo", help="Train the demo models if the repository is empty.")
    ] = True,
    browser: Annotated[bool, typer.Option("--browser/--no-browser", help="Open a web browser.")] = False,
    print_only: Annotated[
        bool, typer.Option("--print-command", help="Print the command and URL instead of starting.")
    ] = False,
) -> None:
    """Start JupyterLab with the %paddle extension and the demo models, on 127.0.0.1 with a token."""
    from workbench.settings import Settings

    settings = Settings.from_env()
    if demo:
        ensure_demo(settings.repo)
    lab_plan = plan(home=settings.home, repo=settings.repo, port=port, notebooks=notebooks, browser=browser)
    typer.echo(f"notebooks: {lab_plan.notebook_dir}")
    typer.echo(f"models:    {lab_plan.repo}")
    typer.echo(f"JupyterLab: {lab_plan.url}")
    if print_only:
        typer.echo(" ".join(lab_plan.argv))
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(lab_plan.argv[0], lab_plan.argv, lab_plan.env)  # the lab takes over this process
