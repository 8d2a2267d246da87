"""Shared fixtures: the demo model repository, built once and cached by content."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from filelock import FileLock

os.environ.setdefault("GLOG_minloglevel", "3")
ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
_CHECKOUT_KEY = pytest.StashKey[set[str]]()


def _checkout_status() -> set[str] | None:
    """``git status --porcelain`` of the checkout (every untracked file), or None outside one."""
    try:
        result = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=all"],
            capture_output=True, text=True, timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return set(result.stdout.splitlines())


def pytest_sessionstart(session: pytest.Session) -> None:
    status = _checkout_status()
    if status is not None:
        session.stash[_CHECKOUT_KEY] = status


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when it left files in the checkout: tests write under temp dirs only.

    Compared with the status at the start, so work in progress is not counted; skipped
    when the tests do not run from a git checkout (an installed copy, the image).
    """
    before = session.stash.get(_CHECKOUT_KEY, None)
    after = _checkout_status() if before is not None else None
    if before is None or after is None:
        return
    left = sorted(after - before)
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "the test run left files in the checkout:\n    " + "\n    ".join(left)
        if reporter is not None:
            reporter.write_sep("=", "files left in the checkout", red=True)
            reporter.write_line(message)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
