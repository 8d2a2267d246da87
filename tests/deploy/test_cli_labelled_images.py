"""``deploy update --labelled``: an OCR set (a directory of images) is refused for a model,
and the flag belongs to a canary — each one sentence, before anything starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from tests.deploy.test_cli_deploy import env, run  # noqa: F401 - the env fixture
from tests.deploy.test_pages import labelled_set

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.nginx


def update(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:  # noqa: F811
    return subprocess.run(
        [sys.executable, "-m", "workbench", "deploy", "update", "web", "--version", "1.1.0", *args],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )


def test_a_directory_of_images_is_no_labelled_set_for_a_model(
    nginx: None, env: dict[str, str], tmp_path: Path  # noqa: F811
) -> None:
    run(env, "create", "web", "--model", "stub", "--version", "stable")
    before = json.loads(run(env, "status", "web", "--json"))
    pages = labelled_set(tmp_path / "pages", {"a.png": ["Hello"], "b.png": ["World"]})
    proc = update(env, "--strategy", "canary", "--labelled", str(pages))
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is a directory of images" in lines[0] and "an .npz" in lines[0], lines
    proc = update(env, "--labelled", str(pages))  # blue-green: no accuracy rule to judge it
    assert proc.returncode != 0 and "add --strategy canary" in proc.stderr, proc.stderr
    after = json.loads(run(env, "status", "web", "--json"))
    assert after["revision"] == before["revision"] and after["phase"] == "stable"
