"""The documentation site builds with ``mkdocs build --strict`` (a broken link or anchor fails),
and its generated reference pages cover every CLI command and ``%paddle`` verb."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.docs._blocks import DOCS, ROOT


def _reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference", DOCS / "hooks" / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sections(markdown: str) -> dict[str, str]:
    """``## `title` `` sections of a generated page, by title."""
    sections = {}
    for chunk in markdown.split("\n## `")[1:]:
        title, _, body = chunk.partition("`")
        sections[title] = body
    return sections


def test_the_cli_reference_has_every_command_and_option() -> None:
    reference = _reference()
    sections = _sections(reference.cli_markdown())
    commands = reference.walk_cli()
    assert len(commands) > 30
    for command, ctx in commands:
        body = sections[ctx.command_path]
        for param in command.params:
            if param.param_type_name == "option" and not param.hidden:
                assert param.opts[0] in body, f"{ctx.command_path}: {param.opts[0]}"
    assert "--engine TEXT" in sections["workbench deploy create"]
    assert "[default: 8000]" in sections["workbench serve"]


def test_the_magic_reference_has_every_verb_and_argument() -> None:
    reference = _reference()
    sections = _sections(reference.magic_markdown())
    verbs = reference.paddle_verbs()
    assert {"%paddle load", "%paddle deploy update", "%paddle panel"} <= {title for title, _ in verbs}
    for title, parser in verbs:
        body = sections[title]
        for action in parser._actions:
            name = action.option_strings[-1] if action.option_strings else (action.metavar or action.dest)
            if name not in ("--help", "-h"):
                assert f"`{name}" in body or f", {name}`" in body, f"{title}: {name}"
    assert "Choices: process, thread." in sections["%paddle load"]
    # the canary's labelled set, as the CLI takes it: an .npz, or an OCR set judged by CER
    update = sections["%paddle deploy update"]
    assert "| `--labelled` | LABELLED |" in update and "a directory of images and texts.json" in update


def test_every_page_is_in_the_nav() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    missing = sorted(p for p in pages if f" {p}" not in config)
    assert not missing, f"add to mkdocs.yml's nav: {missing}"


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "GLOG_minloglevel": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").exists()
    assert (tmp_path / "site" / "reference" / "paddle-magic" / "index.html").exists()
    assert not (tmp_path / "site" / "hooks").exists()
