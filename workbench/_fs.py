"""File-system helpers shared by the layers."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    from workbench._types import StrPath


def write_atomic(path: StrPath, data: str | bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` in one step: a reader sees the old file or the new one.

    Text is written as UTF-8; see :func:`atomic_path` for how the file is replaced.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path, mode=mode) as tmp:
        tmp.write_bytes(payload)


@contextlib.contextmanager
def atomic_path(
    path: StrPath, *, mode: int = 0o600, tmp_dir: StrPath | None = None
) -> Iterator[Path]:
    """A temp path to write ``path``'s new content to; a clean exit puts it in place at once.

    For writers that take a path (a library, a command) or that must check the new file
    before it replaces the old one (``nginx -t``): the temp file (empty, created beside
    ``path``, or in ``tmp_dir`` on the same file system) is fsynced, given ``mode`` and
    renamed over ``path``, then the directory is fsynced. On an exception ``path`` keeps
    its old content and the temp file is removed.
    """
    target = Path(path)
    directory = Path(tmp_dir) if tmp_dir is not None else target.parent
    fd, name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}-", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb") as handle:
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


def unreadable(exc: BaseException) -> str:
    """Why a data file (``.npz``, ``.npy``) could not be read, in a few words."""
    import zipfile  # not at the top: a rollback imports this module before it switches

    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, (EOFError, zipfile.BadZipFile)):
        return "truncated, or not a zip archive"
    if isinstance(exc, ValueError) and "pickle" in str(exc):
        return "not a NumPy .npz or .npy file"
    return str(exc) or type(exc).__name__


#: Errors a user fixes by making room, and by fixing permissions (or a read-only mount).
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_DENIED = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def cannot_write(what: str, where: StrPath, exc: OSError) -> str:
    """One sentence for a write that failed: what, where, why, and what to do about it."""
    why = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in _FULL:
        advice = "free some space there and try again"
    elif exc.errno in _DENIED:
        advice = "make it writable for this user (or use another directory) and try again"
    else:
        advice = "fix that and try again"
    return f"cannot write {what} in {where}: {why}; {advice}"
