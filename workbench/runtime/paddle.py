"""Paddle Inference adapter for the predictor seam, and the probe publishing runs models by.

CPU is exercised by the tests. A version's runtime settings (oneDNN, IR and memory
optimisation, threads, deleted passes; on a GPU precision and TensorRT) are applied
by :mod:`workbench.runtime.paddle_config`. The GPU branch (``Config.enable_use_gpu``
with a memory pool, device id and precision) follows Paddle Inference's documented
API but cannot be run on machines without a CUDA build of Paddle and a GPU.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench._paddle import import_inference
from workbench.errors import ModelLoadError, PredictError
from workbench.model.probe import Measurement
from workbench.model.runtime_settings import RuntimeSettings
from workbench.runtime.device import Device, gpu_count
from workbench.runtime.paddle_config import apply_settings, settings_in_effect

if TYPE_CHECKING:
    from workbench._types import Tensors, TensorsIn
    from workbench.model.formats import ModelFiles

log = logging.getLogger(__name__)


class PaddlePredictor:
    """One ``paddle.inference`` predictor with its input and output names."""

    def __init__(self, predictor: Any, *, device: str, in_effect: dict[str, Any] | None = None) -> None:
        self._predictor = predictor
        self.device = device
        # What the config reported after the version's settings were applied.
        self.in_effect: dict[str, Any] = dict(in_effect or {})
        self.input_names: list[str] = list(predictor.get_input_names())
        self.output_names: list[str] = list(predictor.get_output_names())
        # handles belong to the predictor and stay valid across runs: looked up once
        self._inputs = [(name, predictor.get_input_handle(name)) for name in self.input_names]
        self._outputs = [(name, predictor.get_output_handle(name)) for name in self.output_names]

    @classmethod
    def open(
        cls,
        files: ModelFiles,
        device: Device,
        *,
        cpu_threads: int = 1,
        settings: RuntimeSettings | None = None,
    ) -> PaddlePredictor:
        """Create a predictor for ``files`` on ``device`` with a version's ``settings``
        (Paddle's defaults when None); Paddle errors become ModelLoadError.

        ``cpu_threads`` applies unless the settings fix a thread count of their own.
        """
        inference = import_inference()
        if files.format == "legacy" and files.params is None:
            config = inference.Config(str(files.program.parent))
        elif files.params is None:
            raise ModelLoadError(f"{files.program} has no parameters file (.pdiparams)")
        else:
            config = inference.Config(str(files.program), str(files.params))
        config.disable_glog_info()
        if device.is_gpu:
            _require_cuda(device)
        apply_settings(
            config, settings or RuntimeSettings(), device,
            cpu_threads=cpu_threads, precision_type=inference.PrecisionType,
        )
        in_effect = settings_in_effect(config)
        try:
            predictor = inference.create_predictor(config)
        except Exception as exc:
            raise ModelLoadError(f"Paddle could not load {files.program}: {_first_line(exc)}") from exc
        return cls(predictor, device=str(device), in_effect=in_effect)

    def run(self, inputs: TensorsIn) -> Tensors:
        try:
            for name, handle in self._inputs:
                array = np.ascontiguousarray(inputs[name])
                handle.reshape(list(array.shape))
                handle.copy_from_cpu(array)
            self._predictor.run()
            return {name: handle.copy_to_cpu() for name, handle in self._outputs}
        except KeyError as exc:
            raise PredictError(f"input {exc.args[0]!r} missing") from exc
        except Exception as exc:
            raise PredictError(f"Paddle failed to run the batch: {_first_line(exc)}") from exc

    def clone(self) -> PaddlePredictor:
        return PaddlePredictor(self._predictor.clone(), device=self.device, in_effect=self.in_effect)

    def release(self) -> None:
        try:
            self._predictor.clear_intermediate_tensor()
            self._predictor.try_shrink_memory()
        except Exception as exc:
            log.debug("releasing predictor: %s", exc)
        self._predictor = None
        self._inputs = self._outputs = []


class PaddleProbe:
    """The model layer's :class:`~workbench.model.probe.ModelProbe`, on Paddle's CPU predictor.

    Faces hand it to ``ModelRepository.publish`` to describe outputs and to try runtime
    settings (``--runtime auto``). Each call loads its own predictor and releases it.
    """

    def __init__(self, *, cpu_threads: int = 1) -> None:
        self.cpu_threads = cpu_threads

    def measure(
        self, files: ModelFiles, inputs: TensorsIn, settings: RuntimeSettings, *, runs: int = 0
    ) -> Measurement:
        predictor = PaddlePredictor.open(
            files, Device("cpu"), cpu_threads=self.cpu_threads, settings=settings
        )
        try:
            missing = sorted(set(predictor.input_names) - set(inputs))
            if missing:
                raise ModelLoadError(
                    f"the model's inputs are {predictor.input_names}, the sample gives {sorted(inputs)}"
                )
            batch = {name: np.asarray(inputs[name]) for name in predictor.input_names}
            outputs = predictor.run(batch)
            seconds = []
            for _ in range(runs):
                started = time.perf_counter()
                predictor.run(batch)
                seconds.append(time.perf_counter() - started)
            return Measurement(outputs, tuple(seconds), predictor.in_effect)
        finally:
            predictor.release()


def _require_cuda(device: Device) -> None:
    count = gpu_count()
    if count == 0:
        raise ModelLoadError(
            f"device {device} asked for, but this Paddle build sees no GPU "
            "(install paddlepaddle-gpu and check the driver), or use --device cpu"
        )
    if device.index >= count:
        raise ModelLoadError(f"device {device} asked for, but only {count} GPU(s) are visible")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # Paddle's C++ errors put the useful sentence after a long stack; keep it short.
    for line in lines:
        if "Error" in line or "error" in line:
            return line[:400]
    return (lines[0] if lines else type(exc).__name__)[:400]
