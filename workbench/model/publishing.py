"""Staging one model version: copying its files, reading its config, proving and tuning
its runtime settings, describing its outputs, and writing its manifest.

:class:`~workbench.model.repository.ModelRepository.publish` calls :func:`stage` on a
hidden staging directory and renames it into place afterwards. A PaddleX export's
``inference.yml`` (or a PaddleX-style config copied in as one) gives the signature,
the sample, the task and the codec (:mod:`workbench.model.paddlex`); the model runs
only through the :class:`~workbench.model.probe.ModelProbe` the caller passed in.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench._fs import write_atomic
from workbench.errors import PublishError, WorkbenchError
from workbench.model import formats, paddlex, tuning
from workbench.model.manifest import (
    MANIFEST_NAME,
    SAMPLE_NAME,
    UNHASHED,
    Manifest,
    TensorSpec,
    hash_files,
    write_sample,
)
from workbench.model.probe import measure
from workbench.model.runtime_settings import RuntimeSettings, RuntimeTrial
from workbench.model.task import Task

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from workbench._types import StrPath, TensorsIn
    from workbench.model.probe import ModelProbe
    from workbench.model.version import Version

AUTO = "auto"


@dataclass(frozen=True)
class Probing:
    """How publishing may run the model: the probe, the runtime settings, the config."""

    probe: ModelProbe | None
    runtime: RuntimeSettings | str | None
    config: StrPath | None
    progress: Callable[[int, int, RuntimeTrial | None], None] | None
    runs: int = tuning.RUNS


def _measure(
    probe: ModelProbe, files: formats.ModelFiles, sample: TensorsIn, settings: RuntimeSettings
) -> Any:
    try:
        return measure(probe, files, sample, settings)
    except WorkbenchError as exc:
        hint = "" if settings.onednn is False else "; try --runtime auto or --runtime onednn=off"
        raise PublishError(f"the model does not run with runtime settings {settings}: {exc}{hint}") from exc


def _copy_tree(source: Path, staging: Path) -> None:
    """Copy the content of ``source`` (not hidden files, manifest or signature)."""
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if any(part.startswith(".") for part in rel.parts) or rel.as_posix() in UNHASHED:
            continue
        if path.is_dir():
            (staging / rel).mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, staging / rel)


def stage(
    staging: Path,
    model: str,
    version: Version,
    source: Path,
    sample: TensorsIn | None,
    inputs: Iterable[TensorSpec] | None,
    outputs: Iterable[TensorSpec] | None,
    metrics: Mapping[str, float] | None,
    notes: str,
    probing: Probing,
) -> Manifest:
    """Fill ``staging`` with ``source``'s files, a sample and the manifest (written last).

    The signature comes from ``inputs``, else the sample, else the export's config;
    the sample from ``sample``, else the config's opt shapes; outputs from ``outputs``,
    else from running the sample through the probe with the version's settings.
    """
    _copy_tree(source, staging)
    export = _stage_config(staging, source, probing.config)
    files = formats.detect(staging)
    input_specs = tuple(inputs) if inputs is not None else ()
    if sample is None and export is not None and not input_specs:
        sample = export.sample()
    if sample is None and not input_specs:
        raise PublishError(
            f"{source} has neither a sample input nor an {paddlex.CONFIG_NAME}: give a sample "
            f"(--sample x.npz; recommended: it is used for warm-up and deep health checks), "
            f"the input signature, or a PaddleX-style config for this export (--config)"
        )
    sample_name: str | None = None
    if sample is not None:
        if not sample:
            raise PublishError("sample must name at least one input")
        write_sample(staging / SAMPLE_NAME, sample)
        sample_name = SAMPLE_NAME
    if not input_specs:
        if export is not None and sample is not None and set(sample) == {s.name for s in export.shapes}:
            input_specs = export.inputs()
        elif sample is not None:
            input_specs = tuple(TensorSpec.from_array(n, a) for n, a in sample.items())
    settings, trials = _settings(files, sample, export, probing)
    output_specs = tuple(outputs) if outputs is not None else ()
    # The model runs to describe its outputs, and to prove runtime settings the caller
    # asked for; given outputs and default settings, publishing runs nothing.
    asked = probing.runtime is not None
    if not output_specs or (asked and probing.probe is not None and sample is not None):
        described = _describe_outputs(files, sample, export, settings, probing.probe)
        output_specs = output_specs or described
    try:
        framework = "paddle " + dist_version("paddlepaddle")
    except PackageNotFoundError:
        framework = ""
    manifest = Manifest(
        model=model,
        version=str(version),
        format=files.format,
        files=hash_files(staging),
        inputs=input_specs,
        outputs=output_specs,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        sample=sample_name,
        metrics=dict(metrics or {}),
        notes=notes,
        framework=framework,
        task=export.task if export is not None else Task.GENERIC,
        codec=export.codec if export is not None else None,
        runtime=settings,
        runtime_trials=trials,
        config=paddlex.CONFIG_NAME if export is not None else None,
    )
    write_manifest(staging / MANIFEST_NAME, manifest.to_json())
    return manifest


def _stage_config(staging: Path, source: Path, config: StrPath | None) -> paddlex.ExportConfig | None:
    """Copy ``config`` in as ``inference.yml`` (refusing a second one) and read it."""
    target = staging / paddlex.CONFIG_NAME
    if config is not None:
        config = Path(config)
        if target.exists():
            raise PublishError(
                f"{source} already has an {paddlex.CONFIG_NAME}; publish it as is, without a config file"
            )
        if not config.is_file():
            raise PublishError(f"config file {config} does not exist")
        shutil.copyfile(config, target)
    return paddlex.read_config(target) if target.exists() else None


def _settings(
    files: formats.ModelFiles,
    sample: TensorsIn | None,
    export: paddlex.ExportConfig | None,
    probing: Probing,
) -> tuple[RuntimeSettings, tuple[RuntimeTrial, ...]]:
    runtime = probing.runtime
    shapes = export.shapes if export is not None else ()
    if runtime is None or isinstance(runtime, RuntimeSettings):
        settings = runtime or RuntimeSettings()
        if shapes and not settings.trt_shapes:
            settings = replace(settings, trt_shapes=shapes)
        return settings, ()
    if runtime != AUTO:
        raise PublishError(f"runtime must be settings or {AUTO!r}, not {runtime!r}")
    if probing.probe is None or sample is None:
        raise PublishError("runtime settings are tuned by running the sample: give a probe and a sample")
    result = tuning.tune(
        probing.probe, files, sample,
        base=RuntimeSettings(trt_shapes=shapes), runs=probing.runs, progress=probing.progress,
    )
    return result.chosen, result.trials


def _describe_outputs(
    files: formats.ModelFiles,
    sample: TensorsIn | None,
    export: paddlex.ExportConfig | None,
    settings: RuntimeSettings,
    probe: ModelProbe | None,
) -> tuple[TensorSpec, ...]:
    """Run the sample (and the smallest export shape) once; dimensions that differ are -1."""
    if sample is None:
        raise PublishError("give a sample input or the output signature")
    if probe is None:
        raise PublishError(
            "describing the outputs runs the model: give the output signature or a probe "
            "(workbench.runtime.paddle.PaddleProbe)"
        )
    outputs = _measure(probe, files, sample, settings).outputs
    specs = {name: TensorSpec.from_array(name, array) for name, array in outputs.items()}
    if export is not None and set(sample) == {s.name for s in export.shapes}:
        smaller = _measure(probe, files, export.sample("min"), settings).outputs
        for name, array in smaller.items():
            if name in specs and array.ndim == len(specs[name].shape):
                pairs = zip(specs[name].shape, array.shape, strict=True)
                dims = tuple(d if d == s else -1 for d, s in pairs)
                specs[name] = replace(specs[name], shape=dims)
    return tuple(specs.values())


def write_manifest(path: Path, text: str) -> None:
    """Write a manifest or aliases file atomically, readable like a plain copy (0644 less umask)."""
    write_atomic(path, text, mode=0o644 & ~umask())


def umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask is racy)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
