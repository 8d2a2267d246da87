"""What a model's outputs mean: the task, which decides how two versions are compared.

A classification model is judged by its top-1 label, a text detector by the boxes it
finds, a text recogniser by the characters it reads, an OCR pipeline by both; anything
else by its tensors.
The manifest records the task (from a PaddleX export's ``inference.yml`` where there
is one); the codecs decode outputs by it and the scoring module compares by it.
"""

from __future__ import annotations

from enum import Enum


class Task(str, Enum):
    """The task of a published version (its manifest's ``task`` field)."""

    # Class scores over the last axis; compared by top-1 label agreement.
    CLASSIFICATION = "classification"
    # A text probability map decoded into boxes (DBPostProcess); compared by box F1 at IoU 0.5.
    TEXT_DETECTION = "text-detection"
    # Per-step character scores decoded into a string (CTCLabelDecode); compared by CER.
    TEXT_RECOGNITION = "text-recognition"
    # Any other tensors; compared by max-abs / relative error within a tolerance.
    GENERIC = "generic"
    # An OCR pipeline version (det, cls, rec): the lines read on each image, each with its
    # box; compared by the CER of each image's text (its lines, newline-joined) and box F1.
    OCR = "ocr"

    @classmethod
    def parse(cls, value: str) -> Task:
        """The task named ``value``, or a ValueError listing the known ones."""
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(t.value for t in cls)
            raise ValueError(f"unknown task {value!r}; known tasks: {known}") from None


# PaddleX's PostProcess names (inference.yml) and the task each implies.
_POSTPROCESS_TASKS = {
    "DBPostProcess": Task.TEXT_DETECTION,
    "CTCLabelDecode": Task.TEXT_RECOGNITION,
    "Topk": Task.CLASSIFICATION,
}


def task_for_postprocess(name: str | None) -> Task:
    """The task a PaddleX ``PostProcess.name`` implies; generic for any other or none."""
    return _POSTPROCESS_TASKS.get(name or "", Task.GENERIC)
