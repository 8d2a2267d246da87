"""The pure report logic of bench/bench_serving.py: the req/s table and the peer ratios."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_serving.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_serving", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_serving"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def results(bench: ModuleType, rows: list[tuple[str, int, float]], model: str = "digits") -> list:
    return [bench.Result(model, system, c, rps, 1.0, 2.0) for system, c, rps in rows]


def test_pivot_merges_the_two_in_process_runs_into_one_limit_row_first(bench: ModuleType) -> None:
    rows = results(bench, [
        ("in-process", 1, 900.0), ("in-process", 16, 1200.0),
        ("workbench process x1 bin", 1, 50.25), ("workbench process x1 bin", 16, 700.0),
        ("in-process (again)", 1, 1000.0), ("in-process (again)", 16, 1100.0),
    ])
    assert bench.pivot(rows).splitlines() == [
        "| model | system | c=1 | c=16 |",
        "| --- | --- | ---: | ---: |",
        "| digits | in-process (limit, better of two runs) | 1000 | 1200 |",
        "| digits | workbench process x1 bin | 50.2 | 700 |",
    ]


def test_pivot_leaves_a_cell_empty_where_a_model_was_not_run_at_that_concurrency(
    bench: ModuleType,
) -> None:
    rows = results(bench, [("kserve x1 bin", 1, 10.0)]) + results(
        bench, [("kserve x1 bin", 4, 5.0)], model="resnet")
    lines = bench.pivot(rows).splitlines()
    assert lines[0] == "| model | system | c=1 | c=4 |"
    assert lines[2:] == ["| digits | kserve x1 bin | 10.0 |  |", "| resnet | kserve x1 bin |  | 5.0 |"]


def test_peer_ratios_compare_both_worker_counts_with_every_peer_and_name_every_loss(
    bench: ModuleType,
) -> None:
    rows = results(bench, [
        ("workbench process x1 bin", 1, 300.0), ("workbench process x1 bin", 16, 1500.0),
        ("workbench process x2 bin", 1, 900.0), ("workbench process x2 bin", 16, 3000.0),
        ("mlserver x1 json", 1, 600.0), ("mlserver x1 json", 16, 1000.0),
        ("kserve x2 bin", 1, 800.0), ("kserve x2 bin", 16, 1500.0),
    ])
    text = bench.peer_ratios(rows)
    assert "| digits | workbench process x1 ÷ mlserver x1 json | 0.50× | 1.50× |" in text
    assert "| digits | workbench process x2 ÷ kserve x2 bin | 1.12× | 2.00× |" in text
    assert "digits c=1: workbench process x1 bin 300 ≤ mlserver x1 json 600 req/s" in text
    # a tie is not ahead
    assert "digits c=16: workbench process x1 bin 1500 ≤ kserve x2 bin 1500 req/s" in text
    assert "x2 bin 900" not in text.split("not ahead everywhere")[1]


def test_peer_ratios_say_so_when_workbench_is_ahead_everywhere_or_there_is_no_peer(
    bench: ModuleType,
) -> None:
    ahead = results(bench, [("workbench process x1 bin", 1, 2.0), ("workbench process x2 bin", 1, 3.0),
                            ("kserve x1 bin", 1, 1.0)])
    assert bench.peer_ratios(ahead).endswith("ahead of every peer row at every concurrency")
    alone = results(bench, [("workbench process x1 bin", 1, 2.0)])
    assert bench.peer_ratios(alone) == "no peer rows to compare with"


def test_one_line_keeps_the_end_of_a_long_traceback(bench: ModuleType) -> None:
    text = "RuntimeError: mlserver exited:\n" + "x " * 1000 + "\nValueError: the real cause"
    line = bench.one_line(text, limit=120)
    assert line.startswith("RuntimeError: mlserver exited:")
    assert line.endswith("ValueError: the real cause")
    assert "\n" not in line and len(line) <= 125


def test_a_peer_that_cannot_be_installed_is_named_with_the_installer_s_last_words(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    uv = tmp_path / "uv"
    uv.write_text("#!/bin/sh\nif [ \"$1\" = pip ]; then echo 'No solution found: mlserver' >&2; exit 1; fi\n"
                  "mkdir -p \"$5/bin\"\n")
    uv.chmod(0o755)
    monkeypatch.setattr(bench.shutil, "which", lambda name: str(uv) if name == "uv" else None)
    found, missing = bench.peer_pythons(tmp_path / "cache")
    assert found == {}
    assert set(missing) == {"mlserver", "kserve"}
    assert "uv pip install ...` failed: No solution found: mlserver" in missing["mlserver"]
    assert not (tmp_path / "cache" / f"mlserver-py{sys.version_info.major}{sys.version_info.minor}"
                / "bench-requirements.txt").exists()
