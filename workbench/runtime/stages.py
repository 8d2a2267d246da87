"""Stage versions shared by the pipeline versions that name them, loaded once, refcounted.

Two pipeline versions often name the same stage version (OCR 4.0.0 and 5.0.0 share the
v2 orientation classifier). Loading it once for both keeps one set of workers (and
their memory) instead of two, and lets the serving layer batch that stage's work for
requests of either pipeline (Triton's ensembles share a composing model the same way).

:class:`SharedStages` holds each stage version (``model:version``) once with a count of
the pipelines holding it: :meth:`~SharedStages.acquire` loads it on first use (or waits
for a load already under way) and counts one more holder; :meth:`~SharedStages.release`
counts one fewer and unloads it when nobody holds it any more. Unloading one pipeline
therefore never unloads a stage another loaded pipeline still uses. A stage version is
keyed by model and version only: the hub loads every stage of its pipelines on its own
device and isolation, and the first load's settings (workers, warm-up) serve all holders.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from workbench.runtime.loaded import LoadedVersion

log = logging.getLogger(__name__)


class SharedStages:
    """Loaded stage versions by ``model:version``, each with its holders' count; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: dict[str, tuple[LoadedVersion, int]] = {}
        self._loading: dict[str, Future[LoadedVersion]] = {}
        self.loads = 0  # stage versions loaded (a shared one counts once)

    def __repr__(self) -> str:
        held = ", ".join(f"{ref} x{count}" for ref, (_, count) in self._loaded.items())
        return f"<SharedStages {held or 'empty'}>"

    def acquire(self, ref: str, open_stage: Callable[[], LoadedVersion]) -> LoadedVersion:
        """The loaded stage ``ref``, counted once more; ``open_stage()`` loads it when no
        pipeline holds it yet. A failed load raises here and for every caller waiting on it."""
        with self._lock:
            entry = self._loaded.get(ref)
            if entry is not None:
                self._loaded[ref] = (entry[0], entry[1] + 1)
                return entry[0]
            pending = self._loading.get(ref)
            owner = pending is None
            if pending is None:
                pending = self._loading[ref] = Future()
        if not owner:
            pending.result()  # another pipeline is loading it: wait, then count it again
            return self.acquire(ref, open_stage)
        try:
            loaded = open_stage()
        except BaseException as exc:
            with self._lock:
                del self._loading[ref]
            pending.set_exception(exc)
            raise
        with self._lock:
            del self._loading[ref]
            self._loaded[ref] = (loaded, 1)
            self.loads += 1
        pending.set_result(loaded)
        return loaded

    def release(self, loaded: LoadedVersion, timeout: float | None = 30.0) -> bool:
        """Count one holder of ``loaded`` fewer; unload it when it was the last one.
        Returns whether it was unloaded."""
        ref = f"{loaded.model}:{loaded.version}"
        with self._lock:
            entry = self._loaded.get(ref)
            if entry is None or entry[0] is not loaded:
                last = True  # not shared through here: it belongs to its one holder
            else:
                last = entry[1] <= 1
                if last:
                    del self._loaded[ref]
                else:
                    self._loaded[ref] = (loaded, entry[1] - 1)
        if last:
            loaded.close(timeout=timeout)
        else:
            log.info("%s stays loaded: another pipeline still uses it", ref)
        return last

    def loaded(self) -> list[LoadedVersion]:
        """The stage versions loaded now."""
        with self._lock:
            return [loaded for loaded, _ in self._loaded.values()]

    def holders(self, ref: str) -> int:
        """How many pipelines hold stage ``ref`` (0 when it is not loaded)."""
        with self._lock:
            entry = self._loaded.get(ref)
            return entry[1] if entry is not None else 0
