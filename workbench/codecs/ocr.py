"""An OCR chain of codecs: detection -> crop -> optional orientation -> recognition.

:class:`OcrChain` runs an image through a text detector's codec, cuts each box out
(:mod:`workbench.codecs.crop`), turns crops the orientation classifier reads as upside
down (label ``180`` above ``cls_thresh``), and reads them with a recogniser's codec.
Lines read with a score below ``drop_score`` are left out; by default the recogniser's
codec says (its ``CTCLabelDecode`` ``drop_score``, 0.0 unless its config sets one).
The models are ``predict`` functions (batch in, first output out), so the same chain
runs in-process, over the hub, or against served versions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from workbench.codecs.crop import crop_text, reading_order
from workbench.codecs.image import DecodeImage
from workbench.errors import CodecError
from workbench.model.task import Task

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Sequence

    from workbench._types import Array
    from workbench.codecs.codec import Codec



@dataclass(frozen=True)
class StageCall:
    """What :meth:`OcrChain.steps` asks for: ``batches`` through the stage playing ``role``
    (``det``, ``cls`` or ``rec``), answered with each batch's first output, in order."""

    role: str
    batches: list[Array]


@dataclass(frozen=True)
class TextLine:
    """One line found in an image: its box (4, 2) in source pixels, text and scores."""

    box: Array
    text: str
    score: float
    box_score: float


class OcrChain:
    """Detection, crop, optional orientation and recognition codecs, in order."""

    def __init__(self, det: Codec, rec: Codec, cls: Codec | None = None, *, cls_thresh: float = 0.9,
                 drop_score: float | None = None, rec_batch: int = 6) -> None:
        if det.task is not Task.TEXT_DETECTION or rec.task is not Task.TEXT_RECOGNITION:
            raise CodecError(
                f"an OCR chain needs a text-detection then a text-recognition stage, not "
                f"{det.task.value} then {rec.task.value}"
            )
        if cls is not None and cls.task is not Task.CLASSIFICATION:
            raise CodecError(f"the orientation stage must be a classifier, not {cls.task.value}")
        self.det, self.rec, self.cls = det, rec, cls
        self.cls_thresh = cls_thresh
        if drop_score is None:
            drop_score = float(getattr(rec.postprocess, "drop_score", 0.0))
        self.drop_score = drop_score
        self.rec_batch = rec_batch
        self._decode = DecodeImage()

    def run(
        self, images: Sequence[bytes | Array], det: Callable[[Array], Array],
        rec: Callable[[Array], Array], cls: Callable[[Array], Array] | None = None,
    ) -> list[list[TextLine]]:
        """The lines of each image, in reading order."""
        predicts = {"det": det, "cls": cls, "rec": rec}
        steps = self.steps(images, classify=cls is not None)
        call = next(steps)
        while True:
            predict = predicts[call.role]
            assert predict is not None
            try:
                call = steps.send([predict(batch) for batch in call.batches])
            except StopIteration as done:
                return cast("list[list[TextLine]]", done.value)

    def steps(self, images: Sequence[bytes | Array], *, classify: bool = True
              ) -> Generator[StageCall, list[Array], list[list[TextLine]]]:
        """:meth:`run` as steps between model calls, for a caller that schedules the stages
        itself (the serving layer: each stage's batches go through that stage's queue).

        The generator yields a :class:`StageCall` (a stage's role and its input batches)
        and is sent back the first output of each batch, in order; its return value is
        the lines :meth:`run` returns. ``classify``: run the orientation stage (when the
        chain has one)."""
        decoded = [self._decode({"image": image})["image"] for image in images]
        found = yield from self._stage("det", self.det, decoded, 0)
        crops: list[Array] = []
        owners: list[tuple[int, Array, float]] = []
        for index, (image, boxes) in enumerate(zip(decoded, found, strict=True)):
            for i in reading_order(boxes.boxes):
                crops.append(crop_text(image, boxes.boxes[i]))
                owners.append((index, boxes.boxes[i], float(boxes.scores[i])))
        if crops and self.cls is not None and classify:
            classified = yield from self._stage("cls", self.cls, crops, self.rec_batch)
            for k, result in enumerate(classified):
                if "180" in result.labels[0] and result.scores[0] > self.cls_thresh:
                    crops[k] = np.ascontiguousarray(np.rot90(crops[k], 2))
        texts = (yield from self._stage("rec", self.rec, crops, self.rec_batch)) if crops else []
        lines: list[list[TextLine]] = [[] for _ in decoded]
        for (index, box, box_score), read in zip(owners, texts, strict=True):
            if read.score >= self.drop_score:
                lines[index].append(TextLine(box, read.text, read.score, box_score))
        return lines

    @staticmethod
    def _stage(role: str, codec: Codec, images: Sequence[bytes | Array], max_rows: int
               ) -> Generator[StageCall, list[Array], list[Any]]:
        prepared, batches = codec.plan(images, max_rows)
        outputs = yield StageCall(role, [batch for _, batch in batches])
        return codec.collect(prepared, batches, outputs)
