"""``%paddle load ... --isolation process``: a version in worker processes beside the kernel."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def test_load_in_worker_processes_predict_and_unload_frees_them(shell: Any, session: Any) -> None:
    loaded = shell.run_line_magic("paddle", "load digits:1.2.0 --isolation process --workers 1 --no-activate -q")
    assert loaded.isolation == "process"
    (pid,) = loaded.worker_pids
    assert psutil.pid_exists(pid)
    table = shell.run_line_magic("paddle", "list --loaded")
    assert table.loc["1.2.0", "isolation"] == "process"
    assert table.loc["1.2.0", "memory_scope"] == "worker"
    assert table.loc["1.2.0", "memory_mib"] > 20
    prediction = shell.run_line_magic("paddle", "predict digits:1.2.0 --input x_test[:3]")
    assert str(prediction.version) == "1.2.0"
    assert next(iter(prediction.outputs.values())).shape == (3, 10)
    assert shell.run_line_magic("paddle", "unload 1.2.0") == ["digits:1.2.0"]
    assert not psutil.pid_exists(pid)


def test_a_real_kernel_loads_and_predicts_in_process_isolation_without_importing_paddle(
    demo_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel is the front: with ``--isolation process`` Paddle runs only in the workers."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("WORKBENCH_REPO", str(demo_repo))
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    cells = [
        "%load_ext workbench_ext",
        "import sys\nfrom workbench.model.demo import digits_dataset\nx = digits_dataset()[2][:3]",
        "%paddle load digits:1.0.0 digits:1.1.0 --isolation process --workers 1 -q",
        "table = %paddle list --loaded\n"
        "assert set(table['isolation']) == {'process'} and set(table['memory_scope']) == {'worker'}, table",
        "p = %paddle predict digits:1.1.0 --input x\n"
        "assert str(p.version) == '1.1.0' and next(iter(p.outputs.values())).shape == (3, 10)",
        "r = %paddle compare 1.0.0 1.1.0 --data x\nassert r.rows == 3",
        "%paddle unload 1.1.0",
        "print('paddle modules:', sorted(m for m in sys.modules if m == 'paddle' or m.startswith('paddle.')))",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(notebook, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(out.get("text", "") for out in notebook.cells[-1].outputs)
    assert "paddle modules: []" in printed, printed
