"""Shared fixtures: the demo model repository, built once and cached by content."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from filelock import FileLock

os.environ.setdefault("GLOG_minloglevel", "3")
ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"


def _demo_key() -> str:
    source = (ROOT / "workbench" / "model" / "demo.py").read_bytes()
    source += (ROOT / "workbench" / "model" / "manifest.py").read_bytes()
    return hashlib.sha256(source).hexdigest()[:12]


@pytest.fixture(scope="session")
def demo_repo() -> Path:
    """A repository with the demo models (digits 1.0.0/1.1.0/1.2.0, resnet 1.0.0). Read-only."""
    from workbench.model.demo import build_demo_repository

    CACHE.mkdir(exist_ok=True)
    target = CACHE / f"demo-repo-{_demo_key()}"
    with FileLock(str(CACHE / "demo-repo.lock"), timeout=600):
        if not (target / ".complete").exists():
            shutil.rmtree(target, ignore_errors=True)
            build_demo_repository(target)
            (target / ".complete").touch()
    return target


@pytest.fixture
def repo_copy(demo_repo: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the digits model of the demo repository."""
    target = tmp_path / "repo"
    shutil.copytree(demo_repo / "digits", target / "digits")
    return target
