"""Memory accounting: process RSS, and GPU memory where NVML is available."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psutil

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemoryUsage:
    """Bytes attributed to a loaded version, and what the figure measures (``scope``).

    ``worker``: the resident memory of the version's own worker processes (process
    isolation). ``load growth``: how much the shared process grew while the version
    loaded and warmed (thread isolation); the first version loaded also carries
    Paddle's one-time start-up, so it is not what the version alone holds, and a
    process that freed memory earlier reuses it, so a reload can grow it by nothing.
    ``weights_bytes``: the size of the version's parameter files, the floor of what
    it holds on its device whatever the process did before (0 where unknown).
    """

    rss_bytes: int
    gpu_bytes: int | None = None
    scope: str = "load growth"
    weights_bytes: int = 0

    def __str__(self) -> str:
        text = f"{self.rss_bytes / 2**20:.1f} MiB RSS"
        if self.weights_bytes:
            text = f"weights {self.weights_bytes / 2**20:.1f} MiB, {text}"
        if self.gpu_bytes is not None:
            text += f", {self.gpu_bytes / 2**20:.1f} MiB GPU"
        return f"{text} ({self.scope})"


def process_rss(pid: int | None = None) -> int:
    """Resident memory of this process (or of ``pid``); 0 when that process is gone."""
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.NoSuchProcess:
        return 0


def gpu_memory_used(index: int, pid: int | None = None) -> int | None:
    """Memory used on GPU ``index`` by this process (or ``pid``), via NVML; None where unavailable.

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
        pid = pid or psutil.Process().pid
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == pid:
                return int(proc.usedGpuMemory or 0)
        return 0
    except Exception as exc:
        log.debug("NVML unavailable: %s", exc)
        return None


def nvml_gpu_count() -> int:
    """GPUs NVML sees, without importing Paddle (0 where NVML is unavailable)."""
    try:
        import pynvml
    except ModuleNotFoundError:
        return 0
    try:
        pynvml.nvmlInit()
        return int(pynvml.nvmlDeviceGetCount())
    except Exception:
        return 0
