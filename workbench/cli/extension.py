"""``workbench extension install|uninstall``: auto-load the kernel extension in an IPython profile.

The configuration files live beside the extension (``extension/`` in a source
checkout, ``workbench/_data/extension/`` in the wheel). Installing writes them into
``<ipython dir>/profile_<name>/``; a file the user already has keeps its content and
gets a marked block appended (replaced on reinstall, removed by ``uninstall``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import typer

from workbench.errors import WorkbenchError

PROFILE_FILES = ("ipython_kernel_config.py", "ipython_config.py")
BEGIN = "# >>> paddle-workbench >>>"
END = "# <<< paddle-workbench <<<"
_BLOCK = re.compile(rf"\n?{re.escape(BEGIN)}.*?{re.escape(END)}\n?", re.DOTALL)

app = typer.Typer(
    help="Install the workbench's IPython extension into a profile.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def register(parent: typer.Typer) -> None:
    """Add the ``extension`` group to the workbench CLI."""
    parent.add_typer(app, name="extension")


def data_dir() -> Path:
    """Where the extension's configuration files are (wheel data, else the source checkout)."""
    import workbench

    package = Path(workbench.__file__).resolve().parent
    for candidate in (package / "_data" / "extension", package.parent / "extension"):
        if (candidate / "ipython_kernel_config.py").is_file():
            return candidate
    raise WorkbenchError(
        f"the extension's configuration files are missing (looked in {package / '_data' / 'extension'} "
        f"and {package.parent / 'extension'}); reinstall paddle-workbench"
    )


def ipython_dir(explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit.expanduser()
    env = os.environ.get("IPYTHONDIR", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".ipython"


def install_file(source: Path, target: Path) -> str:
    """Put ``source`` into ``target`` as a marked block (the rest of the file is kept).

    Returns what happened: ``created``, ``updated``, ``appended`` or ``unchanged``.
    """
    block = f"{BEGIN}\n{source.read_text().strip()}\n{END}\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.write_text(block)
        return "created"
    current = target.read_text()
    if BEGIN in current:
        updated = _BLOCK.sub(lambda _m: "\n" + block, current, count=1).lstrip("\n")
        if updated == current:
            return "unchanged"
        target.write_text(updated)
        return "updated"
    target.write_text(current.rstrip("\n") + "\n\n" + block)
    return "appended"


def uninstall_file(target: Path) -> str:
    if not target.exists():
        return "absent"
    current = target.read_text()
    if BEGIN not in current:
        return "untouched"
    remaining = _BLOCK.sub("\n", current).strip()
    if not remaining:
        target.unlink()
        return "removed"
    target.write_text(remaining + "\n")
    return "cleaned"


def install(profile: str = "default", directory: Path | None = None) -> dict[Path, str]:
    """Install both IPython configuration files into a profile; returns path → what happened."""
    source = data_dir()
    profile_dir = ipython_dir(directory) / f"profile_{profile}"
    return {profile_dir / name: install_file(source / name, profile_dir / name) for name in PROFILE_FILES}


ProfileOption = Annotated[str, typer.Option("--profile", help="IPython profile name.")]
DirOption = Annotated[
    Path | None,
    typer.Option(
        "--ipython-dir", help="IPython directory [default: $IPYTHONDIR or ~/.ipython].", show_default=False
    ),
]


@app.command("install")
def install_command(profile: ProfileOption = "default", ipython_dir_: DirOption = None) -> None:
    """Auto-load %paddle in every kernel and terminal IPython of a profile."""
    for path, what in install(profile, ipython_dir_).items():
        typer.echo(f"{what:<9} {path}")
    typer.echo("New kernels load workbench_ext; in a running one: %load_ext workbench_ext")


@app.command("uninstall")
def uninstall_command(profile: ProfileOption = "default", ipython_dir_: DirOption = None) -> None:
    """Stop auto-loading the extension in a profile (other settings are kept)."""
    profile_dir = ipython_dir(ipython_dir_) / f"profile_{profile}"
    for name in PROFILE_FILES:
        typer.echo(f"{uninstall_file(profile_dir / name):<9} {profile_dir / name}")
