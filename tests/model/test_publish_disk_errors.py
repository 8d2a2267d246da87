"""Publishing on a full disk (ENOSPC) or into a directory the user may not write (EACCES):
one sentence naming the directory and what to do, nothing partial left.

The error is injected where a model file's bytes are written (``shutil.copy2``, after
half the file), so the real error path runs; a read-only directory cannot make EACCES
here, the tests run as root.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from workbench.errors import PublishError
from workbench.model.manifest import TensorSpec
from workbench.model.repository import ModelRepository

ERRORS = {"ENOSPC": (errno.ENOSPC, "free some space there and try again"),
          "EACCES": (errno.EACCES, "make it writable for this user")}


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("name", ERRORS)
def test_publish_on_a_full_or_closed_disk_is_one_sentence_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    code, advice = ERRORS[name]
    source = tmp_path / "export"
    source.mkdir()
    (source / "inference.json").write_text("{}")
    (source / "inference.pdiparams").write_bytes(b"\0" * 4096)
    repo = ModelRepository(tmp_path / "repo")
    real_copy = shutil.copy2

    def copy_then_fail(src: Any, dst: Any, **kw: Any) -> Any:
        if Path(src).name == "inference.pdiparams":  # half the file made it, then the disk
            Path(dst).write_bytes(Path(src).read_bytes()[:2048])
            raise OSError(code, os.strerror(code), str(dst))
        return real_copy(src, dst, **kw)

    monkeypatch.setattr(shutil, "copy2", copy_then_fail)
    with pytest.raises(PublishError) as caught:
        repo.publish("stub", "1.0.0", source, sample={"x": np.zeros((2, 64), np.float32)},
                     inputs=[TensorSpec("x", "float32", (-1, 64))],
                     outputs=[TensorSpec("y", "float32", (-1, 10))])
    said = str(caught.value)
    assert said.startswith(f"cannot write stub:1.0.0 in {tmp_path / 'repo' / 'stub'}: "
                           f"{os.strerror(code)}; "), said
    assert advice in said and "\n" not in said
    assert _files(tmp_path / "repo") == ["stub"]  # no staging directory, no half file
    assert repo.versions("stub") == []
