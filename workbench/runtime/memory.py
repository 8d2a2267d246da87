"""Memory accounting: process RSS, and GPU memory where NVML is available."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psutil

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemoryUsage:
    """Bytes attributed to a loaded version (measured around its load and warm-up)."""

    rss_bytes: int
    gpu_bytes: int | None = None

    def __str__(self) -> str:
        text = f"{self.rss_bytes / 2**20:.1f} MiB RSS"
        if self.gpu_bytes is not None:
            text += f", {self.gpu_bytes / 2**20:.1f} MiB GPU"
        return text


def process_rss() -> int:
    return int(psutil.Process().memory_info().rss)


def gpu_memory_used(index: int) -> int | None:
    """Memory used on GPU ``index`` by this process, via NVML; None where unavailable.

    This path is written against NVML's documented API and is not exercised on
    machines without an NVIDIA GPU.
    """
    try:
        import pynvml  # type: ignore[import-not-found]
    except ModuleNotFoundError:
        return None
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pid = psutil.Process().pid
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == pid:
                return int(proc.usedGpuMemory or 0)
        return 0
    except Exception as exc:
        log.debug("NVML unavailable: %s", exc)
        return None
