"""``%paddle load ... --isolation process``: a version in worker processes beside the kernel."""

from __future__ import annotations

from typing import Any

import psutil


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
