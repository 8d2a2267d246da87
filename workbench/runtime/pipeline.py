"""A pipeline version in memory: its stage versions loaded, held by the hub as one version.

A pipeline version (:mod:`workbench.model.pipeline`) names the exact model versions of
its stages (det, optional cls, rec). :class:`LoadedPipeline` loads each of them the way
the hub loads any version (its runtime settings from its own manifest, the hub's device,
workers and isolation), warms them, and then stands in the hub for the pipeline version:
it is leased, activated, primed before a switch, drained and unloaded like a model's
version, so ``use``, ``rollback`` and the watcher's hot-swap work on pipelines unchanged.
Its stages come from ``open_stage`` and go back through ``close_stage`` once it is drained:
the hub shares a stage version between the pipelines naming it
(:mod:`workbench.runtime.stages`), so unloading a pipeline unloads only the stages no
other loaded pipeline uses.

It answers no raw tensors (a pipeline has no tensor signature of its own): the serving
layer runs its stages through the OCR chain of their codecs
(:mod:`workbench.serving.pipelines`), calling :meth:`stage_predict` for each stage.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING, Any, cast

from workbench.errors import InputError
from workbench.runtime.loaded import LoadedVersion, LoadState
from workbench.runtime.memory import MemoryUsage

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    import numpy as np

    from workbench._types import Array, Tensors, TensorsIn
    from workbench.model.manifest import Manifest, TensorSpec
    from workbench.model.pipeline import PipelineManifest, Stage
    from workbench.model.version import Version
    from workbench.runtime.device import Device

log = logging.getLogger(__name__)

#: Batch sizes each stage is warmed with. The OCR chain sends the detector one image at a
#: time and the orientation classifier and recogniser up to six crops at once
#: (``OcrChain.rec_batch``); warming the detector at larger batches of its 736x736 sample
#: would cost minutes on a CPU for batches it never gets.
STAGE_WARMUP: Mapping[str, tuple[int, ...]] = {"det": (1,), "cls": (1, 6), "rec": (1, 6)}


class LoadedPipeline(LoadedVersion):
    """A pipeline version whose stage versions are loaded; see the module docstring."""

    def __init__(
        self,
        *,
        model: str,
        version: Version,
        pipeline: PipelineManifest,
        path: Path,
        device: Device,
        open_stage: Callable[[Stage, tuple[int, ...]], LoadedVersion],
        close_stage: Callable[[LoadedVersion], object] | None = None,
    ) -> None:
        """``close_stage(stage)`` gives a stage back once the pipeline no longer needs it
        (default: unload it)."""
        # The hub and the serving layer hold every version as a LoadedVersion; a pipeline's
        # ``manifest`` is its PipelineManifest (``pipeline``, typed), never a model's.
        super().__init__(model=model, version=version, manifest=cast("Manifest", pipeline),
                         path=path, device=device)
        self.pipeline = pipeline
        self._open_stage = open_stage
        self._close_stage = close_stage
        self.stages: dict[str, LoadedVersion] = {}

    isolation = "pipeline"

    def __repr__(self) -> str:
        stages = ", ".join(f"{role}={lv.model}:{lv.version}" for role, lv in self.stages.items())
        return f"<LoadedPipeline {self.model}:{self.version} ({stages}) ({self.state.value})>"

    # -- lifecycle -------------------------------------------------------------------

    def open(self, *, warmup: bool = True) -> LoadedPipeline:
        """Load and warm every stage in order (det, cls, rec); then the pipeline is READY.

        A stage that fails to load unloads those already loaded and the error propagates.
        """
        started = time.perf_counter()
        self.state = LoadState.WARMING if warmup else LoadState.LOADING
        try:
            for stage in self.pipeline.stages:
                self.stages[stage.role] = self._open_stage(stage, STAGE_WARMUP[stage.role])
        except BaseException:
            self._close_stages()
            raise
        self.load_seconds = time.perf_counter() - started
        self.loaded_at = time.time()
        self.state = LoadState.READY
        log.info("%s:%s ready (%s) in %.2fs", self.model, self.version,
                 ", ".join(s.ref for s in self.pipeline.stages), self.load_seconds)
        return self

    def close(self, timeout: float | None = 30.0) -> None:
        """Wait for in-flight requests to finish, then unload every stage."""
        with self._lock:
            if not self._drain(timeout):
                return
        self._close_stages()
        log.info("%s:%s unloaded", self.model, self.version)

    def _close_stages(self) -> None:
        stages, self.stages = self.stages, {}
        for loaded in stages.values():
            try:
                if self._close_stage is not None:
                    self._close_stage(loaded)
                else:
                    loaded.close()
            except Exception:
                log.exception("%s:%s: could not unload stage %r", self.model, self.version, loaded)

    def prime(self) -> int:
        """Prime every stage before the hub makes this pipeline active."""
        if self.state is not LoadState.READY:
            return 0
        return sum(loaded.prime() for loaded in list(self.stages.values()))

    # -- requests --------------------------------------------------------------------

    def stage_predict(self, role: str) -> Callable[[Array], Array] | None:
        """``predict(batch) -> first output`` of the stage playing ``role`` (None without one),
        for a caller holding a lease on this pipeline."""
        loaded = self.stages.get(role)
        if loaded is None:
            return None
        name, first = loaded.inputs[0].name, loaded.outputs[0].name

        def predict(batch: Array) -> Array:
            started = time.perf_counter()
            try:
                output = loaded.predict({name: batch}, validate=False)[first]
            except Exception:
                self._failed += 1
                raise
            self._latencies.append(time.perf_counter() - started)
            return output

        return predict

    def counted(self, *, failed: bool = False) -> None:
        """Count one request served (the chain ran to its end), or one that failed."""
        if failed:
            self._failed += 1
        else:
            self._served += 1

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return ()  # encoded images (BYTES): no tensor signature

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return ()

    @functools.cached_property
    def output_names(self) -> frozenset[str]:
        return frozenset()

    @functools.cached_property
    def expected_inputs(self) -> dict[str, tuple[TensorSpec, np.dtype[Any], tuple[int, ...], bool]]:
        return {}

    @property
    def memory(self) -> MemoryUsage:
        usages = [lv.memory for lv in self.stages.values()]
        gpus = [u.gpu_bytes for u in usages if u.gpu_bytes is not None]
        scope = usages[0].scope if usages else "load growth"
        return MemoryUsage(
            sum(u.rss_bytes for u in usages), sum(gpus) if gpus else None, scope=scope,
            weights_bytes=sum(u.weights_bytes for u in usages),
        )

    def validate(self, inputs: TensorsIn, *, allow_nonfinite: bool = False) -> Tensors:
        raise InputError(
            f"{self.model}:{self.version} is an OCR pipeline: send encoded images as one BYTES "
            "input, not tensors"
        )

    def predict(self, inputs: TensorsIn, *, validate: bool = True) -> Tensors:
        return self.validate(inputs)

    def warmup_inputs(self) -> Tensors:
        raise InputError(f"{self.model}:{self.version} is an OCR pipeline: it has no tensor sample")

    def stats(self) -> dict[str, Any]:
        stats = super().stats()
        stats["stages"] = {role: f"{lv.model}:{lv.version}" for role, lv in self.stages.items()}
        return stats
