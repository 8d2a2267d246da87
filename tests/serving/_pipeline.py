"""OCR pipeline versions on the real exports, and the same chain run in-process.

Shared by the served-pipeline tests and ``bench/bench_ocr_pipeline.py``. Every stage
is published with oneDNN off (PP-OCRv5 det fails under it on the CPU build; the others
follow so served and in-process predictors are configured alike), and the in-process
chain opens each stage's files with that stage's manifest settings and one math thread,
as the served workers do, so both compute the same numbers.

The PP-OCRv4 stages and the v2 classifier are published with memory optimisation on
as well (:data:`SETTINGS`), as RapidOCR runs them: the v4 detector reads a 480x140 page
at 2528x736 (``limit_type: min``, 736), and without buffer reuse its predictor held every
intermediate tensor at once, 3-5 GB per copy (0.8 GB with it; outputs bit-identical).
Paddle refuses memory optimisation for the PP-OCRv5 PIR programs (``Not find
predictor_id ... memory_optimize_pass``), whose detector reads the page at 1024x384.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.codecs import _ocr

if TYPE_CHECKING:
    from workbench.codecs.ocr import TextLine
    from workbench.model.repository import ModelRepository

#: The pipelines :func:`publish_pipelines` writes: name:version -> {role: stage}.
PIPELINES = {
    "ocr:5.0.0": {"det": "ocr-det:5.0.0", "cls": "ocr-cls:2.0.0", "rec": "ocr-rec:5.0.0"},
    "ocr:4.0.0": {"det": "ocr-det:4.0.0", "cls": "ocr-cls:2.0.0", "rec": "ocr-rec:4.0.0"},
}

#: Each export family's runtime settings (see the module docstring).
SETTINGS = {"v5": "onednn=off", "v4": "onednn=off,memory_optim=on", "v2": "onednn=off,memory_optim=on"}


def publish_pipelines(root: Path, *, extra: Sequence[tuple[str, str, str]] = ()) -> ModelRepository:
    """PP-OCRv5 det/rec, PP-OCRv4 det/rec, v2 cls and :data:`PIPELINES` in ``root``;
    ``extra`` (model, version, export kind ``v5_rec``...) publishes more stage copies."""
    from workbench import ModelRepository
    from workbench.model.ocr_exports import write_legacy_configs
    from workbench.model.runtime_settings import RuntimeSettings
    from workbench.runtime.paddle import PaddleProbe

    exports = _ocr.require_exports()
    repo = ModelRepository(root)
    configs = write_legacy_configs(exports, root.parent / f"{root.name}-configs")
    probe = PaddleProbe()
    stages = [("ocr-det", "5.0.0", "v5_det"), ("ocr-rec", "5.0.0", "v5_rec"),
              ("ocr-det", "4.0.0", "v4_det"), ("ocr-rec", "4.0.0", "v4_rec"),
              ("ocr-cls", "2.0.0", "v2_cls"), *extra]
    for model, version, kind in stages:
        config = configs[kind[-3:]] if kind.startswith(("v4", "v2")) else None
        runtime = RuntimeSettings.parse(SETTINGS[kind[:2]])
        repo.publish(model, version, getattr(exports, kind), probe=probe, runtime=runtime, config=config)
    for ref, roles in PIPELINES.items():
        name, version = ref.split(":")
        repo.publish_pipeline(name, version, roles)
    return repo


def stage_predict(repo: ModelRepository, ref: str) -> Callable[[Any], Any]:
    """``predict(batch) -> first output`` of a published stage, in this process, opened
    with its manifest's runtime settings and one math thread."""
    from workbench.model import formats
    from workbench.runtime.device import Device
    from workbench.runtime.paddle import PaddlePredictor

    model, version = ref.split(":")
    manifest = repo.manifest(model, version)
    path = repo.path(model, version)
    predictor = PaddlePredictor.open(formats.detect(path), Device.parse("cpu"), cpu_threads=1,
                                     settings=manifest.runtime)
    name, first = manifest.inputs[0].name, manifest.outputs[0].name

    def predict(batch: Any) -> Any:
        return predictor.run({name: batch})[first]

    return predict


def in_process(repo: ModelRepository, ref: str) -> Callable[[Sequence[bytes]], list[list[TextLine]]]:
    """The pipeline ``ref``'s OcrChain over its stages' codecs and in-process predictors."""
    from workbench.codecs import Codec
    from workbench.codecs.ocr import OcrChain

    name, version = ref.split(":")
    stages = {s.role: s.ref for s in repo.pipeline(name, version).stages}
    codecs = {role: Codec(repo.manifest(*stage.split(":")).codec or {}) for role, stage in stages.items()}
    predicts = {role: stage_predict(repo, stage) for role, stage in stages.items()}
    chain = OcrChain(codecs["det"], codecs["rec"], codecs.get("cls"))

    def read(images: Sequence[bytes]) -> list[list[TextLine]]:
        return chain.run(images, predicts["det"], predicts["rec"], predicts.get("cls"))

    return read


def pages(count: int) -> tuple[list[bytes], list[list[str]]]:
    """``count`` rendered pages (PNG) of 2-3 lines in the DejaVu fonts, and their lines."""
    images, truths = [], []
    for i in range(count):
        lines = [_ocr.LINES[(i + k) % len(_ocr.LINES)] for k in range(2 + i % 2)]
        image, _ = _ocr.render_page(lines, _ocr.FONT_FILES[i % len(_ocr.FONT_FILES)], width=480)
        images.append(_ocr.png(image))
        truths.append(lines)
    return images, truths


def page_cer(truth: Sequence[str], found: Sequence[str]) -> float:
    """Character error rate of a page: its lines joined by newlines, read against the truth."""
    return _ocr.cer("\n".join(truth), "\n".join(t.strip() for t in found))
