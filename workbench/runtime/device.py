"""Where a version runs: ``cpu`` or ``gpu:N`` (with a memory-pool size), or ``auto``."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

_DEVICE = re.compile(r"^(?:(?P<cpu>cpu)|(?P<gpu>gpu)(?::(?P<index>\d+))?|(?P<auto>auto))$")
DEFAULT_POOL_MB = 512


@dataclass(frozen=True)
class Device:
    """A device spec; ``kind`` is ``cpu`` or ``gpu``. Parse with :meth:`parse`."""

    kind: str = "cpu"
    index: int = 0
    memory_pool_mb: int = DEFAULT_POOL_MB

    def __post_init__(self) -> None:
        if self.kind not in {"cpu", "gpu"}:
            raise ValueError(f"device kind must be cpu or gpu, not {self.kind!r}")
        if self.index < 0 or self.memory_pool_mb <= 0:
            raise ValueError("device index must be >= 0 and memory pool > 0 MB")

    @classmethod
    def parse(cls, text: str | Device, *, memory_pool_mb: int | None = None) -> Device:
        """``cpu``, ``gpu``, ``gpu:1`` or ``auto`` (the first GPU if Paddle can use one, else CPU).

        ``auto`` is decided without importing Paddle (:func:`visible_gpu_count`), so a
        front that runs its versions in worker processes never loads it.
        """
        if isinstance(text, Device):
            return text
        match = _DEVICE.match(text.strip().lower())
        if match is None:
            raise ValueError(f"invalid device {text!r}: use cpu, gpu, gpu:N or auto")
        pool = memory_pool_mb or DEFAULT_POOL_MB
        if match["cpu"]:
            return cls("cpu", 0, pool)
        if match["gpu"]:
            return cls("gpu", int(match["index"] or 0), pool)
        return cls("gpu", 0, pool) if visible_gpu_count() > 0 else cls("cpu", 0, pool)

    @property
    def is_gpu(self) -> bool:
        return self.kind == "gpu"

    def __str__(self) -> str:
        return f"gpu:{self.index}" if self.is_gpu else "cpu"


def gpu_count() -> int:
    """GPUs visible to this Paddle build (0 for CPU builds or when none is present)."""
    from workbench._paddle import import_paddle

    paddle = import_paddle()
    if not paddle.device.is_compiled_with_cuda():
        return 0
    try:
        return int(paddle.device.cuda.device_count())
    except Exception:
        return 0


GPU_DISTRIBUTIONS = ("paddlepaddle-gpu",)
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")
DEV = Path("/dev")


def visible_gpu_count() -> int:
    """GPUs a GPU build of Paddle would use here, counted without importing Paddle.

    0 when the installed Paddle is a CPU build (no ``paddlepaddle-gpu`` distribution) or
    ``CUDA_VISIBLE_DEVICES`` hides every GPU; else what NVML counts, or where pynvml is
    not installed the NVIDIA driver's entries under ``/proc`` (or its ``/dev/nvidiaN``
    nodes), capped by ``CUDA_VISIBLE_DEVICES``.
    """
    from workbench.runtime.memory import nvml_gpu_count

    if not any(_installed(name) for name in GPU_DISTRIBUTIONS):
        return 0
    count = nvml_gpu_count()
    if count == 0 and NVIDIA_GPUS.is_dir():
        count = sum(1 for _ in NVIDIA_GPUS.iterdir())
    if count == 0:  # a container given the device nodes but not the driver's /proc entries
        count = sum(1 for node in DEV.glob("nvidia*") if node.name[6:].isdigit())
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [part for part in visible.split(",") if part.strip() not in ("", "-1")]
        count = min(count, len(ids))
    return count


def _installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def available_devices() -> list[str]:
    """The devices a user can pick here: ``auto``, ``cpu`` and each GPU (without importing Paddle)."""
    return ["auto", "cpu", *(f"gpu:{index}" for index in range(visible_gpu_count()))]
