"""File-system helpers shared by the layers."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench._types import StrPath


def write_atomic(path: StrPath, data: str | bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` in one step: a reader sees the old file or the new one.

    Writes a temp file beside ``path`` (same file system), fsyncs it, gives it ``mode``,
    renames it over ``path`` and fsyncs the directory. Text is written as UTF-8. The
    temp file never outlives a failure.
    """
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(mode)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
