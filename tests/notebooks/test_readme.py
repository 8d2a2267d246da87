"""Every Python snippet of the README runs as written, each in a fresh kernel (nbclient).

The plain-Python snippet runs with ``~/.workbench/models`` holding the demo models
(what ``workbench models demo`` leaves); a snippet with ``%paddle`` runs after
``%load_ext workbench_ext``, as the README tells users outside ``workbench lab``.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests._components import require
from tests.notebooks.test_notebooks import CELL_TIMEOUT, ROOT

if TYPE_CHECKING:
    from collections.abc import Iterator

SNIPPET = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
SNIPPETS = SNIPPET.findall((ROOT / "README.md").read_text())


@pytest.fixture
def home(demo_repo: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh $HOME whose ~/.workbench/models is the demo repository; a short path (nginx sockets)."""
    path = Path(tempfile.mkdtemp(prefix="wb-rd-", dir="/tmp"))
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


def test_the_readme_has_python_snippets() -> None:
    assert len(SNIPPETS) >= 2 and any("%paddle" in s for s in SNIPPETS)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs_as_written(index: int, home: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    source = SNIPPETS[index]
    if "%paddle deploy" in source:
        require(
            "nginx",
            shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin") is not None,
            "the router is nginx (apt-get install nginx-light)",
        )
    cells = [nbformat.v4.new_code_cell(source)]
    if "%paddle" in source:
        cells.insert(0, nbformat.v4.new_code_cell("%load_ext workbench_ext"))
        # clean up what the snippet started (not part of the README)
        cells.append(
            nbformat.v4.new_code_cell(
                "import workbench_ext\n"
                "for name in workbench_ext.get_session().deployments.names():\n"
                "    %paddle deploy delete {name}"
            )
        )
    notebook = nbformat.v4.new_notebook(cells=cells)
    NotebookClient(
        notebook, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(home)}}
    ).execute()  # raises CellExecutionError naming the line that failed
    errors = [o for c in notebook.cells for o in c.outputs if o["output_type"] == "error"]
    assert not errors
