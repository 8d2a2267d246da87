"""Every ```python block of the README and of docs/ runs as written, each in a fresh kernel (nbclient).

The kernel starts with ``$HOME``, ``$WORKBENCH_HOME`` and ``$WORKBENCH_REPO`` in a fresh
temporary directory whose repository holds the demo models (what ``workbench models demo``
leaves), so a snippet that reads its paths from the settings finds them. A block with
``%paddle`` runs after ``%load_ext workbench_ext``, as the pages tell users outside
``workbench lab``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests._components import require
from tests.docs._blocks import ROOT, all_blocks
from tests.notebooks.test_notebooks import CELL_TIMEOUT

if TYPE_CHECKING:
    from collections.abc import Iterator

SNIPPETS = all_blocks("python")


@pytest.fixture
def home(demo_repo: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh $HOME whose ~/.workbench/models is the demo repository; a short path (nginx sockets)."""
    path = Path(tempfile.mkdtemp(prefix="wb-doc-", dir="/tmp"))
    (path / ".workbench").mkdir()
    (path / ".workbench" / "models").symlink_to(demo_repo)
    monkeypatch.setenv("HOME", str(path))
    monkeypatch.setenv("WORKBENCH_HOME", str(path / ".workbench"))
    monkeypatch.setenv("WORKBENCH_REPO", str(path / ".workbench" / "models"))
    monkeypatch.setenv("GLOG_minloglevel", "3")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_the_pages_have_python_snippets() -> None:
    where = {block.path.relative_to(ROOT).as_posix() for block in SNIPPETS}
    assert {"README.md", "docs/tour.md", "docs/notebook.md", "docs/serving.md"} <= where
    assert any("%paddle deploy" in block.body for block in SNIPPETS)


def test_no_snippet_hard_codes_the_workbench_home() -> None:
    """Snippets take their paths from the settings (``$WORKBENCH_HOME``, ``$WORKBENCH_REPO``)."""
    offenders = [block.where for block in SNIPPETS if "~/.workbench" in block.body or ".workbench/" in block.body]
    assert not offenders


@pytest.mark.slow
@pytest.mark.parametrize("block", SNIPPETS, ids=[block.where for block in SNIPPETS])
def test_snippet_runs_as_written(block, home: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    source = block.body
    if "%paddle deploy" in source:
        require(
            "nginx",
            shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin") is not None,
            "the router is nginx (apt-get install nginx-light)",
        )
    cells = [nbformat.v4.new_code_cell(source)]
    if "%paddle" in source:
        cells.insert(0, nbformat.v4.new_code_cell("%load_ext workbench_ext"))
        # clean up what the snippet started (not part of the page)
        cells.append(
            nbformat.v4.new_code_cell(
                "import workbench_ext\n"
                "for name in workbench_ext.get_session().deployments.names():\n"
                "    %paddle deploy delete {name}\n"
                "%paddle serve --stop all"
            )
        )
    notebook = nbformat.v4.new_notebook(cells=cells)
    NotebookClient(
        notebook, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(home)}}
    ).execute()  # raises CellExecutionError naming the line that failed
    errors = [o for c in notebook.cells for o in c.outputs if o["output_type"] == "error"]
    assert not errors, f"{block.where}: {errors}"
