"""A version's runtime settings applied to a ``paddle.inference.Config``.

The settings (:class:`~workbench.model.runtime_settings.RuntimeSettings`) come from
the signed manifest; this module turns them into calls of Paddle Inference 3.x's
documented Config API, and nothing else touches those switches:

- CPU: ``disable_gpu``, ``set_cpu_math_library_num_threads``, ``enable_mkldnn`` /
  ``disable_mkldnn`` (oneDNN), ``set_mkldnn_cache_capacity``, ``switch_ir_optim``,
  ``enable_memory_optim``, ``delete_pass``.
- GPU: ``enable_use_gpu(memory_pool_init_size_mb, device_id, precision_mode)`` with
  ``PrecisionType.Float32/Half/Bfloat16``; with TensorRT,
  ``enable_tensorrt_engine(workspace_size, max_batch_size, min_subgraph_size,
  precision_mode, use_static, use_calib_mode)`` and
  ``set_trt_dynamic_shape_info(min, max, opt)`` from the shape ranges.

The GPU branch is written against that documented API and unit-tested with a fake
Config recording the calls; it has not been run here (no GPU, CPU wheel of Paddle).

A switch left ``None`` is not touched, so Paddle's default holds: versions published
before settings were recorded load exactly as before.

One thing is always set where oneDNN may run (on, or Paddle's default, which is on):
its cache of kernels by input shape holds at most :data:`ONEDNN_CACHE_SHAPES` shapes.
Paddle's own default keeps every shape it has seen; a detector fed pages of many sizes
(``DetResizeForTest`` gives one shape per page size, in steps of 32 pixels) then grows
by each new shape's kernels and buffers for as long as it serves (about 10 MB a shape
for PP-OCRv4's detector at 320x500, more for larger pages). The cap changes no output:
a shape that fell out of the cache is built again when it comes back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.model.runtime_settings import RuntimeSettings
    from workbench.runtime.device import Device

TRT_WORKSPACE_BYTES = 1 << 30
TRT_MIN_SUBGRAPH = 3
#: Input shapes oneDNN keeps kernels for, per predictor (PaddleOCR's predictors use 10).
ONEDNN_CACHE_SHAPES = 10
_PRECISION_NAMES = {"fp32": "Float32", "fp16": "Half", "bf16": "Bfloat16"}


def apply_settings(
    config: Any,
    settings: RuntimeSettings,
    device: Device,
    *,
    cpu_threads: int,
    precision_type: Any,
) -> list[str]:
    """Set ``settings`` on ``config`` for ``device``; return the calls made, in order.

    ``cpu_threads`` is the loader's thread count, used unless the version fixes its
    own. ``precision_type`` is ``paddle.inference.PrecisionType`` (passed in so the
    GPU branch can be tested without a GPU build).
    """
    calls: list[str] = []

    def call(name: str, *args: Any) -> None:
        getattr(config, name)(*args)
        calls.append(f"{name}({', '.join(map(repr, args))})")

    if device.is_gpu:
        precision = getattr(precision_type, _PRECISION_NAMES[settings.precision])
        call("enable_use_gpu", device.memory_pool_mb, device.index, precision)
        if settings.tensorrt:
            call(
                "enable_tensorrt_engine",
                TRT_WORKSPACE_BYTES,
                max((s.max[0] for s in settings.trt_shapes if s.max), default=1),
                TRT_MIN_SUBGRAPH,
                precision,
                False,  # use_static: no serialised engine cache next to read-only weights
                False,  # use_calib_mode: no int8 calibration
            )
            if settings.trt_shapes:
                call(
                    "set_trt_dynamic_shape_info",
                    {s.name: list(s.min) for s in settings.trt_shapes},
                    {s.name: list(s.max) for s in settings.trt_shapes},
                    {s.name: list(s.opt) for s in settings.trt_shapes},
                )
    else:
        call("disable_gpu")
        call("set_cpu_math_library_num_threads", settings.cpu_threads or cpu_threads)
        if settings.onednn is False:
            call("disable_mkldnn")
        else:
            call("set_mkldnn_cache_capacity", ONEDNN_CACHE_SHAPES)
            if settings.onednn is True:
                call("enable_mkldnn")
    if settings.ir_optim is not None:
        call("switch_ir_optim", settings.ir_optim)
    if settings.memory_optim is not None:
        call("enable_memory_optim", settings.memory_optim)
    for name in settings.delete_passes:
        call("delete_pass", name)
    return calls


def settings_in_effect(config: Any) -> dict[str, Any]:
    """What a Config reports it will do (read back after :func:`apply_settings`)."""
    report: dict[str, Any] = {}
    for key, method in (
        ("gpu", "use_gpu"),
        ("onednn", "mkldnn_enabled"),
        ("ir_optim", "ir_optim"),
        ("cpu_threads", "cpu_math_library_num_threads"),
        ("tensorrt", "tensorrt_engine_enabled"),
    ):
        try:
            report[key] = getattr(config, method)()
        except Exception:  # a build without the query
            continue
    return report
