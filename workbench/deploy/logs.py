"""A deployment's logs, filtered by model version: both colours' instances and the router.

Serving instances started by a deployment write JSON lines carrying ``model_version``
(:mod:`workbench.serving.jsonlog`); the router's access log is JSON lines carrying the
``color`` and ``version`` that answered. :func:`read` gives the last lines of every
source, :func:`follow` the new ones as they are written, each line prefixed with its
source (``blue``, ``green``, ``router``) and, with ``version``, only that version's lines.
A plain-text line (start-up noise, a traceback) has no version and is shown only
without a version filter.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

__all__ = ["LogSource", "follow", "line_version", "matches", "read"]


@dataclass(frozen=True)
class LogSource:
    """Where one source's lines are: a local file (followable) or a snapshot callable."""

    name: str
    path: Path | None = None
    snapshot: Callable[[int], str] | None = None  # tail -> text, for sources without a file


def line_version(line: str) -> str | None:
    """The model version a JSON log line names (instance or router), else None."""
    if not line.startswith("{"):
        return None
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    version = doc.get("model_version") or doc.get("version")
    return str(version) if version else None


def matches(line: str, version: str | None) -> bool:
    return version is None or line_version(line) == version


def _tail(path: Path, lines: int) -> list[str]:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return [line.rstrip("\n") for line in deque(handle, maxlen=lines)]
    except FileNotFoundError:
        return []


def read(sources: Sequence[LogSource], version: str | None = None, tail: int = 200) -> list[str]:
    """The last ``tail`` matching lines of each source, prefixed with the source's name."""
    out: list[str] = []
    for source in sources:
        if source.path is not None:
            lines = _tail(source.path, 100_000 if version else tail)
        elif source.snapshot is not None:
            lines = source.snapshot(100_000 if version else tail).splitlines()
        else:
            continue
        kept = [line for line in lines if line.strip() and matches(line, version)][-tail:]
        out += [f"{source.name} | {line}" for line in kept]
    return out


def follow(
    sources: Sequence[LogSource],
    version: str | None = None,
    *,
    stop: Callable[[], bool] = lambda: False,
    poll: float = 0.25,
) -> Iterator[str]:
    """New matching lines of the file sources as they are written, until ``stop()``."""
    offsets: dict[str, int] = {}
    partial: dict[str, str] = {}
    files = [s for s in sources if s.path is not None]
    for source in files:
        assert source.path is not None
        offsets[source.name] = source.path.stat().st_size if source.path.exists() else 0
    while not stop():
        quiet = True
        for source in files:
            assert source.path is not None
            try:
                size = source.path.stat().st_size
            except FileNotFoundError:
                continue
            start = offsets[source.name]
            if size < start:  # truncated or replaced: read it from the start
                start = 0
            if size == start:
                continue
            with source.path.open("rb") as handle:
                handle.seek(start)
                chunk = handle.read(size - start).decode("utf-8", errors="replace")
            offsets[source.name] = size
            text = partial.pop(source.name, "") + chunk
            *lines, rest = text.split("\n")
            if rest:
                partial[source.name] = rest
            for line in lines:
                if line.strip() and matches(line, version):
                    quiet = False
                    yield f"{source.name} | {line}"
        if quiet:
            time.sleep(poll)
