"""Every ``workbench …`` command shown in a bash or console block names commands and options that exist.

Each command line is parsed by the CLI's own parser (the click tree typer builds),
without running anything: an unknown command or option, a missing required argument
or a value of the wrong type fails. A shell variable (``"$PORT"``) is a placeholder:
its value is not type-checked.
"""

from __future__ import annotations

import contextlib
import functools
import io
import shlex
from typing import Any

import pytest
import typer.main

from tests.docs._blocks import all_blocks

OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "(", ")", "2>&1"}


def command_lines(body: str, lang: str) -> list[str]:
    """The shell lines of a block, continuation lines joined; in a console block, only ``$ `` lines."""
    lines = body.replace("\\\n", " ").splitlines()
    if lang == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    return lines


def workbench_commands(line: str) -> list[list[str]]:
    """The argument lists of the ``workbench`` invocations on one shell line."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote: not a line this test can read
        return []
    commands, segment = [], []
    for token in [*tokens, ";"]:
        if token in OPERATORS or set(token) <= set("|&;<>()"):
            words = _command_words(segment)
            if words is not None:
                commands.append(words)
            segment = []
        else:
            segment.append(token)
    return commands


def _command_words(segment: list[str]) -> list[str] | None:
    words = list(segment)
    while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value workbench ...
        words.pop(0)
    if words[:2] == ["uv", "run"]:
        words = words[2:]
        while words and words[0].startswith("-"):
            words = words[2:] if words[0] in ("--extra", "--with", "--python") else words[1:]
    if words and words[0] == "workbench":
        return words[1:]
    return None


@functools.cache
def _root() -> Any:
    from workbench.cli import app

    return typer.main.get_command(app)


def check(args: list[str]) -> None:
    """Parse ``workbench ARGS`` as the CLI would; raises with click's message when it would refuse."""
    command: Any = _root()
    ctx = command.make_context("workbench", [], resilient_parsing=True)
    path = ["workbench"]
    rest = list(args)
    while hasattr(command, "list_commands"):
        if not rest or rest[0] in ("--help", "-h"):
            return
        name = rest.pop(0)
        sub = command.get_command(ctx, name)
        if sub is None:
            raise AssertionError(f"`{' '.join(path)}` has no command {name!r}")
        path.append(name)
        command = sub
        ctx = command.make_context(name, [], parent=ctx, resilient_parsing=True)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            command.make_context(path[-1], list(rest), parent=ctx.parent)  # click consumes the list
    except Exception as exc:
        if type(exc).__name__ == "Exit":  # --help
            return
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if type(exc).__name__ == "BadParameter" and _placeholder_value(getattr(exc, "param", None), rest):
            return
        raise AssertionError(f"`{' '.join(path)}`: {message}") from None


def _placeholder_value(param: Any, args: list[str]) -> bool:
    """Whether ``param`` was given a shell variable (``--port "$PORT"``), whose value is unknown here."""
    if param is None:
        return False
    names = set(getattr(param, "opts", ())) | set(getattr(param, "secondary_opts", ()))
    if not names:  # an argument: any placeholder among the positional values
        return any("$" in arg for arg in args if not arg.startswith("-"))
    for index, arg in enumerate(args):
        name, _, value = arg.partition("=")
        if name in names and ("$" in value or (index + 1 < len(args) and "$" in args[index + 1])):
            return True
    return False


BLOCKS = all_blocks("bash", "console", "sh", "shell")
CASES = [
    pytest.param(words, id=f"{block.where}: workbench {' '.join(words)}"[:150])
    for block in BLOCKS
    for line in command_lines(block.body, block.lang)
    for words in workbench_commands(line)
]


def test_the_pages_show_workbench_commands() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("words", CASES)
def test_documented_command_parses(words: list[str]) -> None:
    check(words)


@pytest.mark.parametrize(
    ("words", "error"),
    [
        (["deploy", "creat", "web", "--model", "digits"], "no command 'creat'"),
        (["serve", "--model", "digits", "--prot", "9000"], "--prot"),
        (["serve", "--model", "digits", "--port", "eighty"], "--port.*integer"),
        (["deploy", "create", "web"], "--model"),
    ],
)
def test_a_wrong_command_is_caught(words: list[str], error: str) -> None:
    with pytest.raises(AssertionError, match=error):
        check(words)


def test_placeholders_and_shell_syntax() -> None:
    assert workbench_commands('PORT=$(python -c "x"); workbench serve -m digits --port "$PORT" &') == [
        ["serve", "-m", "digits", "--port", "$PORT"]
    ]
    assert workbench_commands("workbench status web || page-someone  # in cron") == [["status", "web"]]
    assert workbench_commands("uv run --extra cpu --extra notebook workbench lab") == [["lab"]]
    assert workbench_commands("WORKBENCH_VERIFY_KEY=key.pub workbench models verify all") == [
        ["models", "verify", "all"]
    ]
    check(["serve", "--model", "digits", "--port", "$PORT"])
