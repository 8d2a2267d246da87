"""The ``workbench`` command line: one typer sub-app per group of verbs."""

from __future__ import annotations

import logging
import sys

import typer

from workbench.errors import WorkbenchError

app = typer.Typer(
    name="workbench",
    help="Versions side by side, hot swap, blue/green and canary serving for Paddle models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    from workbench.cli import models

    app.add_typer(models.app, name="models")
    for name in ("serve", "deploy", "compare", "lab", "extension", "health"):
        try:
            module = __import__(f"workbench.cli.{name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"workbench.cli.{name}":
                raise
            continue
        module.register(app)
    _register_shortcuts()


def _register_shortcuts() -> None:
    """Top-level verbs for what a person types most in an SSH shell: ``workbench promote NAME``."""
    from workbench.cli import deploy

    for verb in ("status", "promote", "rollback", "switch", "abort", "history"):
        command = getattr(deploy, verb)
        app.command(verb, help=f"Same as `workbench deploy {verb}`. " + (command.__doc__ or ""))(command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: WorkbenchError becomes a sentence and an exit code.

    Usage errors, ``--help`` and exits are handled by click (standalone mode);
    anything else propagates as a traceback, which is a bug to report.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app(args=argv)
    except WorkbenchError as exc:
        from rich.console import Console

        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(exc.exit_code)
