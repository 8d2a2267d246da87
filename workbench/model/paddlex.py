"""A PaddleX export's ``inference.yml``: signature, shapes, sample, task and codec.

PaddleX 3 (and PaddleOCR 3) export a model directory with ``inference.json`` (or
``inference.pdmodel``), ``inference.pdiparams`` and ``inference.yml``. The YAML
holds everything needed to publish the directory as is, without a sample:

- ``Hpi.backend_configs.paddle_infer.trt_dynamic_shapes``: per input, the ``[min,
  opt, max]`` shapes. They give the input signature (a dimension that varies is
  ``-1``; the batch dimension always is), TensorRT's shape ranges, and the sample
  (seeded values at the opt shape) used for warm-up, health checks and tuning.
- ``PreProcess.transform_ops`` and ``PostProcess``: copied verbatim into the
  manifest's ``codec`` (``{"preprocess": [...], "postprocess": {...}}``, character
  dictionary included), from which the codecs build pre/post-processing.
- ``PostProcess.name`` (or its one key, as in ``{Topk: {...}}``): the task
  (DBPostProcess -> text-detection, CTCLabelDecode -> text-recognition, Topk ->
  classification, anything else generic).

Exports from before PaddleX (``inference.pdmodel`` without YAML) are published with
a config file written in the same shape (``workbench models publish --config``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from workbench.errors import PublishError
from workbench.model.manifest import TensorSpec
from workbench.model.runtime_settings import SettingsError, ShapeRange
from workbench.model.task import Task, task_for_postprocess

if TYPE_CHECKING:
    from pathlib import Path

CONFIG_NAME = "inference.yml"
SAMPLE_SEED = 2026


@dataclass(frozen=True)
class ExportConfig:
    """What publishing reads from an ``inference.yml``."""

    model_name: str
    shapes: tuple[ShapeRange, ...]
    codec: dict[str, Any]
    task: Task

    def inputs(self) -> tuple[TensorSpec, ...]:
        """The input signature: float32, batch and every varying dimension dynamic."""
        specs = []
        for shape in self.shapes:
            dims = [lo if lo == hi else -1 for lo, hi in zip(shape.min, shape.max, strict=True)]
            if dims:
                dims[0] = -1
            specs.append(TensorSpec(shape.name, "float32", tuple(dims)))
        return tuple(specs)

    def sample(self, which: str = "opt") -> dict[str, np.ndarray[Any, Any]]:
        """Seeded float32 inputs at the ``opt`` (or ``min``/``max``) shape of each input."""
        rng = np.random.default_rng(SAMPLE_SEED)
        return {
            shape.name: rng.uniform(-1.0, 1.0, getattr(shape, which)).astype(np.float32)
            for shape in self.shapes
        }


def read_config(path: Path) -> ExportConfig:
    """Parse ``path`` (an ``inference.yml``); PublishError naming what is wrong or missing."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PublishError(f"config file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PublishError(f"cannot read {path} as YAML: {str(exc).splitlines()[0]}") from exc
    return parse_config(data, source=str(path))


def parse_config(data: Any, *, source: str = CONFIG_NAME) -> ExportConfig:
    """An :class:`ExportConfig` from the parsed YAML ``data``."""
    if not isinstance(data, dict):
        raise PublishError(f"{source} must hold a mapping (PaddleX's inference.yml layout)")
    shapes_data = _dig(data, "Hpi", "backend_configs", "paddle_infer", "trt_dynamic_shapes")
    if not isinstance(shapes_data, dict) or not shapes_data:
        raise PublishError(
            f"{source} has no Hpi.backend_configs.paddle_infer.trt_dynamic_shapes, which names "
            f"the inputs and their [min, opt, max] shapes"
        )
    try:
        shapes = tuple(ShapeRange.from_lists(str(name), lists) for name, lists in shapes_data.items())
    except SettingsError as exc:
        raise PublishError(f"{source}: {exc}") from exc
    pre = _dig(data, "PreProcess", "transform_ops")
    post = data.get("PostProcess")
    if pre is not None and not isinstance(pre, list):
        raise PublishError(f"{source}: PreProcess.transform_ops must be a list")
    if post is not None and not isinstance(post, dict):
        raise PublishError(f"{source}: PostProcess must be a mapping")
    name = _dig(data, "Global", "model_name")
    return ExportConfig(
        model_name=str(name or ""),
        shapes=shapes,
        codec={"preprocess": list(pre or []), "postprocess": dict(post or {})},
        task=task_for_postprocess(_postprocess_name(post or {})),
    )


def _postprocess_name(post: dict[str, Any]) -> str | None:
    """``PostProcess.name``, or the one key of PaddleX's ``{Topk: {...}}`` layout."""
    if "name" in post:
        return str(post["name"])
    return str(next(iter(post))) if len(post) == 1 else None


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data
