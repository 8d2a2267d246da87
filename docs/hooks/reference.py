"""Reference pages made at build time, so they can never fall behind the code.

- ``reference/cli.md``: every command of the ``workbench`` CLI, read from its click tree
  (typer builds one): what it does, its usage, and each option with its type and default.
- ``reference/paddle-magic.md``: every ``%paddle`` verb, read from the argparse parsers
  the magics declare with ``@magic_arguments``.

mkdocs runs :func:`on_files` (``hooks:`` in mkdocs.yml); ``tests/docs`` imports this file
to check that every command and verb is rendered.
"""

from __future__ import annotations

import argparse
import inspect
import os
from typing import Any

CLI_PAGE = "reference/cli.md"
MAGIC_PAGE = "reference/paddle-magic.md"


def _cell(text: object) -> str:
    """Text for one Markdown table cell: one line, no table or HTML syntax left active."""
    value = " ".join(str(text).split())
    for char, escaped in (("\\", "\\\\"), ("|", "\\|"), ("*", "\\*"), ("<", "&lt;"), (">", "&gt;")):
        value = value.replace(char, escaped)
    return value


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _paragraphs(text: str | None) -> str:
    """A docstring as Markdown prose: dedented, click's ``\\b`` markers dropped, reST ``::`` made plain."""
    body = inspect.cleandoc(text or "").replace("\b\n", "")
    return body.replace("::\n", ":\n")


# -- the workbench CLI -----------------------------------------------------------------


# typer carries its own copy of click (typer._click): its classes are told apart by what
# they do (``list_commands``) and by ``param_type_name``, never imported from ``click``.
Command = Any
Context = Any


def _is_group(command: Command) -> bool:
    return hasattr(command, "list_commands")


def _is_option(param: Any) -> bool:
    return bool(param.param_type_name == "option")


def _cli_root() -> tuple[Command, Context]:
    import typer.main

    from workbench.cli import app

    command = typer.main.get_command(app)
    context = command.make_context("workbench", [], resilient_parsing=True)
    return command, context


def walk_cli() -> list[tuple[Command, Context]]:
    """Every command of the CLI, depth first, each with the context its help is rendered in."""
    root, context = _cli_root()
    found: list[tuple[Command, Context]] = []

    def visit(command: Command, ctx: Context) -> None:
        found.append((command, ctx))
        if _is_group(command):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is None or sub.hidden:
                    continue
                visit(sub, sub.make_context(name, [], parent=ctx, resilient_parsing=True))

    visit(root, context)
    return found


def _help_record(param: Any, ctx: Context) -> tuple[str, str]:
    """What ``--help`` shows for a parameter: its names with value, and its help with default."""
    record = param.get_help_record(ctx)
    if record is None:  # click gives arguments none; typer gives them one
        return param.human_readable_name, getattr(param, "help", None) or ""
    return record[0], record[1]


def _command_page(command: Command, ctx: Context) -> str:
    path = ctx.command_path
    lines = [f"## `{path}`", ""]
    help_text = _paragraphs(command.help)
    if help_text:
        lines += [help_text, ""]
    pieces = command.collect_usage_pieces(ctx)
    lines += ["```text", f"Usage: {path} {' '.join(pieces)}".rstrip(), "```", ""]
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    options = [p for p in command.params if _is_option(p) and not p.hidden]
    for title, params in (("argument", arguments), ("option", options)):
        if not params:
            continue
        lines += [f"| {title} | help |", "| --- | --- |"]
        for param in params:
            names, help_text = _help_record(param, ctx)
            lines.append(f"| {_code(names)} | {_cell(help_text)} |")
        lines.append("")
    if _is_group(command):
        lines += ["| command | what it does |", "| --- | --- |"]
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            anchor = _anchor(f"{path} {name}")
            lines.append(f"| [`{name}`](#{anchor}) | {_cell(sub.get_short_help_str(limit=120))} |")
        lines.append("")
    return "\n".join(lines)


def _anchor(title: str) -> str:
    """The id mkdocs' toc extension gives a heading ``## `title` ``."""
    return "-".join(title.lower().split())


def cli_markdown() -> str:
    commands = walk_cli()
    parts = [
        "# CLI reference",
        "",
        "Generated from the `workbench` command line itself at every build of this site; "
        "`workbench COMMAND --help` prints the same in a terminal.",
        "",
    ]
    parts += [_command_page(command, ctx) for command, ctx in commands]
    return "\n".join(parts)


# -- the %paddle magic -----------------------------------------------------------------


def paddle_verbs() -> list[tuple[str, argparse.ArgumentParser]]:
    """Every ``%paddle`` verb and ``%paddle deploy`` action with its parser, in declaration order."""
    from workbench_ext.magics import DEPLOY_VERBS, VERBS

    found = [(f"%paddle {name}", func.parser) for name, func in VERBS.items()]
    found += [(f"%paddle deploy {name}", func.parser) for name, func in DEPLOY_VERBS.items()]
    return found


def _usage(parser: argparse.ArgumentParser, title: str) -> str:
    """The one-line usage; IPython formats it as reST (``::`` first), argparse as ``usage:``."""
    usage = " ".join(parser.format_usage().split())
    return usage.removeprefix("::").removeprefix("usage:").strip()


def _action_row(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = parser._get_formatter()
    if action.option_strings:
        names = ", ".join(action.option_strings)
        value = "" if action.nargs == 0 else (action.metavar or action.dest.upper())
    else:
        names = str(action.metavar or action.dest)
        value = {"?": "optional", "*": "zero or more", "+": "one or more"}.get(str(action.nargs), "")
    help_text = formatter._expand_help(action) if action.help else ""
    if action.choices:
        help_text += f" Choices: {', '.join(str(c) for c in action.choices)}."
    default = action.default
    shown = "" if default in (None, False, argparse.SUPPRESS) or action.nargs == 0 else str(default)
    return f"| {_code(names)} | {_cell(value)} | {_code(shown)} | {_cell(help_text)} |"


def _verb_page(title: str, parser: argparse.ArgumentParser) -> str:
    lines = [f"## `{title}`", ""]
    if parser.description:
        lines += [_paragraphs(parser.description), ""]
    lines += ["```text", _usage(parser, title), "```", ""]
    actions = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    if actions:
        lines += ["| argument | value | default | help |", "| --- | --- | --- | --- |"]
        lines += [_action_row(parser, action) for action in actions]
        lines.append("")
    return "\n".join(lines)


def magic_markdown() -> str:
    parts = [
        "# `%paddle` reference",
        "",
        "Generated from the magic's own argument parsers at every build of this site; "
        "`%paddle VERB --help` prints the same in a notebook. `%paddle` is a line magic "
        "(`r = %paddle compare ...` keeps the result) and a cell magic: with `%%paddle`, "
        "the cell's last expression is the input of `predict`, `compare` or `bench`. "
        "A line may end with a `# comment`.",
        "",
    ]
    parts += [_verb_page(title, parser) for title, parser in paddle_verbs()]
    return "\n".join(parts)


# -- the mkdocs hook -------------------------------------------------------------------


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    os.environ.setdefault("GLOG_minloglevel", "3")
    for path, content in ((CLI_PAGE, cli_markdown()), (MAGIC_PAGE, magic_markdown())):
        files.append(File.generated(config, path, content=content))
    return files
