"""The README is a short front page: at most 8 KiB, opening with the two commands that start
the workbench and run the tests, and linking into docs/.

Its Python snippets run as written, each in a fresh kernel, with every other page's
(tests/docs/test_snippets.py); its `workbench` commands are parsed against the CLI
(tests/docs/test_commands.py).
"""

from __future__ import annotations

import re

from tests.docs._blocks import ROOT, blocks

README = ROOT / "README.md"
START = "uv run --extra cpu --extra notebook workbench lab"
TEST = "uv run --extra cpu --extra notebook --extra dev pytest"


def test_the_readme_is_at_most_8_kib() -> None:
    assert README.stat().st_size <= 8192, f"README.md is {README.stat().st_size} bytes; move detail into docs/"


def test_its_first_commands_start_the_workbench_and_run_the_tests() -> None:
    first = blocks(README, "bash", "console", "sh", "shell", "python", "text", "")[0]
    commands = [line.split("#")[0].strip() for line in first.body.splitlines() if line.strip()]
    assert commands == [START, TEST]
    assert first.line < 5  # under the title, before any prose


def test_the_readme_has_python_snippets() -> None:
    snippets = blocks(README, "python")
    assert len(snippets) >= 2 and any("%paddle" in s.body for s in snippets)


def test_its_links_into_docs_resolve() -> None:
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if "://" not in link]
    assert any(link.startswith("docs/") for link in local)
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing
