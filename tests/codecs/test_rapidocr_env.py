"""RapidOCR's environment of its own (tests/codecs/_rapidocr.py): built apart, rebuilt when half-made."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.codecs import _rapidocr

pytestmark = pytest.mark.slow


def test_an_interrupted_build_is_built_again_apart_from_the_project(tmp_path: Path) -> None:
    _rapidocr.require_rapidocr()  # the shared one: the packages are in uv's cache
    python = _rapidocr.rapidocr_env(tmp_path)
    env = python.parent.parent
    assert (env / _rapidocr.COMPLETE).exists()
    (env / _rapidocr.COMPLETE).unlink()  # as a build killed before its end leaves it
    (env / "left-over").write_text("x")
    assert _rapidocr.rapidocr_env(tmp_path) == python
    assert not (env / "left-over").exists() and (env / _rapidocr.COMPLETE).exists()
    code = ("import importlib.metadata as m, rapidocr_paddle, paddle, cv2; "
            "print(m.version('rapidocr-paddle'), paddle.__version__, m.version('opencv-python-headless'))")
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True, timeout=300,
                          env={"GLOG_minloglevel": "3", "PATH": "/usr/bin:/bin"})
    assert done.stdout.split() == ["1.4.5", "3.3.1", "5.1.0.95"]
    assert python.parent != Path(sys.executable).parent
    # and the project's environment never gets it
    find = "import importlib.util as u; print(u.find_spec('rapidocr_paddle'))"
    mine = subprocess.run([sys.executable, "-c", find], capture_output=True, text=True, check=True, timeout=60)
    assert mine.stdout.strip() == "None"
