"""The typer application of the ``workbench`` command line: one sub-app per group of verbs.

Start-up is kept cheap: the sub-apps import typer and rich only, and each command
imports what it needs (the model layer, numpy, Paddle, HTTP, Docker) when it runs.
Help is click's plain layout (``rich_markup_mode=None``): it loads no Markdown or
syntax highlighting, and a ``[default: ...]`` in a help text stays as written.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperArgument, TyperGroup

_METAVARS = {int: "INTEGER", float: "FLOAT", bool: "BOOLEAN"}


def _metavar(param: Any) -> str | None:
    """Click's conventional metavar (NAME, PATH, INTEGER, TEXT) for a typer parameter."""
    if isinstance(param, TyperArgument):
        return str(param.name).upper()
    if getattr(param, "is_flag", False):
        return None
    descriptor = param.type_descriptor
    if descriptor.is_choice and descriptor.choices:
        return "[" + "|".join(str(c) for c in descriptor.choices) + "]"
    if descriptor.is_path:
        return "PATH"
    annotation = descriptor.annotation
    element = getattr(annotation, "__args__", (annotation,))[0] if descriptor.is_list else annotation
    return _METAVARS.get(element, "TEXT")


def _no_type(ctx: Any) -> None:
    return None


def _set_metavars(command: Any) -> None:
    for param in command.params:
        if param.metavar is None:
            param.metavar = _metavar(param)
        if isinstance(param, TyperArgument):
            # typer appends a "<str>" tag to an argument's name; the name says enough.
            param.display_type_rich = _no_type  # type: ignore[method-assign]
    for sub in getattr(command, "commands", {}).values():
        _set_metavars(sub)


class _Group(TyperGroup):
    """The root group: names values the way click does (``--port INTEGER``, ``NAME``)."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        _set_metavars(self)
        return super().make_context(*args, **kwargs)


app = typer.Typer(
    name="workbench",
    help="Versions side by side, hot swap, blue/green and canary serving for Paddle models.",
    cls=_Group,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
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
        summary, _, details = (command.__doc__ or "").partition("\n\n")
        text = f"{summary.strip()} Same as `workbench deploy {verb}`."
        app.command(verb, help=text + (f"\n\n{details}" if details else ""))(command)


_register()
