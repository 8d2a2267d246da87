"""Paddle Inference adapter for the predictor seam.

CPU is exercised by the tests. The GPU branch (``Config.enable_use_gpu`` with a
memory pool and device id) follows Paddle Inference's documented API but cannot
be run on machines without a CUDA build of Paddle and a GPU.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench._paddle import import_inference
from workbench.errors import ModelLoadError, PredictError
from workbench.model.manifest import TensorSpec

if TYPE_CHECKING:
    from collections.abc import Sequence

    from workbench._types import Tensors, TensorsIn
    from workbench.model.formats import ModelFiles
    from workbench.runtime.device import Device

log = logging.getLogger(__name__)


class PaddlePredictor:
    """One ``paddle.inference`` predictor with its input and output names."""

    def __init__(self, predictor: Any, *, device: str) -> None:
        self._predictor = predictor
        self.device = device
        self.input_names: list[str] = list(predictor.get_input_names())
        self.output_names: list[str] = list(predictor.get_output_names())
        # handles belong to the predictor and stay valid across runs: looked up once
        self._inputs = [(name, predictor.get_input_handle(name)) for name in self.input_names]
        self._outputs = [(name, predictor.get_output_handle(name)) for name in self.output_names]

    @classmethod
    def open(cls, files: ModelFiles, device: Device, *, cpu_threads: int = 1) -> PaddlePredictor:
        """Create a predictor for ``files`` on ``device``; Paddle errors become ModelLoadError."""
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
            # memory_pool_init_size_mb, device_id: Paddle Inference's GPU setup.
            config.enable_use_gpu(device.memory_pool_mb, device.index)
        else:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(cpu_threads)
        try:
            predictor = inference.create_predictor(config)
        except Exception as exc:
            raise ModelLoadError(f"Paddle could not load {files.program}: {_first_line(exc)}") from exc
        return cls(predictor, device=str(device))

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
        return PaddlePredictor(self._predictor.clone(), device=self.device)

    def release(self) -> None:
        try:
            self._predictor.clear_intermediate_tensor()
            self._predictor.try_shrink_memory()
        except Exception as exc:
            log.debug("releasing predictor: %s", exc)
        self._predictor = None
        self._inputs = self._outputs = []


def probe_outputs(
    files: ModelFiles, inputs: Sequence[TensorSpec], sample: TensorsIn
) -> tuple[TensorSpec, ...]:
    """Run ``sample`` once on the CPU and describe the outputs (batch dimension dynamic)."""
    from workbench.runtime.device import Device

    predictor = PaddlePredictor.open(files, Device("cpu"))
    missing = [spec.name for spec in inputs if spec.name not in sample]
    if missing or set(predictor.input_names) != {spec.name for spec in inputs}:
        raise ModelLoadError(
            f"the model's inputs are {predictor.input_names}, the sample gives {sorted(sample)}"
        )
    outputs = predictor.run({name: np.asarray(array) for name, array in sample.items()})
    predictor.release()
    return tuple(TensorSpec.from_array(name, array) for name, array in outputs.items())


def _require_cuda(device: Device) -> None:
    from workbench.runtime.device import gpu_count

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
