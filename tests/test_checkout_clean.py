"""The session check in tests/conftest.py: a run that leaves files in the checkout fails."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parent / "conftest.py"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _checkout(tmp_path: Path, test_body: str) -> Path:
    """A git checkout holding this suite's conftest and one test with ``test_body``."""
    root = tmp_path / "checkout"
    (root / "tests").mkdir(parents=True)
    shutil.copy(CONFTEST, root / "tests" / "conftest.py")
    (root / "tests" / "test_one.py").write_text(
        "from pathlib import Path\n\nROOT = Path(__file__).resolve().parent.parent\n\n\n"
        f"def test_one(tmp_path):\n    {test_body}\n"
    )
    (root / ".gitignore").write_text("__pycache__/\n.pytest_cache/\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.invalid",
                    "commit", "-q", "-m", "tests"], check=True)
    return root


def _pytest(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=root, capture_output=True, text=True, timeout=300)


def test_a_run_that_writes_into_the_checkout_fails(tmp_path: Path) -> None:
    root = _checkout(tmp_path, '(ROOT / "left-behind.txt").write_text("x")')
    result = _pytest(root)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
    assert "1 passed" in result.stdout
    assert "left-behind.txt" in result.stdout


def test_a_run_that_writes_under_temp_dirs_passes(tmp_path: Path) -> None:
    root = _checkout(tmp_path, '(tmp_path / "fine.txt").write_text("x")')
    result = _pytest(root)
    assert result.returncode == 0, result.stdout


def test_work_in_progress_before_the_run_is_not_counted(tmp_path: Path) -> None:
    root = _checkout(tmp_path, "pass")
    (root / "draft.txt").write_text("uncommitted")
    result = _pytest(root)
    assert result.returncode == 0, result.stdout
