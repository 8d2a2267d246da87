"""``workbench lab``: JupyterLab with the workbench extension and the demo models, on loopback.

First it checks that the port is free (before anything slow: a busy port means
another server, whose URL must not be printed as ours). On a fresh machine it then
trains and publishes the demo models (if the repository has none), writes a private
Jupyter/IPython configuration under ``$WORKBENCH_HOME`` (kernels auto-load
``workbench_ext``; the lab never reaches the internet), copies the tutorials into
the user's work directory ``$WORKBENCH_HOME/notebooks`` (never serving, and so never
autosaving over, the installed or checked-out originals; a copy the user edited is
left alone) and starts JupyterLab on 127.0.0.1 with token authentication. The token
is ``$JUPYTER_TOKEN`` or a new one, printed with the URL.

As root (a fresh cloud machine, a container) it starts on loopback with a one-line
warning and the lab's terminals off: only someone who can already reach this
machine's loopback and holds the token gets in, and no page opens a root shell.
Listening on another address as root needs ``--allow-root`` (then the terminals
stay on: the user said so).
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from workbench.errors import MissingDependencyError, WorkbenchError

DEMO_MODELS = ("digits", "resnet")
#: Which tutorial copies the lab wrote (name -> sha256), to tell them from the user's edits.
COPIED = ".workbench-tutorials.json"


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


def packaged_notebooks() -> Path | None:
    """The tutorials shipped with the workbench: packaged data, else the checkout's notebooks/."""
    import workbench

    package = Path(workbench.__file__).resolve().parent
    for candidate in (package / "_data" / "notebooks", package.parent / "notebooks"):
        if candidate.is_dir():
            return candidate
    return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_tutorials(source: Path, target: Path) -> list[str]:
    """Copy the tutorials into ``target``; a copy the user changed is never overwritten.

    A copy still identical to what the lab wrote last time is updated when the
    tutorial changed. Returns the names written.
    """
    target.mkdir(parents=True, exist_ok=True)
    ledger = target / COPIED
    try:
        copied: dict[str, str] = json.loads(ledger.read_text())
    except (OSError, ValueError):
        copied = {}
    written = []
    for notebook in sorted(source.glob("*.ipynb")):
        copy = target / notebook.name
        fresh = _sha256(notebook)
        if copy.exists() and (copied.get(notebook.name) != _sha256(copy) or fresh == copied[notebook.name]):
            continue  # the user's edits (or already up to date)
        shutil.copyfile(notebook, copy)
        copied[notebook.name] = fresh
        written.append(notebook.name)
    ledger.write_text(json.dumps(copied, indent=1, sort_keys=True) + "\n")
    return written


def notebook_dir(home: Path, explicit: Path | None = None) -> Path:
    """``explicit``, else the user's copy of the tutorials under ``home``."""
    if explicit is not None:
        explicit.mkdir(parents=True, exist_ok=True)
        return explicit.resolve()
    target = home / "notebooks"
    target.mkdir(parents=True, exist_ok=True)
    source = packaged_notebooks()
    if source is not None:
        copy_tutorials(source, target)
    return target


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port(port: int, host: str = "127.0.0.1") -> None:
    """Refuse a busy port (another Jupyter server?) before anything else happens."""
    if not 0 < port < 65536:
        raise WorkbenchError(f"--port must be 1..65535, not {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise WorkbenchError(f"cannot use port {port} on {host}: {exc.strerror}") from exc
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        free = sock.getsockname()[1]
    raise WorkbenchError(
        f"port {port} on {host} is already in use (another Jupyter server?); "
        f"start the lab on a free one, e.g. workbench lab --port {free}"
    )


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def check_root(allow_root: bool, ip: str = "127.0.0.1") -> None:
    """As root, refuse an address other than loopback unless the user said so."""
    if running_as_root() and not allow_root and not is_loopback(ip):
        raise WorkbenchError(
            f"refusing to run JupyterLab as root on {ip} (anyone reaching that address with the "
            "token could run code as root); keep the default 127.0.0.1, run as an ordinary user, "
            "or pass --allow-root if you must"
        )


def terminals_off(allow_root: bool) -> bool:
    """As root without ``--allow-root`` (so on loopback) the lab has no terminals."""
    return running_as_root() and not allow_root


ROOT_WARNING = "WARNING: JupyterLab runs as root (terminals are off; pass --allow-root to keep them)."
ROOT_WARNING_ALLOWED = "WARNING: JupyterLab runs as root: its terminals are root shells (--allow-root)."


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
    from workbench.cli.models import train_demo

    train_demo(repo, models, quiet=quiet)
    return True


def plan(
    *,
    home: Path,
    repo: Path,
    port: int = 8888,
    notebooks: Path | None = None,
    token: str | None = None,
    browser: bool = False,
    allow_root: bool = False,
    ip: str = "127.0.0.1",
) -> LabPlan:
    """The JupyterLab command line and environment (nothing is started)."""
    try:
        import jupyterlab  # noqa: F401
    except ModuleNotFoundError as exc:
        raise MissingDependencyError("jupyterlab", "notebook") from exc
    check_root(allow_root, ip)
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
        "WORKBENCH_LAB_IP": ip,
        "WORKBENCH_LAB_PORT": str(port),
        "WORKBENCH_NOTEBOOKS": str(root),
    }
    env.setdefault("GLOG_minloglevel", "3")  # Paddle's glog, in the kernels
    argv = [
        sys.executable,
        "-m",
        "jupyterlab",
        f"--ServerApp.root_dir={root}",
        f"--ServerApp.ip={ip}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.open_browser={browser}",
        f"--LabApp.app_settings_dir={dirs['settings']}",
    ]
    if running_as_root():
        argv.append("--ServerApp.allow_root=True")
    if terminals_off(allow_root):
        argv.append("--ServerApp.terminals_enabled=False")
    host = f"[{ip}]" if ":" in ip else ip
    url = f"http://{host}:{port}/lab?token={secret}"
    return LabPlan(argv, env, url, secret, root, repo)


def lab(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8888,
    ip: Annotated[
        str, typer.Option("--ip", help="Address to listen on (as root, beyond loopback needs --allow-root).")
    ] = "127.0.0.1",
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
    allow_root: Annotated[
        bool,
        typer.Option(
            "--allow-root",
            help="As root: listen beyond loopback, keep the terminals (root shells).",
        ),
    ] = False,
) -> None:
    """Start JupyterLab with the %paddle extension and the demo models, on 127.0.0.1 with a token.

    As root it starts on loopback with its terminals off; another --ip as root needs --allow-root.
    """
    from workbench.settings import Settings

    check_root(allow_root, ip)
    check_port(port, ip)
    settings = Settings.from_env()
    if demo:
        ensure_demo(settings.repo)
    lab_plan = plan(
        home=settings.home,
        repo=settings.repo,
        port=port,
        notebooks=notebooks,
        browser=browser,
        allow_root=allow_root,
        ip=ip,
    )
    if running_as_root():
        warning = ROOT_WARNING_ALLOWED if allow_root else ROOT_WARNING
        typer.secho(warning, fg=typer.colors.RED, bold=True, err=True)
    typer.echo(f"notebooks: {lab_plan.notebook_dir}")
    typer.echo(f"models:    {lab_plan.repo}")
    typer.echo(f"JupyterLab: {lab_plan.url}")
    if print_only:
        typer.echo(" ".join(lab_plan.argv))
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(lab_plan.argv[0], lab_plan.argv, lab_plan.env)  # the lab takes over this process
