"""Resolve a model's aliases per request without reading ``aliases.json`` every time.

A pinned request (``x-model-version: stable``) needs the alias's version. Reading the
repository's ``aliases.json`` and listing the model's directory on every request cost a
third of the throughput; :class:`AliasCache` keeps the last answer and looks at the
files' modification times and sizes at most once per ``interval`` seconds, so a changed
alias is followed within about a second.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from workbench.model.repository import ALIASES_NAME
from workbench.model.version import Version

if TYPE_CHECKING:
    from collections.abc import Callable

    from workbench.model.repository import ModelRepository

Stamp = tuple[tuple[int, int, int], ...]


class AliasCache:
    """Alias -> version of one model, refreshed when the repository changes."""

    def __init__(
        self,
        repository: ModelRepository,
        model: str,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repository = repository
        self.model = model
        self.interval = interval
        self._clock = clock
        self._paths = (repository.root / model, repository.root / model / ALIASES_NAME)
        self._aliases: dict[str, str] | None = None
        self._stamp: Stamp | None = None
        self._checked = -float("inf")

    def resolve(self, ref: str) -> str:
        """The version ``ref`` names; a version or an unknown name comes back unchanged
        (the hub then refuses it with its usual message)."""
        if Version.is_version(ref):
            return ref
        now = self._clock()
        if now - self._checked >= self.interval:
            self._checked = now
            stamp = self._read_stamp()
            if stamp != self._stamp:
                self._stamp = stamp
                self._aliases = None
        if self._aliases is None:
            found = self.repository.aliases(self.model)
            self._aliases = {alias: str(version) for alias, version in found.items()}
        return self._aliases.get(ref, ref)

    def _read_stamp(self) -> Stamp:
        marks = []
        for path in self._paths:
            try:
                info = path.stat()
            except OSError:
                marks.append((0, 0, 0))
            else:
                marks.append((info.st_mtime_ns, info.st_size, info.st_ino))
        return tuple(marks)
