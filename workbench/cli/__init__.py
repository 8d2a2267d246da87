"""The ``workbench`` command line (:mod:`workbench.cli.root` holds its typer application).

Importing this package loads neither typer nor rich: :func:`main` first lets
:mod:`workbench.cli.brake` take a manual rollback or abort (``workbench rollback NAME``,
``workbench deploy abort NAME``), which moves all traffic to stable before anything
the switch does not need is imported; every other command goes to typer.
"""

from __future__ import annotations

import sys

from workbench.errors import WorkbenchError

TYPE_CHECKING = False  # typing is not imported before the brake's switch
if TYPE_CHECKING:
    from typing import Any

    import typer

    app: typer.Typer

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from workbench.cli.root import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: WorkbenchError becomes a sentence and an exit code.

    Usage errors, ``--help`` and exits are handled by click (standalone mode);
    anything else propagates as a traceback, which is a bug to report.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        from workbench.cli.brake import brake, log_warnings

        if brake(args):
            return
        log_warnings()
        from workbench.cli.root import app

        app(args=args)
    except WorkbenchError as exc:
        from rich.console import Console

        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(exc.exit_code)
