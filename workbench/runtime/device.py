"""Where a version runs: ``cpu`` or ``gpu:N`` (with a memory-pool size), or ``auto``."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
        """``cpu``, ``gpu``, ``gpu:1`` or ``auto`` (the first GPU if Paddle sees one, else CPU)."""
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
        return cls("gpu", 0, pool) if gpu_count() > 0 else cls("cpu", 0, pool)

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


def available_devices() -> list[str]:
    """The devices a user can pick here: ``auto``, ``cpu`` and each GPU Paddle reports."""
    return ["auto", "cpu", *(f"gpu:{index}" for index in range(gpu_count()))]
