"""Helpers shared by the CLI's sub-apps: options, consoles, JSON output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from workbench.settings import Settings

console = Console()
err_console = Console(stderr=True)


def _default_repo() -> Path:
    return Settings.from_env().repo


RepoOption = Annotated[
    Path | None,
    typer.Option(
        "--repo",
        help="Model repository directory [default: $WORKBENCH_REPO or $WORKBENCH_HOME/models].",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def resolve_repo(repo: Path | None) -> Path:
    return repo if repo is not None else _default_repo()


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
