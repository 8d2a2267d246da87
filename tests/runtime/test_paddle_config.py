"""Runtime settings applied to Paddle Inference's Config.

CPU settings are checked on a real ``paddle.inference.Config``. The GPU branch
(precision, TensorRT with dynamic shapes) cannot run here (no GPU, CPU wheel): a fake
Config records the calls it would make against the documented API, and that is all
these tests prove about it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from workbench.model import formats
from workbench.model.runtime_settings import RuntimeSettings, ShapeRange
from workbench.runtime.device import Device
from workbench.runtime.paddle import PaddlePredictor
from workbench.runtime.paddle_config import ONEDNN_CACHE_SHAPES, apply_settings


class FakeConfig:
    """Records each Config call (name and arguments)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, args))


class FakePrecision:
    Float32, Half, Bfloat16 = "Float32", "Half", "Bfloat16"


def _calls(settings: RuntimeSettings, device: str, threads: int = 1) -> list[tuple[str, tuple[Any, ...]]]:
    config = FakeConfig()
    apply_settings(config, settings, Device.parse(device), cpu_threads=threads, precision_type=FakePrecision)
    return config.calls


def test_default_settings_touch_only_device_threads_and_the_onednn_cache() -> None:
    assert _calls(RuntimeSettings(), "cpu", threads=3) == [
        ("disable_gpu", ()), ("set_cpu_math_library_num_threads", (3,)),
        ("set_mkldnn_cache_capacity", (ONEDNN_CACHE_SHAPES,)),  # oneDNN is Paddle's default
    ]


def test_cpu_settings_map_to_config_calls() -> None:
    settings = RuntimeSettings.parse("onednn=off,ir_optim=off,memory_optim=on,threads=2,delete_pass=a_pass+b")
    assert _calls(settings, "cpu", threads=8) == [
        ("disable_gpu", ()),
        ("set_cpu_math_library_num_threads", (2,)),  # the version's own count wins
        ("disable_mkldnn", ()),
        ("switch_ir_optim", (False,)),
        ("enable_memory_optim", (True,)),
        ("delete_pass", ("a_pass",)),
        ("delete_pass", ("b",)),
    ]
    assert _calls(RuntimeSettings(onednn=True), "cpu")[2:] == [
        ("set_mkldnn_cache_capacity", (ONEDNN_CACHE_SHAPES,)), ("enable_mkldnn", ()),
    ]


def test_gpu_branch_unrun_sets_precision_and_tensorrt_shapes() -> None:
    """Unrun on real hardware: what the GPU branch would call, per Paddle's documented API."""
    shapes = (ShapeRange("x", (1, 3, 32, 32), (1, 3, 736, 736), (4, 3, 4000, 4000)),)
    settings = RuntimeSettings(precision="fp16", tensorrt=True, trt_shapes=shapes, onednn=False)
    device = Device.parse("gpu:1")
    calls = _calls(settings, "gpu:1")
    assert calls[0] == ("enable_use_gpu", (device.memory_pool_mb, 1, "Half"))
    assert calls[1] == ("enable_tensorrt_engine", (1 << 30, 4, 3, "Half", False, False))
    assert calls[2] == (
        "set_trt_dynamic_shape_info",
        ({"x": [1, 3, 32, 32]}, {"x": [4, 3, 4000, 4000]}, {"x": [1, 3, 736, 736]}),
    )
    assert not any(name in {"disable_mkldnn", "set_cpu_math_library_num_threads"} for name, _ in calls)
    bf16 = _calls(RuntimeSettings(precision="bf16"), "gpu")
    assert bf16 == [("enable_use_gpu", (Device.parse("gpu").memory_pool_mb, 0, "Bfloat16"))]


def test_real_config_reports_the_settings_the_predictor_runs_with(demo_repo: Path) -> None:
    files = formats.detect(demo_repo / "digits" / "1.0.0")
    sample = {"x": np.ones((2, 64), np.float32)}
    plain = PaddlePredictor.open(files, Device("cpu"), settings=RuntimeSettings.parse("onednn=off,ir_optim=off,threads=2"))
    assert plain.in_effect == {"gpu": False, "onednn": False, "ir_optim": False, "cpu_threads": 2, "tensorrt": False}
    tuned = PaddlePredictor.open(files, Device("cpu"), settings=RuntimeSettings.parse("onednn=on"))
    assert tuned.in_effect["onednn"] is True and tuned.in_effect["ir_optim"] is True
    np.testing.assert_allclose(plain.run(sample)["probabilities"], tuned.run(sample)["probabilities"], rtol=1e-4)
    for predictor in (plain, tuned):
        predictor.release()


def test_deleting_a_pass_paddle_does_not_know_still_loads(demo_repo: Path) -> None:
    files = formats.detect(demo_repo / "digits" / "1.0.0")
    predictor = PaddlePredictor.open(files, Device("cpu"), settings=RuntimeSettings(delete_passes=("no_such_pass",)))
    # Paddle ignores unknown pass names: the setting is recorded, the model still runs
    assert predictor.run({"x": np.ones((1, 64), np.float32)})["probabilities"].shape == (1, 10)
    predictor.release()
    with pytest.raises(ValueError, match="pass names"):
        RuntimeSettings(delete_passes=("bad name",))

