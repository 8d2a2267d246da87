"""Devices: ``auto`` is decided without importing Paddle."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests._python import NO_PADDLE, run_python
from workbench.runtime import device
from workbench.runtime.device import Device

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def test_auto_is_the_cpu_here_and_deciding_it_imports_no_paddle() -> None:
    run_python(
        "import sys\n"
        "from workbench.runtime.device import Device, available_devices\n"
        "assert str(Device.parse('auto')) == 'cpu'\n"
        "assert available_devices() == ['auto', 'cpu']\n" + NO_PADDLE,
        timeout=60,
    )


def test_visible_gpus_need_a_gpu_build_and_respect_cuda_visible_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gpus = tmp_path / "gpus"
    for bus in ("0000:01:00.0", "0000:02:00.0"):
        (gpus / bus).mkdir(parents=True)
    monkeypatch.setattr(device, "NVIDIA_GPUS", gpus)
    monkeypatch.setattr(device, "DEV", tmp_path / "dev")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert device.visible_gpu_count() == 0  # a CPU build of Paddle: no GPU, whatever the driver says
    monkeypatch.setattr(device, "_installed", lambda name: name == "paddlepaddle-gpu")
    assert device.visible_gpu_count() == 2
    assert Device.parse("auto") == Device("gpu", 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert device.visible_gpu_count() == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert device.visible_gpu_count() == 0
    assert Device.parse("auto") == Device("cpu", 0)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(device, "NVIDIA_GPUS", tmp_path / "absent")
    (tmp_path / "dev").mkdir()
    for node in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (tmp_path / "dev" / node).touch()
    assert device.visible_gpu_count() == 2  # the device nodes, where /proc has no driver entries
