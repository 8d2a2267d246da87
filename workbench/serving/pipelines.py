"""Image in, lines out: a pipeline version served as one model.

A pipeline version (:mod:`workbench.model.pipeline`) is loaded by the hub like any
version (:class:`~workbench.runtime.pipeline.LoadedPipeline`: its det, optional cls and
rec stage versions loaded with their own runtime settings). A request sends it images
exactly as it sends them to a served detector or recogniser (:mod:`.images`): **one
``BYTES`` input**, one encoded image per element, JSON base64 with
``"parameters": {"content_type": "base64"}`` or Triton's binary extension, on the same
``/v2/models/{m}[/versions/{v}]/infer`` paths. Each image runs through the OCR chain of
the stages' codecs (:class:`~workbench.codecs.ocr.OcrChain`: detect, crop, turn crops the
classifier reads as upside down, recognise), the same chain a notebook runs in-process,
so both read the same lines.

The answer holds every line found, image after image, each image's lines in reading
order (top to bottom, then left to right):

- ``text`` (BYTES ``[K]``, UTF-8) and ``score`` (FP32 ``[K]``): what the recogniser read;
- ``boxes`` (FP32 ``[K, 4, 2]``): each line's corners in source pixels, clockwise from the
  top-left, and ``box_score`` (FP32 ``[K]``): the detector's score for it;
- ``image_index`` (INT32 ``[K]``): the image each line belongs to.

A request may name some of them in ``outputs``. Raw tensors are refused with 400 (a
pipeline has no tensor signature), as are bytes that are not an image. The chain runs on
the instance's inference threads, one image request at a time per thread; its stages'
batches are its own (one image to the detector, up to six crops to the recogniser), so
pipeline requests are not batched with each other.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.codecs.image import DecodeImage
from workbench.codecs.ocr import OcrChain
from workbench.errors import ImageDecodeError, WorkbenchError
from workbench.serving.batching import ClientGone, RunResult
from workbench.serving.images import build_codec
from workbench.serving.protocol import ProtocolError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from workbench._types import Array, Tensors
    from workbench.codecs.ocr import TextLine
    from workbench.runtime.pipeline import LoadedPipeline
    from workbench.serving.protocol import InferRequest
    from workbench.serving.service import Service

#: The outputs of a pipeline, in order, with their datatype and shape.
OUTPUTS: dict[str, tuple[str, list[int]]] = {
    "text": ("BYTES", [-1]),
    "score": ("FP32", [-1]),
    "boxes": ("FP32", [-1, 4, 2]),
    "box_score": ("FP32", [-1]),
    "image_index": ("INT32", [-1]),
}


def build_chain(loaded: LoadedPipeline) -> OcrChain:
    """The OCR chain of the pipeline's stage codecs (each from its stage's manifest)."""
    codecs = {}
    for role, stage in loaded.stages.items():
        codec = build_codec(stage)
        if codec is None:
            raise WorkbenchError(
                f"{loaded.model}:{loaded.version}: its {role} stage {stage.model}:{stage.version} "
                "has no codec (no inference.yml pre/post-processing), so it cannot read images"
            )
        codecs[role] = codec
    return OcrChain(codecs["det"], codecs["rec"], codecs.get("cls"))


def read_lines(chain: OcrChain, loaded: LoadedPipeline, images: Sequence[bytes]) -> list[list[TextLine]]:
    """Each image's lines through ``chain`` over the pipeline's loaded stages (blocking)."""
    decode = DecodeImage()
    decoded: list[Array] = []
    for index, image in enumerate(images):
        try:
            decoded.append(decode({"image": image})["image"])
        except ImageDecodeError as exc:
            raise ProtocolError(f"image {index}: {exc}") from exc
    det, rec = loaded.stage_predict("det"), loaded.stage_predict("rec")
    if det is None or rec is None:  # the hub unloaded it meanwhile; never while leased
        raise WorkbenchError(f"{loaded.model}:{loaded.version} is not loaded")
    return chain.run(decoded, det, rec, loaded.stage_predict("cls"))


def to_tensors(lines: Sequence[Sequence[TextLine]]) -> Tensors:
    """Lines as Open Inference Protocol output tensors (see the module docstring)."""
    flat = [(index, line) for index, found in enumerate(lines) for line in found]
    text = np.empty(len(flat), dtype=np.object_)
    text[:] = [line.text.encode("utf-8") for _, line in flat]
    boxes = [np.asarray(line.box, dtype=np.float32) for _, line in flat]
    return {
        "text": text,
        "score": np.array([line.score for _, line in flat], dtype=np.float32),
        "boxes": np.stack(boxes) if boxes else np.zeros((0, 4, 2), np.float32),
        "box_score": np.array([line.box_score for _, line in flat], dtype=np.float32),
        "image_index": np.array([index for index, _ in flat], dtype=np.int32),
    }


def metadata(loaded: LoadedPipeline) -> dict[str, Any]:
    """How to call the pipeline, for its model metadata (``parameters.pipeline``)."""
    return {
        "task": "ocr",
        "stages": [{"role": s.role, "model": s.model, "version": s.version, "task": s.task}
                   for s in loaded.pipeline.stages],
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1],
                    "parameters": {"content_type": "base64 in JSON; raw in binary"}}],
        "outputs": [{"name": name, "datatype": datatype, "shape": shape}
                    for name, (datatype, shape) in OUTPUTS.items()],
    }


class PipelineInference:
    """Runs image requests through the OCR chain of the pipeline version that answers them."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._chains: dict[int, tuple[LoadedPipeline, OcrChain]] = {}

    async def chain(self, loaded: LoadedPipeline) -> OcrChain:
        """The pipeline's chain (built once, off the loop)."""
        entry = self._chains.get(id(loaded))
        if entry is not None and entry[0] is loaded:
            return entry[1]
        chain = await asyncio.to_thread(build_chain, loaded)
        if len(self._chains) > 16:
            self._chains.clear()
        self._chains[id(loaded)] = (loaded, chain)
        return chain

    async def infer(self, loaded: LoadedPipeline, request: InferRequest, images: Sequence[bytes],
                    gone: Callable[[], bool] | None = None) -> RunResult:
        """The lines of the request's ``images`` (its :func:`~.images.encoded_images`)."""
        label = f"{loaded.model}:{loaded.version}"
        limit = self.service.settings.batching.max_batch_size
        if len(images) > limit:
            raise ProtocolError(
                f"the request has {len(images)} images; {label} accepts at most {limit} per request "
                "(max_batch_size)"
            )
        for want in request.outputs or ():
            if want.name not in OUTPUTS:
                raise ProtocolError(f"unknown output {want.name!r}; {label} answers with {list(OUTPUTS)}")
        chain = await self.chain(loaded)
        queued = time.perf_counter()

        def run() -> tuple[float, list[list[TextLine]]]:
            started = time.perf_counter()
            if gone is not None and gone():
                raise ClientGone(f"{label}: the client left before its request ran")
            return started, read_lines(chain, loaded, images)

        started, lines = await self.service.compute(run)
        seconds = time.perf_counter() - started
        loaded.counted()
        self.service.metrics.version(loaded.version_label).inference.observe(seconds)
        return RunResult(to_tensors(lines), queue_seconds=started - queued,
                         compute_seconds=seconds, batch_size=len(images))
