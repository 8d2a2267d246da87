"""Warm-up within a size budget: the plan's rule, and what the real PP-OCRv5 exports run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.codecs import _ocr
from workbench.model.manifest import TensorSpec
from workbench.runtime.warmup import ALIGN, BATCH_ELEMENTS, batch_sizes, plan


def shapes(batches: list[dict[str, np.ndarray]]) -> list[tuple[int, ...]]:
    return [next(iter(b.values())).shape for b in batches]


def test_small_inputs_run_every_batch_size_as_sampled() -> None:
    sample = {"x": np.ones((1, 64), np.float32)}
    batches = plan(sample, [1, 2, 4, 8], [TensorSpec("x", "float32", (-1, 64))])
    assert shapes(batches) == [(1, 64), (2, 64), (4, 64), (8, 64)]


def test_large_images_shrink_beyond_the_first_batch() -> None:
    sample = {"x": np.random.default_rng(0).random((1, 3, 736, 736), dtype=np.float32)}
    batches = plan(sample, [1, 2, 4, 8], [TensorSpec("x", "float32", (-1, 3, -1, -1))])
    got = shapes(batches)
    assert got[0] == (1, 3, 736, 736)  # the first request's likely shape, as sampled
    assert [s[0] for s in got] == [1, 2, 4, 8]
    for shape in got[1:]:
        assert np.prod(shape) <= BATCH_ELEMENTS
        assert shape[2] % ALIGN == 0 and shape[3] % ALIGN == 0 and shape[2] == shape[3]
    # cropped from the sample, not made up
    np.testing.assert_array_equal(batches[1]["x"][0], sample["x"][0, :, : got[1][2], : got[1][3]])


def test_what_cannot_shrink_is_not_run() -> None:
    big = np.zeros((1, 3, 736, 736), np.float32)
    fixed = plan({"x": big}, [1, 2, 4], [TensorSpec("x", "float32", (-1, 3, 736, 736))])
    assert shapes(fixed) == [(1, 3, 736, 736)]
    two = plan({"x": big, "scale": np.ones((1, 2), np.float32)}, [1, 2],
               [TensorSpec("x", "float32", (-1, 3, -1, -1)), TensorSpec("scale", "float32", (-1, 2))])
    assert shapes(two) == [(1, 3, 736, 736)]


def test_batch_sizes_are_powers_of_two_and_the_maximum() -> None:
    assert batch_sizes(1) == [1]
    assert batch_sizes(6) == [1, 2, 4, 6]


@pytest.mark.slow
def test_real_v5_det_warms_up_in_a_bounded_number_of_runs(tmp_path: Path) -> None:
    """PP-OCRv5 det at --max-batch-size 8 used to run 1, 2, 4 and 8 pages of 736x736 twice
    each (30 page runs, 247 s on a shared CPU); now it runs one page and three small batches."""
    _ocr.require_exports()
    from workbench import ModelRepository
    from workbench.model.runtime_settings import RuntimeSettings
    from workbench.runtime.device import Device
    from workbench.runtime.loaded import WARMUP_RUNS, LoadedVersion
    from workbench.runtime.paddle import PaddleProbe

    repo = ModelRepository(tmp_path / "repo")
    manifest = repo.publish("det", "5.0.0", _ocr.V5_DET, probe=PaddleProbe(),
                            runtime=RuntimeSettings.parse("onednn=off"))
    loaded = LoadedVersion(model="det", version=manifest.version, manifest=manifest,
                           path=repo.path("det", "5.0.0"), device=Device("cpu"),
                           warmup_batch_sizes=(1, 2, 4, 8)).open()
    try:
        ran = [shape["x"] for shape in loaded.warmup_shapes]
        assert ran == [(1, 3, 736, 736), (2, 3, 416, 416), (4, 3, 288, 288), (8, 3, 192, 192)]
        pages = WARMUP_RUNS * sum(np.prod(s) for s in ran) / (3 * 736 * 736)
        assert pages < 6  # page-equivalents run, against 30 before
        # and the first real page is answered by the warmed predictor
        page = loaded.predict(loaded.warmup_inputs())
        assert next(iter(page.values())).shape[-2:] == (736, 736)
    finally:
        loaded.close()
