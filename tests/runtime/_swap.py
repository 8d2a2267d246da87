"""Client threads calling ``hub.predict`` while the active version is switched."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from workbench import VersionHub

OUTPUT = "probabilities"


@dataclass
class SwapRun:
    failures: list[BaseException] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # answers unlike their version's
    served: Counter[str] = field(default_factory=Counter)


def swap_under_load(hub: VersionHub, rows: np.ndarray, order: list[str], *, threads: int,
                    pause: float, max_requests: int = 400) -> SwapRun:
    """Switch through ``order`` (``pause`` s apart) while ``threads`` clients predict."""
    expected = {str(lv.version): lv.predict({"x": rows})[OUTPUT] for lv in hub.loaded}
    run = SwapRun()
    stop = threading.Event()
    lock = threading.Lock()

    def client() -> None:
        for _ in range(max_requests):
            if stop.is_set():
                return
            try:
                result = hub.predict({"x": rows})
            except BaseException as exc:
                run.failures.append(exc)
                continue
            version = str(result.version)
            # the outputs must be exactly those of the version that claims them
            if not np.allclose(result.outputs[OUTPUT], expected[version], atol=1e-6):
                run.mismatched.append(version)
            with lock:
                run.served[version] += 1

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for version in order:
        time.sleep(pause)
        hub.use(version)
    time.sleep(pause)
    stop.set()
    for worker in workers:
        worker.join(30)
    return run
