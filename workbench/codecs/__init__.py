"""Pre- and post-processing read from a PaddleX export's ``inference.yml``.

A :class:`Codec` is built from a manifest's ``codec`` dict (or an export directory) and
turns images into model inputs and model outputs into task results; see
:mod:`workbench.codecs.codec`. The image operations live in :mod:`.image`, the
post-processors in :mod:`.det` (text boxes), :mod:`.rec` (text) and :mod:`.cls`
(labels); :mod:`.tensors` writes results as Open Inference Protocol outputs.
opencv and pyclipper (the ``ocr`` extra) are imported on first use.
"""

from __future__ import annotations

from workbench.codecs.cls import Classified
from workbench.codecs.codec import Codec, Prepared, read_spec
from workbench.codecs.det import TextBoxes
from workbench.codecs.rec import RecognizedText

__all__ = ["Classified", "Codec", "Prepared", "RecognizedText", "TextBoxes", "read_spec"]
