"""opencv and pyclipper, imported on first use (the ``ocr`` extra brings them).

Building a codec costs nothing; the first image it decodes imports opencv, so
``import workbench`` and ``workbench --help`` never load it.
"""

from __future__ import annotations

import functools
from typing import Any

from workbench.errors import MissingDependencyError


@functools.cache
def cv2() -> Any:
    """The ``cv2`` module (opencv-python-headless)."""
    try:
        import cv2 as module
    except ImportError as exc:
        raise MissingDependencyError("opencv-python-headless", "ocr") from exc
    return module


@functools.cache
def pyclipper() -> Any:
    """The ``pyclipper`` module (polygon offsetting for DB text boxes)."""
    try:
        import pyclipper as module
    except ImportError as exc:
        raise MissingDependencyError("pyclipper", "ocr") from exc
    return module
