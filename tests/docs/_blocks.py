"""The fenced code blocks of the README and of the documentation pages."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.S | re.M)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    body: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    """The README and every Markdown page under docs/ (generated reference pages are not files)."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def blocks(path: Path, *langs: str) -> list[Block]:
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        if match["lang"] in langs:
            indent = len(match["indent"])
            body = "\n".join(line[indent:] for line in match["body"].splitlines())
            found.append(Block(path, text.count("\n", 0, match.start()) + 1, match["lang"], body + "\n"))
    return found


def all_blocks(*langs: str) -> list[Block]:
    return [block for path in pages() for block in blocks(path, *langs)]
