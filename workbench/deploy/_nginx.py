"""What both nginx runners (local process, container) do alike with a router's workdir.

They read nginx's logs from the workdir (bind-mounted into a container, so the same
files) and wait for a graceful reload the same way: until fresh workers run and every
old one stopped accepting connections, or nginx logs an ``[emerg]``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TypeVar

from workbench.errors import RouterError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping
    from pathlib import Path

Worker = TypeVar("Worker")  # how a runner names a worker process (a pid)


def tail(path: Path, offset: int = 0, lines: int = 20) -> str:
    """The last ``lines`` lines of ``path`` written after byte ``offset`` ("" if unreadable)."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def size(path: Path) -> int:
    """The size of ``path`` in bytes (0 if it does not exist): where new log lines start."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def wait_reloaded(
    workers: Callable[[], Mapping[Worker, bool]],
    old: Collection[Worker],
    log: Path,
    offset: int,
    timeout: float,
    poll: float,
) -> None:
    """Return once a reload took effect: fresh workers run and no ``old`` one still accepts.

    ``workers()`` maps each current worker (pid) to whether it is shutting down;
    ``old`` are the workers from before the reload signal; ``log`` is the error log,
    read from ``offset``. RouterError when nginx refused the new configuration (it
    keeps the previous one) or nothing changed within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        emerg = [line for line in tail(log, offset, 50).splitlines() if "[emerg]" in line]
        if emerg:
            raise RouterError(
                "nginx refused to reload and keeps its previous configuration:\n" + "\n".join(emerg)
            )
        current = workers()
        fresh = [w for w in current if w not in old]
        if fresh and not any(w in old and not down for w, down in current.items()):
            return
        if time.monotonic() > deadline:
            raise RouterError(f"nginx did not reload within {timeout:g} s:\n" + tail(log, offset))
        time.sleep(poll)
